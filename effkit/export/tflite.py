"""Keras -> float32 .tflite with the TFLite converter, and the converter setup its PTQ modes share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import keras_compat
from ..console import silenced
from ..errors import StageError, first_line
from ..files import write_bytes


def converter_for(model: Any) -> Any:
    """A TFLiteConverter for a Keras model (never from_concrete_functions: it drops weights, see PITFALLS.md)."""
    tf = keras_compat.tensorflow()
    return tf.lite.TFLiteConverter.from_keras_model(model)


def convert(converter: Any, path: Path, *, what: str = "TFLite conversion") -> Path:
    """Run a configured converter and write its flatbuffer atomically."""
    try:
        with silenced():
            flatbuffer = converter.convert()
    except Exception as error:  # the converter raises ConverterError, RuntimeError, ValueError...
        raise StageError(f"{what} failed: {first_line(error)}") from error
    return write_bytes(path, flatbuffer)


def export_tflite(model: Any, path: Path) -> Path:
    """Float32 .tflite of a Keras model."""
    return convert(converter_for(model), path)


def validate_tflite(path: Path) -> None:
    """Allocate the interpreter's tensors: a file that cannot do this cannot run on a device."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        Interpreter(model_path=str(path)).allocate_tensors()
    except Exception as error:
        raise StageError(f"{path.name} does not load in LiteRT: {first_line(error)}") from error
