"""TFLite Micro: whether a .tflite runs on a microcontroller, how much tensor arena it needs, and its C build.

Everything here is measured with TFLite Micro's own Python interpreter (the `tflite-micro` package), never assumed:
`check` reads the flatbuffer op by op, then loads the file in that interpreter, invokes it once and reads the arena
the interpreter's recording allocator used. `micro_predict` runs a batch through it, `c_sources` writes the
`alignas(16) const unsigned char g_<name>_model_data[]` source and header a firmware build compiles, and
`lut_compress` turns clustered weights into TFLite Micro's look-up-table encoding, which only TFLite Micro reads.

The arena figure is the reference kernels' on a 64-bit host. Optimized kernels (CMSIS-NN, ESP-NN) may ask for
scratch buffers of their own, and a 32-bit target's pointers are smaller: `arena_with_margin` adds room for the
first. Nothing in this figure depends on the host CPU's speed or instruction set.

tflite_micro and numpy are imported inside the functions; importing this module loads neither TensorFlow nor them.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..console import captured as capture_output
from ..errors import ConfigError, InputError, first_line

# TFLite Micro's MicroMutableOpResolver: builtin operator -> the method that registers its kernel. Read from
# tensorflow/lite/micro/micro_mutable_op_resolver.h (2026-08). An op missing here has no TFLite Micro kernel.
RESOLVER: dict[str, str] = {
    "ABS": "AddAbs",
    "ADD": "AddAdd",
    "ADD_N": "AddAddN",
    "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo",
    "CALL_ONCE": "AddCallOnce",
    "CAST": "AddCast",
    "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "COS": "AddCos",
    "CUMSUM": "AddCumSum",
    "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "DIV": "AddDiv",
    "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup",
    "ELU": "AddElu",
    "EQUAL": "AddEqual",
    "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill",
    "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater",
    "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf",
    "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu",
    "LESS": "AddLess",
    "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog",
    "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic",
    "LOG_SOFTMAX": "AddLogSoftmax",
    "MAXIMUM": "AddMaximum",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MIRROR_PAD": "AddMirrorPad",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MUL": "AddMul",
    "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack",
    "PAD": "AddPad",
    "PADV2": "AddPadV2",
    "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize",
    "READ_VARIABLE": "AddReadVariable",
    "REDUCE_ALL": "AddReduceAll",
    "REDUCE_MAX": "AddReduceMax",
    "REDUCE_MIN": "AddReduceMin",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "REVERSE_V2": "AddReverseV2",
    "ROUND": "AddRound",
    "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2",
    "SHAPE": "AddShape",
    "SIN": "AddSin",
    "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV",
    "SQUEEZE": "AddSqueeze",
    "SQRT": "AddSqrt",
    "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "SUM": "AddSum",
    "SVDF": "AddSvdf",
    "TANH": "AddTanh",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "TRANSPOSE": "AddTranspose",
    "UNPACK": "AddUnpack",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "VAR_HANDLE": "AddVarHandle",
    "WHILE": "AddWhile",
    "ZEROS_LIKE": "AddZerosLike",
}
# Custom ops TFLite Micro registers by name; TFLM_DECODE is what LUT compression inserts.
CUSTOM_RESOLVER: dict[str, str] = {
    "TFLM_DECODE": "AddDecode",
    "TFLite_Detection_PostProcess": "AddDetectionPostprocess",
    "CIRCULAR_BUFFER": "AddCircularBuffer",
}

HYBRID_REASON = "dynamic-range (hybrid) models do not run on TFLite Micro"
FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"})
INTEGER_WEIGHTS = frozenset({"INT8", "INT4", "UINT8", "INT16"})
# Ops whose job is to cross between float and integer at the graph's edge; a full-integer graph may have them.
EDGE_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})

# The arena the probe offers: far above any microcontroller's RAM, so that a model that fails with it fails for a
# reason other than its arena, and cheap on the host (the pages are never touched beyond what is used).
ARENA_PROBE_BYTES = 64 << 20
# Room on top of the measured arena. The measurement uses TFLite Micro's reference kernels; optimized ones
# (CMSIS-NN, ESP-NN, Xtensa) request scratch buffers of their own (CMSIS-NN's convolutions: up to one im2col row
# block), which the reference kernels do not. A quarter more covers that on the models here; the host's 64-bit
# pointers already make the interpreter's own records larger than on a 32-bit target.
ARENA_MARGIN = 1.25
ARENA_ALIGNMENT = 16  # TFLite Micro aligns the arena and its buffers to 16 bytes
MAX_LUT_BITS = 4  # LUT compression applies to weights with at most 16 values per channel: clustered ones

_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")


@dataclass(frozen=True)
class MicroCheck:
    """Whether TFLite Micro runs a .tflite, and what it needs there.

    `full_integer` is True when every op computes in integers: each tensor an op other than QUANTIZE and
    DEQUANTIZE reads or writes (weights and biases included) has an integer type (int8 or int16 activations, int8
    or int4 weights, int32/int64 biases, integer token ids). Float tensors may only enter through a QUANTIZE at the
    input or leave through a DEQUANTIZE at the output. That is what a microcontroller without an FPU, or an int8
    NPU, runs at full speed.
    """

    runs: bool
    reason: str | None  # why it does not run; None when it does
    full_integer: bool
    ops: tuple[str, ...]  # MicroMutableOpResolver methods the model needs (`AddConv2D`), sorted
    arena_bytes: int | None  # measured by the TFLite Micro interpreter; None when it does not run

    @property
    def arena_with_margin(self) -> int | None:
        return None if self.arena_bytes is None else arena_with_margin(self.arena_bytes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ops"] = list(self.ops)
        data["arena_with_margin"] = self.arena_with_margin
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MicroCheck:
        return cls(
            runs=bool(data["runs"]),
            reason=data.get("reason"),
            full_integer=bool(data.get("full_integer")),
            ops=tuple(data.get("ops") or ()),
            arena_bytes=data.get("arena_bytes"),
        )


def arena_with_margin(measured: int) -> int:
    """The arena to reserve on the device: `measured` x ARENA_MARGIN, rounded up to ARENA_ALIGNMENT bytes."""
    return math.ceil(measured * ARENA_MARGIN / ARENA_ALIGNMENT) * ARENA_ALIGNMENT


def check(path: Path) -> MicroCheck:
    """Whether TFLite Micro runs the .tflite at `path`, op by op and then for real.

    First the flatbuffer: every op must have a TFLite Micro kernel (else the op is named), and no op may mix float
    activations with integer weights (dynamic range, which TFLite Micro refuses). Then the file is loaded in
    TFLite Micro's interpreter with a generous arena, invoked once on zeros, and the arena its recording allocator
    used is read. The interpreter's own message becomes the reason when it refuses the file.

    Raises:
        InputError: `path` is not a readable .tflite file.
    """
    from ..export.tflite_graph import read_graph

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} is not a file")
    try:
        graph = read_graph(path)
    except Exception as error:
        raise InputError(f"{path.name} is not a readable .tflite file: {first_line(error)}") from error
    full_integer = _full_integer(graph)
    ops, unknown = _resolver_entries(graph)
    if unknown:
        return MicroCheck(False, f"TFLite Micro has no kernel for {', '.join(unknown)}", full_integer, ops, None)
    static = _static_refusal(graph)
    if static:
        return MicroCheck(False, static, full_integer, ops, None)
    try:
        arena = measure_arena(path)
    except _Refused as refused:
        return MicroCheck(False, str(refused), full_integer, ops, None)
    return MicroCheck(True, None, full_integer, ops, arena)


def measure_arena(path: Path, *, arena_size: int = ARENA_PROBE_BYTES) -> int:
    """The tensor arena, in bytes, that TFLite Micro's interpreter used to load `path` and invoke it once.

    Raises:
        StageError: TFLite Micro cannot load or run the file (its message, in one line).
    """
    from ..errors import StageError

    try:
        interpreter = _interpreter(Path(path), arena_size)
        _invoke_on_zeros(interpreter, len(_graph_inputs(Path(path))))
        with capture_output() as captured:
            interpreter.print_allocations()
    except _Refused as refused:
        raise StageError(str(refused)) from None
    match = _ARENA_TOTAL.search(captured.text)
    if match is None:
        raise StageError(f"TFLite Micro printed no arena total for {Path(path).name}")
    return int(match.group(1))


def micro_predict(path: Path, x: Any, *, output: int = 0) -> Any:
    """Run the samples `x` (of the first input) one by one through TFLite Micro's interpreter; float outputs of
    output `output`, one row per sample.

    Float samples are quantized with the input tensor's scale and zero point when the model takes integers, and
    integer outputs are dequantized with theirs, so the result compares with LiteRT's (`runtime.litert`).

    Raises:
        StageError: TFLite Micro cannot load or run the file.
    """
    import numpy as np

    from ..edge.tensors import dequantize, quantize
    from ..errors import StageError

    path = Path(path)
    try:
        interpreter = _interpreter(path, ARENA_PROBE_BYTES)
    except _Refused as refused:
        raise StageError(str(refused)) from None
    source = interpreter.get_input_details(0)
    target = interpreter.get_output_details(output)
    in_dtype = np.dtype(source["dtype"])
    in_scale, in_zero = _quantization(source)
    out_scale, out_zero = _quantization(target)
    shape = tuple(int(d) for d in source["shape"])
    rows = []
    for sample in np.asarray(x):
        interpreter.set_input(quantize(sample.reshape(shape), in_dtype, in_scale, in_zero), 0)
        try:
            with capture_output() as captured:
                interpreter.invoke()
        except RuntimeError as error:
            raise StageError(f"TFLite Micro failed to run {path.name}: {_one_line(captured.text, error)}") from None
        rows.append(dequantize(np.asarray(interpreter.get_output(output)), out_scale, out_zero).reshape(-1))
    return np.stack(rows) if rows else np.zeros((0,), np.float32)


def quantization_of(path: Path) -> tuple[tuple[float, int] | None, tuple[float, int] | None]:
    """The (scale, zero point) of the first input and first output of `path` in TFLite Micro, or None for a
    tensor that is not quantized (float)."""
    try:
        interpreter = _interpreter(Path(path), ARENA_PROBE_BYTES)
    except _Refused as refused:
        from ..errors import StageError

        raise StageError(str(refused)) from None
    pairs = []
    for details in (interpreter.get_input_details(0), interpreter.get_output_details(0)):
        scale, zero = _quantization(details)
        pairs.append((scale, zero) if scale else None)
    return pairs[0], pairs[1]


def c_sources(
    model: bytes,
    *,
    symbol: str,
    input_quant: tuple[float, int] | None,
    output_quant: tuple[float, int] | None,
    labels: list[str] | None,
    arena_bytes: int,
    ops: tuple[str, ...],
) -> tuple[str, str]:
    """A C11 header and source that hold the model for a TFLite Micro firmware build.

    C, not C++: every microcontroller toolchain compiles it, and the header's `extern "C"` lets TFLite Micro's C++
    application include it. (A `const` at file scope has external linkage in C, internal in C++.) The source
    compiles with `cc -std=c11 -c -Wall -Wextra -Werror -pedantic`.

    Args:
        model: the .tflite bytes.
        symbol: a C identifier; the data is `g_<symbol>_model_data`.
        input_quant, output_quant: (scale, zero point) of the input and output tensors, None when float (written
            as scale 0, TFLite's "not quantized").
        labels: class names, in output order; None for none.
        arena_bytes: the tensor arena to reserve (use `arena_with_margin` of the measured one).
        ops: the MicroMutableOpResolver methods the model needs (`MicroCheck.ops`).

    Returns:
        (header text, source text); the source includes the header as `<symbol>_model_data.h`.

    Raises:
        ConfigError: `symbol` is not a C identifier, or `arena_bytes` is not positive.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", symbol or ""):
        raise ConfigError(
            f"C symbol {symbol!r} is not a C identifier (letters, digits, '_'; not starting with a digit)"
        )
    if arena_bytes <= 0:
        raise ConfigError(f"arena size must be positive, got {arena_bytes}")
    labels = list(labels or [])
    camel = "".join(part[:1].upper() + part[1:] for part in symbol.split("_") if part) or "Model"
    guard = f"EFFKIT_{symbol.upper()}_MODEL_DATA_H_"
    prefix = f"g_{symbol}"
    resolver = [f"//   tflite::MicroMutableOpResolver<{len(ops)}> resolver;"]
    resolver += [f"//   resolver.{op}();" for op in ops]
    add_ops = " ".join(f"(resolver).{op}();" for op in ops)
    header = "\n".join(
        [
            f"// The {symbol} model for TFLite Micro, written by effkit. Do not edit.",
            "//",
            f"// Its ops ({len(ops)}), registered with:",
            *resolver,
            f"// or {symbol.upper()}_ADD_OPS(resolver). Reserve k{camel}TensorArenaSize bytes of tensor arena,",
            "// aligned to 16: the arena TFLite Micro's interpreter measured, with effkit's margin.",
            "// A scale of 0 means the tensor is float, not quantized: real = scale * (q - zero_point).",
            f"#ifndef {guard}",
            f"#define {guard}",
            "",
            "#ifdef __cplusplus",
            'extern "C" {',
            "#endif",
            "",
            "enum {",
            f"  k{camel}TensorArenaSize = {int(arena_bytes)},",
            f"  k{camel}OpCount = {len(ops)},",
            f"  k{camel}LabelCount = {len(labels)}",
            "};",
            "",
            f"#define {symbol.upper()}_ADD_OPS(resolver) \\",
            f"  do {{ {add_ops} }} while (0)",
            "",
            f"extern const unsigned char {prefix}_model_data[];",
            f"extern const unsigned int {prefix}_model_data_len;",
            f"extern const float {prefix}_input_scale;",
            f"extern const int {prefix}_input_zero_point;",
            f"extern const float {prefix}_output_scale;",
            f"extern const int {prefix}_output_zero_point;",
            f"extern const char *const {prefix}_labels[];  // k{camel}LabelCount names, then NULL",
            f"extern const unsigned int {prefix}_label_count;",
            "",
            "#ifdef __cplusplus",
            "}",
            "#endif",
            "",
            f"#endif  // {guard}",
            "",
        ]
    )
    in_scale, in_zero = input_quant or (0.0, 0)
    out_scale, out_zero = output_quant or (0.0, 0)
    data_lines = [
        "  " + " ".join(f"0x{byte:02x}," for byte in model[start : start + 12]) for start in range(0, len(model), 12)
    ]
    source = "\n".join(
        [
            f"// The {symbol} model for TFLite Micro, written by effkit. Do not edit.",
            f'#include "{symbol}_model_data.h"',
            "",
            "#include <stdalign.h>",
            "#include <stddef.h>",
            "",
            f"alignas(16) const unsigned char {prefix}_model_data[] = {{",
            *data_lines,
            "};",
            f"const unsigned int {prefix}_model_data_len = {len(model)};",
            "",
            f"const float {prefix}_input_scale = {_c_float(in_scale)};",
            f"const int {prefix}_input_zero_point = {int(in_zero)};",
            f"const float {prefix}_output_scale = {_c_float(out_scale)};",
            f"const int {prefix}_output_zero_point = {int(out_zero)};",
            "",
            f"const char *const {prefix}_labels[] = {{",
            *(f"  {_c_string(label)}," for label in labels),
            "  NULL,",
            "};",
            f"const unsigned int {prefix}_label_count = {len(labels)};",
            "",
        ]
    )
    return header, source


def lut_compress(path: Path, out: Path) -> dict[str, Any] | None:
    """TFLite Micro's look-up-table compression of the clustered weights of a full-integer .tflite.

    Every weight tensor (an op's constant input of two or more dimensions) with at most 2**MAX_LUT_BITS distinct
    values in each quantization channel, whose indices and tables take fewer bytes than it does, is rewritten as
    bit-packed indices into per-channel value tables; TFLite Micro decodes them at run time (a DECODE op before
    each, decoded into the arena). The file is then loaded and invoked in TFLite Micro.

    Returns:
        None when no tensor qualifies; else {"path", "flash_bytes" (the compressed file), "raw_bytes" (the input
        file), "tensors" (names), "index_bits" (the widest), "runs", "reason", "arena_bytes" (decoded weights
        included)}.

    Raises:
        InputError: `path` is not a readable .tflite file.
    """
    import numpy as np
    from ai_edge_litert.tools import flatbuffer_utils

    path, out = Path(path), Path(out)
    try:
        model = flatbuffer_utils.read_model(str(path))
    except Exception as error:
        raise InputError(f"{path.name} is not a readable .tflite file: {first_line(error)}") from error
    subgraph = model.subgraphs[0]
    weights = sorted(
        {index for op in subgraph.operators or () for index in (op.inputs if op.inputs is not None else ())}
    )
    chosen: list[tuple[int, int, int | None]] = []  # tensor, index bits, channel axis (None: per tensor)
    names: list[str] = []
    for index in weights:
        if index < 0:
            continue
        tensor = subgraph.tensors[index]
        data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
        shape = tuple(int(d) for d in tensor.shape) if tensor.shape is not None else ()
        if data is None or len(data) == 0 or len(shape) < 2 or tensor.type != _INT8:
            continue
        values = np.frombuffer(bytes(data), dtype=np.int8).reshape(shape)
        quantization = tensor.quantization
        scales = quantization.scale if quantization is not None and quantization.scale is not None else ()
        axis = int(quantization.quantizedDimension) if len(scales) > 1 else None
        if axis is not None and axis not in (0, len(shape) - 1):
            continue  # the kernels decode per-channel tables along the first or last axis only
        slices = [values] if axis is None else list(np.moveaxis(values, axis, 0))
        distinct = max(len(np.unique(part)) for part in slices)
        bits = max(1, math.ceil(math.log2(distinct))) if distinct > 1 else 1
        encoded = math.ceil(values.size * bits / 8) + len(slices) * 2**bits
        if bits > MAX_LUT_BITS or encoded >= values.size:
            continue
        chosen.append((index, bits, axis))
        names.append(_text(tensor.name))
    if not chosen:
        return None
    from tflite_micro import compression
    from tflite_micro.tensorflow.lite.micro.compression import spec

    builder = compression.SpecBuilder()
    for index, bits, axis in chosen:
        mode = spec.PerTensor() if axis is None else spec.PerChannel(axis=axis)
        builder.add_tensor(subgraph=0, tensor=index).with_lut(index_bitwidth=bits, mode=mode)
    with capture_output():
        compressed = bytes(compression.compress(path.read_bytes(), builder.build()))
    from ..files import write_bytes

    write_bytes(out, compressed)
    result = check(out)
    return {
        "path": str(out),
        "flash_bytes": len(compressed),
        "raw_bytes": path.stat().st_size,
        "tensors": names,
        "index_bits": max(bits for _, bits, _ in chosen),
        "runs": result.runs,
        "reason": result.reason,
        "arena_bytes": result.arena_bytes,
    }


_INT8 = 9  # schema TensorType.INT8


class _Refused(Exception):
    """TFLite Micro refused to load or run a file; the message is its own, in one line."""


def _interpreter(path: Path, arena_size: int):
    """TFLite Micro's interpreter for `path`, tensors allocated; its own message in `_Refused` when it refuses."""
    from tflite_micro import runtime

    with capture_output() as captured:
        try:
            return runtime.Interpreter.from_file(str(path), arena_size=arena_size)
        except (RuntimeError, ValueError) as error:
            failure = error
    raise _Refused(f"TFLite Micro cannot load {path.name}: {_one_line(captured.text, failure)}")


def _invoke_on_zeros(interpreter: Any, inputs: int) -> None:
    import numpy as np

    for index in range(max(inputs, 1)):
        details = interpreter.get_input_details(index)
        interpreter.set_input(np.zeros(tuple(int(d) for d in details["shape"]), dtype=details["dtype"]), index)
    with capture_output() as captured:
        try:
            interpreter.invoke()
            return
        except RuntimeError as error:
            failure = error
    raise _Refused(f"TFLite Micro failed to run it: {_one_line(captured.text, failure)}")


def _one_line(printed: str, error: BaseException) -> str:
    """TFLite Micro's printed diagnosis (the lines before its exception) and the exception, as one line."""
    lines = [line.strip() for line in printed.splitlines() if line.strip()]
    lines = [re.sub(r"^\S+\.cc(:\d+)?\s+", "", line) for line in lines]  # drop the source-file prefix
    text = "; ".join([*lines[:3], first_line(error)])
    return text if len(text) <= 300 else text[:297] + "..."


def _graph_inputs(path: Path) -> tuple[int, ...]:
    from ..export.tflite_graph import read_graph

    return read_graph(path).inputs


def _quantization(details: dict[str, Any]) -> tuple[float, int]:
    parameters = details.get("quantization_parameters") or {}
    scales, zeros = parameters.get("scales", ()), parameters.get("zero_points", ())
    if len(scales) == 0:
        return 0.0, 0
    return float(scales[0]), int(zeros[0]) if len(zeros) else 0


def _resolver_entries(graph) -> tuple[tuple[str, ...], list[str]]:
    """The resolver methods the graph's ops need, sorted, and the ops TFLite Micro has no kernel for."""
    entries, unknown = set(), []
    for op in graph.ops:
        method = CUSTOM_RESOLVER.get(op.custom_code) if op.op == "CUSTOM" else RESOLVER.get(op.op)
        if method is None:
            name = f"custom op {op.custom_code}" if op.op == "CUSTOM" else op.op
            if name not in unknown:
                unknown.append(name)
        else:
            entries.add(method)
    return tuple(sorted(entries)), unknown


def _static_refusal(graph) -> str | None:
    """A reason TFLite Micro will refuse the graph that the flatbuffer already shows, or None."""
    tensors = graph.tensors
    for op in graph.ops:
        inputs = [tensors[i] for i in op.inputs if i >= 0]
        if op.op == "DEQUANTIZE" and any(t.type == "FLOAT16" for t in inputs):
            return "float16 weights do not run on TFLite Micro (it dequantizes int8 and int16 only)"
        if op.op in EDGE_OPS:
            continue
        float_activation = any(t.type in FLOAT_TYPES and not t.constant for t in inputs)
        integer_weight = any(t.type in INTEGER_WEIGHTS and t.constant and len(t.shape) >= 2 for t in inputs)
        if float_activation and integer_weight:
            return f"{HYBRID_REASON} ({op.op} takes float activations with integer weights)"
    return None


def _full_integer(graph) -> bool:
    tensors = graph.tensors
    for op in graph.ops:
        if op.op in EDGE_OPS:
            continue
        touched = [tensors[i] for i in (*op.inputs, *op.outputs) if i >= 0]
        if any(t.type in FLOAT_TYPES for t in touched):
            return False
    return bool(graph.ops)


def _c_float(value: float) -> str:
    """A float literal that reads back to the same float32 (9 significant digits)."""
    return f"{float(value):.9e}f"


def _c_string(text: str) -> str:
    """A C string literal of `text` in UTF-8: quotes, backslashes, '?' (trigraphs) and every byte outside
    printable ASCII escaped in octal, which never runs into the next character as hex escapes can."""
    out = []
    for byte in str(text).encode("utf-8"):
        char = chr(byte)
        if char in '"\\?':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")
