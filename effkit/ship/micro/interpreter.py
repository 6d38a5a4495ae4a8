"""What TFLite Micro's own interpreter says of a .tflite: whether it runs (op by op, then loaded and invoked), the
tensor arena it needs, and its predictions. The arena figure is the reference kernels' on a 64-bit host:
`arena_with_margin` adds room for optimized kernels' scratch buffers. Nothing here depends on the host CPU."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...console import captured as capture_output
from ...errors import InputError, first_line

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
    from ...export.tflite_graph import read_graph

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
    from ...errors import StageError

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

    from ...edge.tensors import dequantize, quantize
    from ...errors import StageError

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
    from ...export.tflite_graph import read_graph

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
