"""The registry of ways to make an artifact: (format, quantization, backend) -> a producer.

A producer writes one artifact file from `RecipeInputs` and returns the parameters its step records. Quantizers
that work on a float32 artifact (LiteRT quantizer, ONNX Runtime) read it from `RecipeInputs.float_artifacts`,
which `Recipe.make` fills when the float32 recipe of the same format runs (first, in `recipes_for()`'s order). The
pipeline only walks the plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import Backend, CompressConfig, Format, Quant
from .errors import ConfigError, StageError
from .runtime.delegation import xnnpack_summary
from .types import Step, variant_name


@dataclass
class RecipeInputs:
    """What a producer may draw on: the Keras model, calibration samples, settings, float artifacts made so far."""

    model: Any
    calibration: np.ndarray
    config: CompressConfig
    float_artifacts: dict[Format, Path] = field(default_factory=dict)
    workdir: Path | None = None  # scratch space that lives as long as this model's recipes
    sparse_float: bool = False  # try the converter's sparse encoding for the float32 .tflite (an m-of-n source)
    _converter_source: Any = None

    def converter_source(self) -> Any:
        """What the TFLite converter starts from: a serving SavedModel saved once for all modes (see
        `export.tflite.serving_saved_model`), or the Keras model itself when there is no scratch space or the
        save fails."""
        if self._converter_source is None:
            self._converter_source = self.model
            if self.workdir is not None:
                from .export.tflite import serving_saved_model

                try:
                    self._converter_source = serving_saved_model(self.model, self.workdir / "serving")
                except Exception:  # some models only convert through from_keras_model
                    self._converter_source = self.model
        return self._converter_source

    def float_artifact(self, fmt: Format) -> Path:
        if fmt not in self.float_artifacts:
            raise StageError(f"the float32 {fmt} artifact this quantizer starts from was not made")
        return self.float_artifacts[fmt]


Producer = Callable[[RecipeInputs, Path], dict[str, Any]]


@dataclass(frozen=True)
class Recipe:
    format: Format
    quantization: Quant
    backend: Backend
    produce: Producer
    suffix: str
    name_suffix: str = ""  # tells apart two backends of the same format and quantization

    def variant_name(self, source: str) -> str:
        return variant_name(source, self.format, self.quantization, self.name_suffix)

    def file_name(self, source: str) -> str:
        return f"{self.variant_name(source)}{self.suffix}"

    def make(self, inputs: RecipeInputs, path: Path) -> Step:
        """Write this recipe's artifact at `path` and return its step. A float32 artifact is recorded in `inputs`,
        where the quantizers of its format start from, unless its producer recorded another file for them (the
        dense file beside a sparse-encoded one)."""
        params = self.produce(inputs, path)
        if self.format == Format.TFLITE:
            params = {**params, "xnnpack": xnnpack_summary(path)}
        step = self.step(params)
        if self.quantization == Quant.NONE:
            inputs.float_artifacts.setdefault(self.format, path)
        return step

    def step(self, params: dict[str, Any]) -> Step:
        """The step this recipe adds to a variant (`Step.of_file`): `export` for float32, `quantize` otherwise."""
        return Step.of_file(self.format, self.backend, self.quantization, params)


def _tflite_float(inputs: RecipeInputs, path: Path) -> dict[str, Any]:
    from .export.tflite import export_sparse_tflite, export_tflite

    if inputs.sparse_float and inputs.workdir is not None:
        dense = inputs.workdir / f"{path.stem}.dense.tflite"
        encoding = export_sparse_tflite(inputs.converter_source(), path, dense=dense)
        inputs.float_artifacts[Format.TFLITE] = dense  # quantizers do not read sparse tensors
        return encoding.step_params()
    export_tflite(inputs.converter_source(), path)
    return {}


def _tflite_converter(quantization: Quant) -> Producer:
    def produce(inputs: RecipeInputs, path: Path) -> dict[str, Any]:
        from .quantize.tflite_converter import quantize_tflite

        quantize_tflite(inputs.converter_source(), path, quantization=quantization, calibration=inputs.calibration)
        return {**_calibrated(quantization, inputs), **_bias_note(path, quantization)}

    return produce


def _tflite_litert(quantization: Quant) -> Producer:
    def produce(inputs: RecipeInputs, path: Path) -> dict[str, Any]:
        from .quantize.litert import PLANS, quantize_litert_plan
        from .quantize.litert import RECIPES as LITERT_RECIPES

        source = inputs.float_artifact(Format.TFLITE)
        plan = PLANS[quantization]
        made = quantize_litert_plan(source, path, plan=plan, calibration=inputs.calibration)
        params = {"recipe": LITERT_RECIPES[quantization], "from": source.name, **_calibrated(quantization, inputs)}
        if made.get("dead_channels_mended"):
            params["dead_channels_mended"] = made["dead_channels_mended"]
        fallbacks = [op for op in made["ops"] if "requested" in op]
        if fallbacks:
            params["int8_fallback"] = sorted({f"{op['layer']} ({op['op']})" for op in fallbacks})
            params["note"] = f"{len(fallbacks)} op(s) the quantizer cannot make int4 stay int8"
        return {**params, "ops_by_precision": _precision_counts(made["ops"]), **_bias_note(path, quantization)}

    return produce


def _onnx_float(inputs: RecipeInputs, path: Path) -> dict[str, Any]:
    from .export.onnx import OPSET, export_onnx

    export_onnx(inputs.model, path)
    return {"opset": OPSET}


def _onnx_runtime(quantization: Quant) -> Producer:
    def produce(inputs: RecipeInputs, path: Path) -> dict[str, Any]:
        from .quantize.onnxruntime import quantize_onnx

        source = inputs.float_artifact(Format.ONNX)
        params = quantize_onnx(source, path, quantization=quantization, calibration=inputs.calibration,
                               config=inputs.config.onnx_quant)  # fmt: skip
        return {"from": source.name, **params}

    return produce


STATIC = (Quant.INT8, Quant.INT16X8)  # calibrated modes, with integer biases


def _bias_note(path: Path, quantization: Quant) -> dict[str, Any]:
    """A note when a statically quantized .tflite holds clipped biases (see `export.tflite.clipped_biases`): what
    neither the converter nor `quantize.litert.mend_dead_channels` could keep in range."""
    if quantization not in STATIC:  # dynamic modes keep float biases
        return {}
    from .export.tflite import clipped_biases

    clipped = clipped_biases(path)
    if not clipped:
        return {}
    return {
        "clipped_biases": clipped,
        "note": f"{clipped} quantized bias value(s) clipped at the integer limit, so those channels' outputs are wrong",
    }


def _precision_counts(ops: list[dict[str, Any]]) -> dict[str, int]:
    """How many weighted ops of each precision an artifact holds: {"int4": 3, "int8": 1}."""
    counts: dict[str, int] = {}
    for op in ops:
        counts[op["precision"]] = counts.get(op["precision"], 0) + 1
    return counts


def _calibrated(quantization: Quant, inputs: RecipeInputs) -> dict[str, Any]:
    return {"calibration_samples": len(inputs.calibration)} if quantization in STATIC else {}


RECIPES: tuple[Recipe, ...] = (
    Recipe(Format.TFLITE, Quant.NONE, Backend.CONVERTER, _tflite_float, ".tflite"),
    *(
        Recipe(Format.TFLITE, q, Backend.CONVERTER, _tflite_converter(q), ".tflite")
        for q in (Quant.DYNAMIC, Quant.FLOAT16, Quant.INT8, Quant.INT16X8)
    ),
    *(
        Recipe(Format.TFLITE, q, Backend.LITERT, _tflite_litert(q), ".tflite", name_suffix="-litert")
        for q in (Quant.DYNAMIC, Quant.INT4, Quant.INT8, Quant.INT16X8)
    ),
    Recipe(Format.ONNX, Quant.NONE, Backend.TF2ONNX, _onnx_float, ".onnx"),
    *(
        Recipe(Format.ONNX, q, Backend.ONNXRUNTIME, _onnx_runtime(q), ".onnx")
        for q in (Quant.DYNAMIC, Quant.INT8, Quant.INT4)
    ),
)


def recipes_for(config: CompressConfig) -> list[Recipe]:
    """The recipes a config asks for, float32 first in each format (the reference, and what quantizers start from).

    TFLite quantization recipes are kept for the backends in `config.tflite_backends`; the float32 export always
    runs. A combination no backend offers (ONNX float16, say) is left out.

    Raises:
        ConfigError: a requested quantization has no recipe in any requested format.
    """
    wanted = (Quant.NONE, *(q for q in config.quantizations if q != Quant.NONE))
    chosen = [
        recipe
        for fmt in config.formats
        for quantization in wanted
        for recipe in RECIPES
        if recipe.format == fmt
        and recipe.quantization == quantization
        and (fmt != Format.TFLITE or quantization == Quant.NONE or recipe.backend in config.tflite_backends)
    ]
    for quantization in wanted:
        if not any(r.quantization == quantization for r in chosen):
            backends = sorted(
                {r.backend for r in RECIPES if r.format in config.formats and r.quantization == quantization}
            )
            if backends:
                raise ConfigError(
                    f"quantization '{quantization}' needs TFLite backend {' or '.join(backends)}; "
                    f"chosen: {', '.join(config.tflite_backends)}"
                )
            available = sorted({f"{r.format}:{r.quantization}" for r in RECIPES})
            formats = ", ".join(config.formats)
            raise ConfigError(f"no format among {formats} offers {quantization!r}; available: {', '.join(available)}")
    return chosen
