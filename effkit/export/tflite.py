"""Keras -> float32 .tflite with the TFLite converter, and the converter setup its PTQ modes share."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from .. import keras_compat
from ..errors import StageError, first_line
from ..files import write_bytes


def converter_for(model: Any) -> Any:
    """A TFLiteConverter for a Keras model (never from_concrete_functions: it drops weights, see PITFALLS.md)."""
    tf = keras_compat.tensorflow()
    return tf.lite.TFLiteConverter.from_keras_model(model)


def convert(converter: Any, path: Path, *, what: str = "TFLite conversion") -> Path:
    """Run a configured converter and write its flatbuffer atomically."""
    try:
        with _quiet():
            flatbuffer = converter.convert()
    except Exception as error:  # the converter raises ConverterError, RuntimeError, ValueError...
        raise StageError(f"{what} failed: {first_line(error)}") from error
    return write_bytes(path, flatbuffer)


def export_tflite(model: Any, path: Path) -> Path:
    """Float32 .tflite of a Keras model."""
    return convert(converter_for(model), path)


@contextlib.contextmanager
def _quiet():
    """Silence the converter: it prints a SavedModel trace, Python warnings and C++ lines on stdout and stderr.

    effkit's stdout is for its table and stderr for its progress, so both file descriptors are pointed at a
    scratch file while the converter runs; a failure still reaches the user through the raised error.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(scratch.fileno(), 1)
        os.dup2(scratch.fileno(), 2)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def validate_tflite(path: Path) -> None:
    """Allocate the interpreter's tensors: a file that cannot do this cannot run on a device."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        Interpreter(model_path=str(path)).allocate_tensors()
    except Exception as error:
        raise StageError(f"{path.name} does not load in LiteRT: {first_line(error)}") from error
