"""Post-training quantization with ONNX Runtime's tools, applied to a float32 .onnx.

dynamic: int8 weights, activations quantized on the fly (MatMulInteger / ConvInteger). On convolutional models
this is typically several times slower than float32 on the CPU (PITFALLS.md); effkit still makes it when asked and
reports the measured latency. int8: static QDQ, calibrated on training samples, per-channel by default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import OnnxQuantConfig, OrtCalibration, OrtTypes, Quant
from ..console import silenced
from ..errors import ConfigError, StageError, first_line
from ..export.onnx import INPUT_NAME, validate_onnx
from ..files import atomic_output

CONVOLUTIONS = {"Conv", "ConvTranspose"}


def quantize_onnx(
    float_onnx: Path, path: Path, *, quantization: Quant, calibration: np.ndarray, config: OnnxQuantConfig
) -> dict:
    """Write a quantized copy of a float32 .onnx and return what its step records.

    Args:
        float_onnx: the float32 artifact (from `export_onnx`).
        path: where the quantized .onnx goes.
        quantization: dynamic or int8 (static QDQ).
        calibration: representative input samples for int8.
        config: per-channel, activation/weight types and calibration method for int8.

    Raises:
        ConfigError: no such ONNX Runtime quantization.
        StageError: ONNX Runtime's tools failed or wrote an invalid model.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if quantization not in (Quant.DYNAMIC, Quant.INT8):
        raise ConfigError(f"ONNX Runtime has no {quantization!r} quantization here; known: dynamic, int8")
    params: dict = {}
    with atomic_output(path) as temporary:
        prepared = temporary.with_name(temporary.name + ".pre.onnx")
        try:
            with silenced():
                # Shape inference and graph clean-up, as ORT recommends before quantizing. Symbolic shape inference
                # (which needs sympy) only matters for dynamic shapes beyond the batch dimension.
                quant_pre_process(str(float_onnx), str(prepared), skip_symbolic_shape=True)
                if quantization == Quant.DYNAMIC:
                    quantize_dynamic(
                        str(prepared), str(temporary), weight_type=QuantType.QInt8, per_channel=config.per_channel
                    )
                else:
                    activation = QuantType.QUInt8 if config.types == OrtTypes.U8S8 else QuantType.QInt8
                    method = {
                        OrtCalibration.MINMAX: CalibrationMethod.MinMax,
                        OrtCalibration.ENTROPY: CalibrationMethod.Entropy,
                        OrtCalibration.PERCENTILE: CalibrationMethod.Percentile,
                    }[config.calibration]
                    quantize_static(
                        str(prepared),
                        str(temporary),
                        _reader(calibration),
                        quant_format=QuantFormat.QDQ,
                        per_channel=config.per_channel,
                        activation_type=activation,
                        weight_type=QuantType.QInt8,
                        calibrate_method=method,
                    )
                    params = {
                        "format": "qdq",
                        "per_channel": config.per_channel,
                        "types": str(config.types),
                        "calibration": str(config.calibration),
                        "calibration_samples": len(calibration),
                    }
        except Exception as error:  # ORT's tools raise anything from ValueError to onnx's own errors
            raise StageError(f"ONNX Runtime {quantization} quantization failed: {first_line(error)}") from error
        finally:
            if prepared.exists():
                prepared.unlink()
        validate_onnx(temporary)
    if quantization == Quant.DYNAMIC:
        params = {"per_channel": config.per_channel}
        if _has_convolutions(path):
            params["note"] = "dynamic quantization of convolutions (ConvInteger) is usually slower than float on CPU"
    return params


def _has_convolutions(path: Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in CONVOLUTIONS | {"ConvInteger"} for node in graph.node)


def _reader(samples: np.ndarray):
    """A CalibrationDataReader over training samples, one sample per call."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._samples = iter(samples)

        def get_next(self):
            sample = next(self._samples, None)
            return None if sample is None else {INPUT_NAME: sample[np.newaxis]}

    return Reader()
