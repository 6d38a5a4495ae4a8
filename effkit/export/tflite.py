"""Keras -> float32 .tflite with the TFLite converter, and the converter setup its PTQ modes share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import keras_compat
from ..console import silenced
from ..errors import StageError, first_line
from ..files import write_bytes


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
    from ..classifier import output_names

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
        with silenced():
            flatbuffer = converter.convert()
    except Exception as error:  # the converter raises ConverterError, RuntimeError, ValueError...
        raise StageError(f"{what} failed: {first_line(error)}") from error
    return write_bytes(path, flatbuffer)


def export_tflite(model: Any, path: Path) -> Path:
    """Float32 .tflite of a Keras model (or of its `serving_saved_model` folder)."""
    return convert(converter_for(model), path)


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
