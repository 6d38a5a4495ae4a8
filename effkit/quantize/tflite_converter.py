"""Post-training quantization with the TFLite converter: dynamic range, float16, full-integer int8, 16x8.

Converter PTQ is deprecated upstream in favour of the LiteRT quantizer but still works in TF 2.21; it is the one
backend that quantizes straight from the Keras model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..config import Quant
from ..errors import ConfigError, StageError
from ..export.tflite import convert, converter_for
from ..load import keras_compat


def quantize_tflite(model: Any, path: Path, *, quantization: Quant, calibration: np.ndarray | None = None) -> Path:
    """Write a quantized .tflite of a Keras model.

    Args:
        model: the tf_keras (or Keras 3) model, or its `serving_saved_model` folder.
        path: where the .tflite goes.
        quantization: dynamic (int8 weights, float activations), float16 (weights), int8 (full integer: int8
            weights and activations, int8 input and output for float inputs; integer inputs such as token ids keep
            their type), or int16x8 (int8 weights, int16 activations and input/output).
        calibration: representative input samples from the training split; required for int8 and int16x8.

    Raises:
        StageError: the converter failed.
    """
    tf = keras_compat.tensorflow()
    converter = converter_for(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == Quant.DYNAMIC:
        pass
    elif quantization == Quant.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    elif quantization in (Quant.INT8, Quant.INT16X8):
        if calibration is None or not len(calibration):
            raise StageError(f"{quantization} quantization needs calibration samples")
        converter.representative_dataset = _representative(calibration)
        if quantization == Quant.INT8:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io_type = tf.int8
        else:
            ops = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            converter.target_spec.supported_ops = [ops]
            io_type = tf.int16
        if np.issubdtype(calibration.dtype, np.floating):
            converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    else:
        raise ConfigError(f"the TFLite converter has no {quantization!r} mode; known: dynamic, float16, int8, int16x8")
    return convert(converter, path, what=f"TFLite {quantization} quantization")


def _representative(calibration: np.ndarray):
    def samples():
        for sample in calibration:
            yield [sample[np.newaxis]]

    return samples
