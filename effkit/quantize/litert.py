"""Post-training quantization with the LiteRT quantizer (`litert-quantizer`), applied to a float32 .tflite.

This is the upstream successor of converter PTQ and needs no TensorFlow. Recipes: dynamic (int8 weights, float
activations), int8 (static int8 weights and activations) and int16x8 (int8 weights, int16 activations).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import Quant
from ..console import silenced
from ..errors import ConfigError, StageError, first_line
from ..files import write_bytes

RECIPES = {Quant.DYNAMIC: "dynamic_wi8_afp32", Quant.INT8: "static_wi8_ai8", Quant.INT16X8: "static_wi8_ai16"}


def quantize_litert(float_tflite: Path, path: Path, *, quantization: Quant, calibration: np.ndarray) -> Path:
    """Write a quantized copy of a float32 .tflite.

    Args:
        float_tflite: the float32 artifact to quantize.
        path: where the quantized .tflite goes.
        quantization: dynamic, int8 or int16x8.
        calibration: representative input samples; used by the static recipes.

    Raises:
        ConfigError: the quantizer has no such recipe.
        StageError: the quantizer failed.
    """
    if quantization not in RECIPES:
        known = ", ".join(RECIPES)
        raise ConfigError(f"the LiteRT quantizer has no {quantization!r} recipe; known: {known}")
    from litert_quantizer import quantizer, recipe

    try:
        with silenced():
            engine = quantizer.Quantizer(str(float_tflite))
            engine.load_quantization_recipe(getattr(recipe, RECIPES[quantization])())
            calibrated = None
            if engine.need_calibration:
                calibrated = engine.calibrate(_calibration_data(float_tflite, calibration), num_threads=1)
            result = engine.quantize(calibrated, enable_progress_report=False)
    except Exception as error:  # the quantizer raises ValueError, RuntimeError, KeyError...
        raise StageError(f"LiteRT quantizer {quantization} failed: {first_line(error)}") from error
    return write_bytes(path, bytes(result.quantized_model))


def _calibration_data(float_tflite: Path, calibration: np.ndarray) -> dict:
    """{signature: [{input name: one sample}, ...]}, the form the quantizer's calibrator reads."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_path=str(float_tflite)).get_signature_list()
    if len(signatures) != 1:
        raise StageError(f"{float_tflite.name} has {len(signatures)} signatures; the LiteRT quantizer needs one")
    ((key, signature),) = signatures.items()
    (input_name,) = signature["inputs"]
    return {key: [{input_name: sample[np.newaxis]} for sample in calibration]}
