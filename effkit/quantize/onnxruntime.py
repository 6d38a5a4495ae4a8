"""Post-training quantization with ONNX Runtime's tools, applied to a float32 .onnx.

dynamic: 8-bit weights, activations quantized on the fly (MatMulInteger / ConvInteger). On convolutional models
this is typically several times slower than float32 on the CPU (docs/pitfalls.md); effkit still makes it when
asked and reports the measured latency. int8: static QDQ, calibrated on training samples, per-channel by default.

Which integer types is a question of the CPU the artifact runs on (`ort_types`, decided once here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import OnnxQuantConfig, OrtCalibration, OrtTypes, Quant
from ..console import silenced
from ..cpu import CpuFingerprint, fingerprint
from ..errors import ConfigError, StageError, first_line
from ..export.onnx import INPUT_NAME, validate_onnx
from ..files import atomic_output

CONVOLUTIONS = {"Conv", "ConvTranspose"}


def ort_types(config: OnnxQuantConfig, cpu: CpuFingerprint) -> tuple[OrtTypes, str]:
    """The activation/weight types to quantize with, and why: the user's choice, or ORT's guidance for this CPU.

    ORT's U8S8 kernels on x86 without VNNI/AMX sum uint8 x int8 pairs in 16 bits (`vpmaddubsw`) and saturate.
    Measured on the quick suite's ONNX models through an AVX2-only CPU: U8S8 (and S8S8, which ORT runs as U8S8
    on x86) fell to 46-74% top-1 agreement on imdb_text; U8U8 kept 99.2-100% on every model with the same
    outputs as U8S8 on a VNNI CPU, and `reduce_range` (7-bit weights) doubled a regression head's error.
    """
    if config.types != OrtTypes.AUTO:
        return config.types, "chosen by the user"
    if cpu.u8s8_saturates:
        return OrtTypes.U8U8, f"u8s8 would saturate on {cpu.isa_class} (no VNNI/AMX)"
    return OrtTypes.U8S8, f"u8s8 is exact on {cpu.isa_class}"


def quantize_onnx(
    float_onnx: Path,
    path: Path,
    *,
    quantization: Quant,
    calibration: np.ndarray,
    config: OnnxQuantConfig,
    cpu: CpuFingerprint | None = None,
) -> dict:
    """Write a quantized copy of a float32 .onnx and return what its step records.

    Args:
        float_onnx: the float32 artifact (from `export_onnx`).
        path: where the quantized .onnx goes.
        quantization: dynamic or int8 (static QDQ).
        calibration: representative input samples for int8.
        config: per-channel, activation/weight types and calibration method for int8.
        cpu: the CPU the types are chosen for when `config.types` is auto; default this machine's.

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
    cpu = cpu or fingerprint()
    types, why = ort_types(config, cpu)
    activation = QuantType.QInt8 if types == OrtTypes.S8S8 else QuantType.QUInt8
    weight = QuantType.QUInt8 if types == OrtTypes.U8U8 else QuantType.QInt8
    params: dict = {
        "per_channel": config.per_channel,
        "types": str(types),
        "types_why": why,
        "isa_class": cpu.isa_class,
    }
    with atomic_output(path) as temporary:
        prepared = temporary.with_name(temporary.name + ".pre.onnx")
        try:
            with silenced():
                # Shape inference and graph clean-up, as ORT recommends before quantizing. Symbolic shape inference
                # (which needs sympy) only matters for dynamic shapes beyond the batch dimension.
                quant_pre_process(str(float_onnx), str(prepared), skip_symbolic_shape=True)
                if quantization == Quant.DYNAMIC:
                    quantize_dynamic(str(prepared), str(temporary), weight_type=weight, per_channel=config.per_channel)
                else:
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
                        weight_type=weight,
                        calibrate_method=method,
                    )
                    params |= {
                        "quant_format": "qdq",
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
        params["types"] = f"u8{str(types)[-2:]}"  # dynamic activations are always uint8; the weights follow `types`
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
