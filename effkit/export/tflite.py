"""Keras -> float32 .tflite with the TFLite converter, and the converter setup its PTQ modes share."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import parse_m_by_n
from ..console import silenced
from ..errors import StageError, first_line
from ..files import write_bytes
from ..load import keras_compat
from ..types import Step

log = logging.getLogger("effkit")


def converter_for(source: Any) -> Any:
    """A TFLiteConverter for a Keras model, or for a SavedModel folder made by `serving_saved_model`.

    Never from_concrete_functions: it drops weights (docs/pitfalls.md).
    """
    tf = keras_compat.tensorflow()
    if isinstance(source, Path):
        return tf.lite.TFLiteConverter.from_saved_model(str(source), signature_keys=["serving_default"])
    return tf.lite.TFLiteConverter.from_keras_model(source)


def serving_saved_model(model: Any, directory: Path, *, names: list[str] | None = None) -> Path:
    """Save just what inference needs (one serving function and the weights) as a SavedModel.

    `from_keras_model` saves the whole Keras model as a SavedModel on every conversion, tracing every layer:
    about 1 s of each 1.1 s conversion here. Saving once per model and converting every quantization mode from
    the folder takes 0.4 s plus 0.4 s per mode. The signature keeps the Keras output names, as from_keras_model's
    does, so runtimes can tell a multi-output model's heads apart; `names` gives them other names, in output order
    (a QAT model's wrappers rename its output layers).
    """
    from ..load.classifier import output_names

    tf = keras_compat.tensorflow()
    keras_names = output_names(model)
    names = list(names or keras_names)
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), model.inputs[0].dtype, name="input")

    @tf.function(input_signature=[spec])
    def serve(inputs):
        outputs = model(inputs, training=False)
        if isinstance(outputs, dict):
            return {name: outputs[keras_name] for name, keras_name in zip(names, keras_names, strict=True)}
        if isinstance(outputs, (list, tuple)):
            return dict(zip(names, outputs, strict=True))
        return {names[0]: outputs}

    module = tf.Module()
    module.weights = keras_compat.tf_variables(model)  # the function's variables must be tracked to be saved
    module.serve = serve
    with silenced():
        tf.saved_model.save(module, str(directory), signatures={"serving_default": serve.get_concrete_function()})
    return Path(directory)


def convert(converter: Any, path: Path, *, what: str = "TFLite conversion") -> Path:
    """Run a configured converter and write its flatbuffer atomically."""
    try:
        with silenced(), _gc_frozen():
            flatbuffer = converter.convert()
    except Exception as error:  # the converter raises ConverterError, RuntimeError, ValueError...
        raise StageError(f"{what} failed: {first_line(error)}") from error
    return write_bytes(path, flatbuffer)


def export_tflite(model: Any, path: Path) -> Path:
    """Float32 .tflite of a Keras model (or of its `serving_saved_model` folder).

    A Keras model goes through a serving SavedModel in a scratch folder, as the pipeline's recipes convert it: the
    same bytes from either path, in half the time of `from_keras_model` (0.45 against 0.9 s for the tests' tiny CNN
    here). A model that will not save that way converts from the Keras model.
    """
    if isinstance(model, Path):
        return convert(converter_for(model), path)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="effkit-serving-") as scratch:
        try:
            source = serving_saved_model(model, Path(scratch) / "serving")
        except Exception:  # some models only convert through from_keras_model (see RecipeInputs.converter_source)
            source = model
        return convert(converter_for(source), path)


@dataclass(frozen=True)
class SparseEncoding:
    """The converter's sparse tensor encoding tried on a float32 .tflite, and whether its file was kept."""

    kept: bool
    dense_bytes: tuple[int, int]  # raw, gzip -9
    sparse_bytes: tuple[int, int]
    densify_ops: int  # DENSIFY ops in the sparse file: each rebuilds a dense tensor in memory at load
    reason: str

    def step_params(self) -> dict[str, Any]:
        return {
            "sparse_encoding": {
                "kept": self.kept,
                "dense_bytes": list(self.dense_bytes),
                "sparse_bytes": list(self.sparse_bytes),
                "densify_ops": self.densify_ops,
                "reason": self.reason,
            }
        }


def export_sparse_tflite(model: Any, path: Path, *, dense: Path) -> SparseEncoding:
    """Float32 .tflite with the converter's sparse tensor encoding (`Optimize.EXPERIMENTAL_SPARSITY`) at `path`
    when that file runs in LiteRT and is smaller, raw and gzipped, than the dense one; the dense file otherwise.

    Float32 only, as measured on digits_cnn pruned to 2:4: the float32 file shrank (raw -27%, gzip -6%) and ran at
    the same speed under XNNPACK, while dynamic-range and int8 files grew (raw +31%, gzip +12%) and XNNPACK refused
    to prepare them, and the LiteRT quantizer does not quantize sparse tensors. So the dense float32 file is also
    written, at `dense`: it is what quantizers must start from.
    """
    from ..runtime.measure import file_sizes

    tf = keras_compat.tensorflow()
    export_tflite(model, dense)
    converter = converter_for(model)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    convert(converter, path, what="TFLite sparse encoding")
    dense_bytes, sparse_bytes = file_sizes(dense), file_sizes(path)
    densify = 0
    try:
        validate_tflite(path)
        densify = sum(op["op_name"] == "DENSIFY" for op in _ops(path))
        smaller = sparse_bytes[0] < dense_bytes[0] and sparse_bytes[1] < dense_bytes[1]
        if densify == 0:
            reason = "the converter encoded no tensor as sparse"
        elif smaller:
            reason = f"{densify} tensor(s) encoded sparse: smaller raw and gzipped; runs in LiteRT"
        else:
            reason = "the sparse file is not smaller, raw and gzipped"
        kept = densify > 0 and smaller
    except StageError as error:
        kept, reason = False, f"the sparse file does not run in LiteRT: {first_line(error)}"
    if not kept:
        write_bytes(path, dense.read_bytes())
    return SparseEncoding(
        kept=kept, dense_bytes=dense_bytes, sparse_bytes=sparse_bytes, densify_ops=densify, reason=reason
    )


def _ops(path: Path) -> list[dict[str, Any]]:
    from ai_edge_litert.interpreter import Interpreter

    return keras_compat.private.tflite_ops(Interpreter(model_path=str(path)))


@dataclass(frozen=True)
class Kernel:
    """The weight of a FULLY_CONNECTED or CONV_2D op as the runtime sees it: TFLite layout ([out, in] and
    [out, h, w, in]), after any DEQUANTIZE or DENSIFY op, with quantized zeros (the zero point) shifted to 0."""

    op: str
    name: str
    values: np.ndarray


KERNEL_OPS = ("FULLY_CONNECTED", "CONV_2D")


def tflite_kernels(path: Path) -> list[Kernel]:
    """The weights of a .tflite's FULLY_CONNECTED and CONV_2D ops, read from the LiteRT interpreter after one run on
    zeros (so that weights a DEQUANTIZE or DENSIFY op rebuilds exist), without delegates and keeping every tensor."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    # Names are read before allocation: DENSIFY renames its output tensor "Densify_output" when it is prepared.
    details = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
    interpreter.invoke()
    kernels = []
    for op in keras_compat.private.tflite_ops(interpreter):
        if op["op_name"] not in KERNEL_OPS:
            continue
        detail = details[int(op["inputs"][1])]
        values = interpreter.get_tensor(detail["index"])
        zero_points = detail["quantization_parameters"]["zero_points"]
        if np.issubdtype(values.dtype, np.integer) and np.any(zero_points):
            shape = [1] * values.ndim
            shape[detail["quantization_parameters"]["quantized_dimension"]] = -1
            values = values.astype(np.int32) - zero_points.reshape(shape if zero_points.size > 1 else ())
        kernels.append(Kernel(op=op["op_name"], name=detail["name"], values=values))
    return kernels


def m_by_n_check(path: Path, *, m: int, n: int, layers: tuple[str, ...]) -> dict[str, Any]:
    """Whether the kernels of the named Keras layers hold the m-of-n pattern in the artifact itself: the step
    parameters that say so, per kernel (a layer's kernel is the one whose tensor name has the layer's name as a
    path segment)."""
    from ..runtime.measure import m_by_n_pattern

    checked: dict[str, bool] = {}
    for kernel in tflite_kernels(path):
        segments = {part for chunk in kernel.name.split(";") for part in chunk.split("/")}
        for layer in layers:
            if layer in segments:
                checked[layer] = checked.get(layer, True) and m_by_n_pattern(kernel.values, m, n)
    missing = sorted(set(layers) - set(checked))
    return {
        "m_by_n": f"{m}:{n}",
        "pattern_held": bool(checked) and all(checked.values()) and not missing,
        "layers": checked,
        **({"layers_not_found": missing} if missing else {}),
    }


def pattern_check(path: Path, steps: tuple[Step, ...], *, name: str) -> Step | None:
    """The `check` step of an artifact whose source was pruned to an m-of-n pattern (its `prune` step says which,
    and in which layers): whether the pattern holds in the file itself. None for a source not pruned so."""
    pruned = next((step.params for step in steps if step.params.get("m_by_n")), None)
    if pruned is None:
        return None
    m, n = parse_m_by_n(pruned["m_by_n"])
    check = m_by_n_check(path, m=m, n=n, layers=tuple(pruned["m_by_n_layers"]))
    if not check["pattern_held"]:
        log.warning("%s: the %d:%d pattern does not hold in the artifact: %s", name, m, n, check)
    return Step("check", check)


def validate_tflite(path: Path) -> None:
    """Allocate the interpreter's tensors: a file that cannot do this cannot run on a device."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        Interpreter(model_path=str(path)).allocate_tensors()
    except Exception as error:
        raise StageError(f"{path.name} does not load in LiteRT: {first_line(error)}") from error


def clipped_biases(path: Path) -> int:
    """How many quantized bias values sit exactly at an integer limit, i.e. were clipped when quantized.

    A bias is quantized with scale input_scale x weight_scale. A channel whose weights are all zero (common after
    pruning) can get a weight scale near 0; its bias then overflows int32 and is clipped, and the channel's output
    is wrong. The converter raises such weight scales; not every quantizer does.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    clipped = 0
    for detail in interpreter.get_tensor_details():
        if detail["dtype"] not in (np.int32, np.int64) or len(detail["shape"]) != 1:
            continue
        if not detail["quantization_parameters"]["scales"].size:
            continue
        try:
            values = interpreter.get_tensor(detail["index"])  # constant tensors only; others are not allocated
        except ValueError:
            continue
        # int64 biases (16x8 modes) may still be clipped to the int32 range by the quantizer
        limits = [np.iinfo(np.int32), np.iinfo(detail["dtype"])]
        clipped += int(np.count_nonzero(np.isin(values, [v for i in limits for v in (i.min, i.min + 1, i.max)])))
    return clipped


# Ops whose name ends a weight tensor's name, after the Keras layer's name (`model/dense/MatMul`).
_KERNEL_OPS = ("MatMul", "Conv2D", "depthwise", "Conv2D_1", "embedding_lookup", "Tensordot")


def constant_kernels(path: Path) -> dict[str, list]:
    """The constant weight tensors of a .tflite (rank >= 2: kernels and embedding tables, not biases) by the Keras
    layer they came from, each with its output channels on axis 0.

    The channel axis of a per-channel quantized tensor is its `quantized_dimension`; a float tensor is taken with
    TFLite's own layout, output channels first (FULLY_CONNECTED and CONV_2D kernels). Quantized tensors are given as
    their stored integers. Only constant buffers are read: the interpreter is never allocated.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    kernels: dict[str, list] = {}
    for detail in interpreter.get_tensor_details():
        if len(detail["shape"]) < 2 or (np.issubdtype(detail["dtype"], np.integer) and detail["dtype"] != np.int8):
            continue  # biases, shapes and other integer constants
        try:
            values = interpreter.get_tensor(detail["index"])
        except ValueError:  # not a constant
            continue
        quantization = detail["quantization_parameters"]
        axis = int(quantization["quantized_dimension"]) if quantization["scales"].size > 1 else 0
        kernels.setdefault(keras_layer_name(detail["name"]), []).append(np.moveaxis(values, axis, 0))
    return kernels


def keras_layer_name(tensor_name: str) -> str:
    """The Keras layer a converted tensor came from: `tiny_cnn/conv2d/Relu;tiny_cnn/conv2d/Conv2D;...` -> `conv2d`.

    The converter joins the names of fused ops with `;`; the piece that ends in the kernel's op names the layer. A
    QAT model's layers are tfmot wrappers named `quant_<layer>`; their tensors carry the fake-quant op's name, and
    the prefix is dropped.
    """
    pieces = [piece.split("/") for piece in tensor_name.split(";")]
    chosen = next((parts for parts in pieces if parts[-1] in _KERNEL_OPS and len(parts) >= 2), pieces[0])
    parts = chosen[:-1] if len(chosen) >= 2 else chosen
    if len(parts) >= 2 and parts[-1] == "Tensordot":  # a Dense layer applied to a sequence
        parts = parts[:-1]
    name = parts[-1]
    if "FakeQuant" in tensor_name and name.startswith("quant_"):
        name = name[len("quant_") :]
    return name


@contextlib.contextmanager
def _gc_frozen():
    import gc

    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
