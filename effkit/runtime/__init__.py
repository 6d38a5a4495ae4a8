"""Load an artifact into the runtime a device would use: LiteRT for .tflite, ONNX Runtime for .onnx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Format, OrtOptimization
from ..errors import ConfigError
from .base import Runner


def open_runner(
    artifact: Path | Any,
    fmt: Format,
    *,
    threads: int = 1,
    ort_optimization: OrtOptimization = OrtOptimization.ALL,
    outputs: list[str] | None = None,
) -> Runner:
    """A runner for an artifact file, or for a Keras model object when `fmt` is keras (on TensorFlow's threads).

    `outputs` are the Keras model's output names: predictions come back in that order from every runtime.
    """
    if fmt == Format.TFLITE:
        from .litert import LiteRTRunner

        return LiteRTRunner(artifact, threads=threads, outputs=outputs)
    if fmt == Format.ONNX:
        from .onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(artifact, threads=threads, optimization=ort_optimization, outputs=outputs)
    if fmt == Format.KERAS:
        from .keras import KerasRunner

        return KerasRunner(artifact)
    raise ConfigError(f"no runtime for format {fmt!r}; known: {', '.join(f.value for f in Format)}")


__all__ = ["Runner", "open_runner"]
