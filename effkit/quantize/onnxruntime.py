"""Post-training quantization with ONNX Runtime's tools, applied to a float32 .onnx.

dynamic: 8-bit weights, activations quantized on the fly (MatMulInteger / ConvInteger). On convolutional models
this is typically several times slower than float32 on the CPU (docs/pitfalls.md); effkit still makes it when
asked and reports the measured latency. int8: static QDQ, calibrated on training samples, per-channel by default.
int4: ORT's weight-only MatMulNBits quantizer: the MatMul (Dense) weights in blocks of `INT4_BLOCK` with one scale
each, float activations; ORT has no int4 Conv, so convolutions stay float32.

Nodes named in `nodes_to_exclude` stay float: `onnx_nodes_for_layers` finds a Keras layer's nodes, so a layer plan's
float layers carry over from LiteRT.

Which integer types is a question of the CPU the artifact runs on (`ort_types`, decided once here).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..config import OnnxQuantConfig, OrtCalibration, OrtTypes, Quant
from ..console import silenced
from ..cpu import CpuFingerprint, fingerprint
from ..errors import ConfigError, StageError, first_line
from ..export.onnx import INPUT_NAME, validate_onnx
from ..files import atomic_output
from .layers import keras_names, path_components

CONVOLUTIONS = {"Conv", "ConvTranspose"}
INT4_BLOCK = 32  # input channels per int4 scale: MatMulNBits takes a power of two >= 16


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
    nodes_to_exclude: Sequence[str] = (),
) -> dict:
    """Write a quantized copy of a float32 .onnx and return what its step records.

    Args:
        float_onnx: the float32 artifact (from `export_onnx`).
        path: where the quantized .onnx goes.
        quantization: dynamic, int8 (static QDQ) or int4 (MatMul weights only).
        calibration: representative input samples for int8.
        config: per-channel, activation/weight types and calibration method for int8.
        cpu: the CPU the types are chosen for when `config.types` is auto; default this machine's.
        nodes_to_exclude: names of nodes to leave in float (see `onnx_nodes_for_layers`).

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

    if quantization not in (Quant.DYNAMIC, Quant.INT8, Quant.INT4):
        raise ConfigError(f"ONNX Runtime has no {quantization!r} quantization here; known: dynamic, int8, int4")
    nodes_to_exclude = list(nodes_to_exclude)
    if quantization == Quant.INT4:
        return _quantize_int4(float_onnx, path, nodes_to_exclude=nodes_to_exclude)
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
    if config.types == OrtTypes.AUTO:  # the same settings give other bytes on another CPU: the gate must know
        params["chosen_for_cpu"] = {"types": str(types)}
    with atomic_output(path) as temporary:
        prepared = temporary.with_name(temporary.name + ".pre.onnx")
        try:
            with silenced():
                # Shape inference and graph clean-up, as ORT recommends before quantizing. Symbolic shape inference
                # (which needs sympy) only matters for dynamic shapes beyond the batch dimension.
                quant_pre_process(str(float_onnx), str(prepared), skip_symbolic_shape=True)
                excluded = _renamed_nodes(prepared, nodes_to_exclude)
                if quantization == Quant.DYNAMIC:
                    quantize_dynamic(
                        str(prepared),
                        str(temporary),
                        weight_type=weight,
                        per_channel=config.per_channel,
                        nodes_to_exclude=excluded,
                    )
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
                        nodes_to_exclude=excluded,
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
    if excluded:
        params["nodes_to_exclude"] = excluded
    if quantization == Quant.DYNAMIC:
        params["types"] = f"u8{str(types)[-2:]}"  # dynamic activations are always uint8; the weights follow `types`
        if _has_convolutions(path):
            params["note"] = "dynamic quantization of convolutions (ConvInteger) is usually slower than float on CPU"
    return params


def _renamed_nodes(prepared: Path, nodes: list[str]) -> list[str]:
    """The nodes of the pre-processed graph that stand for `nodes` of the float one: the same name, or a fusion ORT
    named after it (`model/dense/MatMul` and its bias Add become Gemm `model/dense/MatMul/MatMulAddFusion`).

    Raises:
        StageError: nodes were named but none is left, so nothing would stay float.
    """
    if not nodes:
        return []
    import onnx

    wanted = set(nodes)
    graph = onnx.load(str(prepared), load_external_data=False).graph
    found = [n.name for n in graph.node if n.name in wanted or any(n.name.startswith(f"{w}/") for w in wanted)]
    if not found:
        raise StageError(f"none of the nodes to exclude is left after ORT's pre-processing: {sorted(wanted)}")
    return found


def _quantize_int4(float_onnx: Path, path: Path, *, nodes_to_exclude: list[str]) -> dict:
    """MatMul weights to int4 (symmetric, blocks of `INT4_BLOCK` input channels), with ORT's MatMulNBits quantizer."""
    import onnx

    with atomic_output(path) as temporary:
        try:
            with silenced():
                from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

                quantizer = MatMulNBitsQuantizer(
                    onnx.load(str(float_onnx)),
                    bits=4,
                    block_size=INT4_BLOCK,
                    is_symmetric=True,
                    nodes_to_exclude=nodes_to_exclude,
                )
                quantizer.process()
                quantizer.model.save_model_to_file(str(temporary), use_external_data_format=False)
        except Exception as error:  # ImportError (onnx_ir missing), onnx's own errors, ...
            raise StageError(f"ONNX Runtime int4 quantization failed: {first_line(error)}") from error
        validate_onnx(temporary)
        graph = onnx.load(str(temporary), load_external_data=False).graph
        int4_nodes = sum(node.op_type == "MatMulNBits" for node in graph.node)
        left_float = sorted({node.op_type for node in graph.node if node.op_type in CONVOLUTIONS | {"MatMul", "Gemm"}})
    params: dict = {"weights": "int4", "block_size": INT4_BLOCK, "int4_nodes": int4_nodes}
    if nodes_to_exclude:
        params["nodes_to_exclude"] = nodes_to_exclude
    if left_float:
        params["note"] = f"ORT quantizes MatMul weights to int4; {', '.join(left_float)} weights stay float32"
    return params


def onnx_nodes_for_layers(
    onnx_path: Path, layers: Iterable[str], *, keras_layers: Iterable[str] | None = None
) -> list[str]:
    """The names of the nodes tf2onnx made from these Keras layers, in graph order.

    tf2onnx names a node after the TensorFlow op it came from (`model/dense_1/MatMul`), so a layer's nodes are those
    whose name has the layer as a path component. Pass `keras_layers` (the model's layer names) for a Keras 3 model,
    whose names TensorFlow made unique again (see `quantize.layers`).

    Raises:
        ConfigError: a layer has no node in the file.
    """
    import onnx

    nodes = [node.name for node in onnx.load(str(onnx_path), load_external_data=False).graph.node]
    components = {node: path_components(node) for node in nodes}
    names = keras_names(set().union(*components.values()), keras_layers)
    wanted = set(layers)
    found = [node for node in nodes if wanted & {names[c] for c in components[node]}]
    missing = sorted(wanted - {names[c] for node in found for c in components[node]})
    if missing:
        raise ConfigError(f"{Path(onnx_path).name} has no nodes for layers {missing}")
    return found


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
