"""Keras -> float32 .onnx with tf2onnx, through a traced tf.function (works for both Keras generations)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .. import keras_compat
from ..errors import StageError, first_line
from ..files import atomic_output

OPSET = 17  # tf2onnx 1.17 supports opsets up to 18
INPUT_NAME = "input"


def export_onnx(model: Any, path: Path, *, opset: int = OPSET) -> Path:
    """Float32 .onnx of a Keras model with a dynamic batch dimension; checked with onnx.checker."""
    tf = keras_compat.tensorflow()
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    tf2onnx.logging.set_level(logging.ERROR)
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), model.inputs[0].dtype, name=INPUT_NAME)
    function = tf.function(lambda inputs: model(inputs, training=False))
    with atomic_output(path) as temporary:
        try:
            tf2onnx.convert.from_function(function, input_signature=[spec], opset=opset, output_path=str(temporary))
        except Exception as error:  # tf2onnx raises anything from KeyError to ValueError on unsupported ops
            raise StageError(f"tf2onnx conversion failed: {first_line(error)}") from error
        validate_onnx(temporary)
    return Path(path)


def validate_onnx(path: Path) -> None:
    """onnx.checker on the written file."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as error:
        raise StageError(f"{Path(path).name} fails onnx.checker: {first_line(error)}") from error
