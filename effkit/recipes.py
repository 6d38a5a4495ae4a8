"""The registry of ways to make an artifact: (format, quantization, backend) -> a producer.

A producer writes one artifact file from `RecipeInputs` and returns the parameters its step records. New backends
(LiteRT quantizer, ONNX Runtime quantization) register here; the pipeline only walks the plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import Backend, CompressConfig, Format, Quant
from .errors import ConfigError


@dataclass
class RecipeInputs:
    """What a producer may draw on: the Keras model, calibration samples, float artifacts already made."""

    model: Any
    calibration: np.ndarray
    float_artifacts: dict[Format, Path] = field(default_factory=dict)


Producer = Callable[[RecipeInputs, Path], dict[str, Any]]


@dataclass(frozen=True)
class Recipe:
    format: Format
    quantization: Quant
    backend: Backend
    produce: Producer
    suffix: str

    def variant_name(self, source: str) -> str:
        return f"{source}-{self.format}-{self.quantization}"

    def file_name(self, source: str) -> str:
        return f"{self.variant_name(source)}{self.suffix}"


def _tflite_float(inputs: RecipeInputs, path: Path) -> dict[str, Any]:
    from .export.tflite import export_tflite

    export_tflite(inputs.model, path)
    return {}


def _tflite_converter(quantization: Quant) -> Producer:
    def produce(inputs: RecipeInputs, path: Path) -> dict[str, Any]:
        from .quantize.tflite_converter import quantize_tflite

        quantize_tflite(inputs.model, path, quantization=quantization, calibration=inputs.calibration)
        return {"calibration_samples": len(inputs.calibration)} if quantization == Quant.INT8 else {}

    return produce


def _onnx_float(inputs: RecipeInputs, path: Path) -> dict[str, Any]:
    from .export.onnx import OPSET, export_onnx

    export_onnx(inputs.model, path)
    return {"opset": OPSET}


RECIPES: tuple[Recipe, ...] = (
    Recipe(Format.TFLITE, Quant.NONE, Backend.CONVERTER, _tflite_float, ".tflite"),
    Recipe(Format.TFLITE, Quant.DYNAMIC, Backend.CONVERTER, _tflite_converter(Quant.DYNAMIC), ".tflite"),
    Recipe(Format.TFLITE, Quant.FLOAT16, Backend.CONVERTER, _tflite_converter(Quant.FLOAT16), ".tflite"),
    Recipe(Format.TFLITE, Quant.INT8, Backend.CONVERTER, _tflite_converter(Quant.INT8), ".tflite"),
    Recipe(Format.ONNX, Quant.NONE, Backend.TF2ONNX, _onnx_float, ".onnx"),
)


def plan(config: CompressConfig) -> list[Recipe]:
    """The recipes a config asks for, float32 first in each format (it is the reference the rest compare with).

    Raises:
        ConfigError: a requested quantization has no recipe in any requested format.
    """
    wanted = (Quant.NONE, *(q for q in config.quantizations if q != Quant.NONE))
    chosen = [r for f in config.formats for q in wanted for r in RECIPES if r.format == f and r.quantization == q]
    for quantization in wanted:
        if not any(r.quantization == quantization for r in chosen):
            available = sorted({f"{r.format}:{r.quantization}" for r in RECIPES})
            formats = ", ".join(config.formats)
            raise ConfigError(f"no format among {formats} offers {quantization!r}; available: {', '.join(available)}")
    return chosen
