"""Post-training quantization with the LiteRT quantizer (`litert-quantizer`), applied to a float32 .tflite.

This is the upstream successor of converter PTQ and needs no TensorFlow. A `LayerPlan` says each layer's weight
precision (float, int8, int4) and the activations (float, or static int8/int16); the plain modes are plans too:
dynamic (int8 weights, float activations), int4 (int4 weights where the quantizer has them, else int8), int8
(static int8 weights and activations) and int16x8 (int8 weights, int16 activations).

How a plan becomes a recipe. The quantizer's recipe is a list of entries {regex, operation, algorithm_key,
op_config}; a regex is searched in an op's scope (its output tensor names joined by ';'). `RecipeManager` keeps the
entries per regex in the order they were added and, for an op, walks all of them: of the entries whose regex and
operation match and whose config the quantizer supports for that op, the last one wins (an unsupported one is
skipped, and with no entry left the op stays float). So the plan's entries go from general to specific: the
default for every op (`.*`), then int4 for the op types that take it, then one entry per overridden layer. An
override to float is the `no_quantize` algorithm, which leaves the op and its tensors as they were.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Precision, Quant
from ..console import silenced
from ..errors import ConfigError, StageError, first_line
from ..files import write_bytes
from .layers import keras_names, path_components, scope_layer, scope_regex

RECIPES = {
    Quant.DYNAMIC: "dynamic_wi8_afp32",
    Quant.INT4: "dynamic_wi4_afp32",
    Quant.INT8: "static_wi8_ai8",
    Quant.INT16X8: "static_wi8_ai16",
}
ACTIVATIONS = {"float": None, "int8": 8, "int16": 16}  # activation bits; None: dynamic (weights only in the file)
BLOCK_SIZES = (32, 64)
BITS = {Precision.INT8: 8, Precision.INT4: 4}
WEIGHT_ALGORITHMS = {"min_max": "min_max_uniform_quantize", "octav": "OCTAV"}  # plan name: the quantizer's key
# The op types whose weights the quantizer handles (its dynamic int8 policy); the int4 subset is asked per mode.
WEIGHTED_OPS = (
    "FULLY_CONNECTED",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "CONV_2D_TRANSPOSE",
    "BATCH_MATMUL",
    "EMBEDDING_LOOKUP",
)
# The quantizer says CONV_2D_TRANSPOSE; the flatbuffer says TRANSPOSE_CONV.
_QUANTIZER_OP = {"TRANSPOSE_CONV": "CONV_2D_TRANSPOSE"}


@dataclass(frozen=True)
class LayerPlan:
    """Per-layer weight precision for the LiteRT quantizer. A value object: no framework imports.

    Attributes:
        weights: the default for every op the quantizer supports.
        activations: "float" (dynamic: weights quantized, activations quantized on the fly by the kernel), "int8"
            or "int16" (static, calibrated).
        layers: Keras layer name -> override; `Precision.FLOAT` leaves that layer's ops in float.
        blockwise: 32 or 64: blockwise int4 where the op supports it (FULLY_CONNECTED, EMBEDDING_LOOKUP in dynamic
            mode), channelwise elsewhere.
        weight_algorithm: how the weights' ranges are chosen (`WEIGHT_ALGORITHMS`): "min_max", each channel's
            full range, or "octav", the quantizer's OCTAV clipping (Sakr et al. 2022: the clip that minimises the
            expected squared error of each channel, so that an outlier weight does not widen the step for all the
            others). It applies to the ops with weights; activations are calibrated by min and max either way.
    """

    weights: Precision = Precision.INT8
    activations: str = "float"
    layers: tuple[tuple[str, Precision], ...] = ()
    blockwise: int | None = None
    weight_algorithm: str = "min_max"

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", Precision(self.weights))
        object.__setattr__(self, "layers", tuple((str(name), Precision(p)) for name, p in self.layers))

    def validate(self) -> None:
        if self.activations not in ACTIVATIONS:
            known = ", ".join(ACTIVATIONS)
            raise ConfigError(f"unknown activations {self.activations!r} in a layer plan; known: {known}")
        if self.weight_algorithm not in WEIGHT_ALGORITHMS:
            known = ", ".join(WEIGHT_ALGORITHMS)
            raise ConfigError(f"unknown weight algorithm {self.weight_algorithm!r} in a layer plan; known: {known}")
        if self.blockwise is not None and self.blockwise not in BLOCK_SIZES:
            raise ConfigError(
                f"blockwise must be one of {', '.join(map(str, BLOCK_SIZES))} or None, got {self.blockwise}"
            )
        names = [name for name, _ in self.layers]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ConfigError(f"layers named more than once in a layer plan: {repeated}")

    def precision(self, layer: str) -> Precision:
        """The precision this plan asks for a layer's weights."""
        return dict(self.layers).get(layer, self.weights)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "weights": str(self.weights),
            "activations": self.activations,
            "layers": {name: str(precision) for name, precision in self.layers},
            "blockwise": self.blockwise,
        }
        if self.weight_algorithm != "min_max":  # the records of min-max plans read as they always have
            data["weight_algorithm"] = self.weight_algorithm
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerPlan:
        known = {"weights", "activations", "layers", "blockwise", "weight_algorithm"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown layer plan keys {unknown}; known: {sorted(known)}")
        layers = data.get("layers", {})
        pairs = layers.items() if isinstance(layers, dict) else layers
        return cls(
            weights=Precision(data.get("weights", Precision.INT8)),
            activations=data.get("activations", "float"),
            layers=tuple((name, Precision(precision)) for name, precision in pairs),
            blockwise=data.get("blockwise"),
            weight_algorithm=data.get("weight_algorithm", "min_max"),
        )


@dataclass(frozen=True)
class QuantizableOp:
    """An op with constant weights in a float .tflite, named by its Keras layer."""

    layer: str
    op: str  # e.g. CONV_2D
    weights: int  # element count
    supports_int4: bool  # in dynamic mode (int4 weights, float activations)
    scope: str = ""  # the layer as the file's tensor names spell it (differs from `layer` for Keras 3 models)


PLANS = {
    Quant.DYNAMIC: LayerPlan(),
    Quant.INT4: LayerPlan(weights=Precision.INT4),
    Quant.INT8: LayerPlan(activations="int8"),
    Quant.INT16X8: LayerPlan(activations="int16"),
}


def quantize_litert(float_tflite: Path, path: Path, *, quantization: Quant, calibration: np.ndarray) -> Path:
    """Write a quantized copy of a float32 .tflite in one of the plain modes (see `PLANS`).

    Raises:
        ConfigError: the quantizer has no such recipe.
        StageError: the quantizer failed.
    """
    if quantization not in PLANS:
        known = ", ".join(PLANS)
        raise ConfigError(f"the LiteRT quantizer has no {quantization!r} recipe; known: {known}")
    quantize_litert_plan(float_tflite, path, plan=PLANS[quantization], calibration=calibration)
    return path


def quantizable_layers(float_tflite: Path, *, keras_layers: Iterable[str] | None = None) -> list[QuantizableOp]:
    """The ops with constant weights in a float .tflite, each named by its Keras layer, in graph order.

    Args:
        float_tflite: a float32 .tflite.
        keras_layers: the model's layer names (nested models' layers included). Without them a layer is named as
            the file spells it, which for a Keras 3 model traced by TensorFlow is `dense_1` for layer `dense`
            (see `quantize.layers`); with them, as Keras names it.
    """
    from ..export.tflite_graph import read_graph

    graph = read_graph(float_tflite)
    found = _weighted_ops(graph)
    names = keras_names({scope for _, scope in found}, keras_layers)
    return [
        QuantizableOp(
            layer=names[scope],
            op=op.op,
            weights=graph.weight(op).elements,
            supports_int4=_supports(op.op, weight_bits=4, activation_bits=None),
            scope=scope,
        )
        for op, scope in found
    ]


def quantize_litert_plan(
    float_tflite: Path,
    path: Path,
    *,
    plan: LayerPlan,
    calibration: np.ndarray,
    keras_layers: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Write the quantized .tflite; return step params: the recipe entries used and, per quantized op,
    {layer, op, precision}.

    Each op's precision is read back from the written file. An op asked for int4 that the quantizer cannot give
    int4 in this mode (DEPTHWISE_CONV_2D, say) gets int8 and its entry says so under `requested` and `note`.

    Args:
        float_tflite: the float32 artifact to quantize.
        path: where the quantized .tflite goes.
        plan: the precision of each layer's weights, and the activations.
        calibration: representative input samples; used when the activations are static.
        keras_layers: the model's layer names, to read Keras 3 scope names (see `quantizable_layers`). The plan's
            layer names are then Keras names.

    Raises:
        ConfigError: the plan is invalid or names a layer the file does not have.
        StageError: the quantizer failed.
    """
    from ..export.tflite_graph import read_graph

    plan.validate()
    keras_layers = None if keras_layers is None else list(keras_layers)
    graph = read_graph(float_tflite)
    all_scopes = set().union(*(path_components(graph.scope(op)) for op in graph.ops))
    names = keras_names(all_scopes, keras_layers)
    scopes_of: dict[str, set[str]] = {}
    for scope, name in names.items():
        scopes_of.setdefault(name, set()).add(scope)
    missing = sorted(name for name, _ in plan.layers if name not in scopes_of)
    if missing:
        weighted = sorted({names[scope] for _, scope in _weighted_ops(graph)})
        raise ConfigError(
            f"layer plan names layers {float_tflite.name} does not have: {missing}; its weighted layers: {weighted}"
        )
    entries = _recipe(plan, graph, names, scopes_of)
    activation_bits = ACTIVATIONS[plan.activations]
    from litert_quantizer import quantizer

    try:
        with silenced():
            engine = quantizer.Quantizer(str(float_tflite))
            engine.load_quantization_recipe(entries)
            calibrated = None
            if engine.need_calibration:
                calibrated = engine.calibrate(_calibration_data(float_tflite, calibration), num_threads=1)
            result = engine.quantize(calibrated, enable_progress_report=False)
    except Exception as error:  # the quantizer raises ValueError, RuntimeError, KeyError...
        raise StageError(f"LiteRT quantizer failed on plan {plan.to_dict()}: {first_line(error)}") from error
    quantized = bytes(result.quantized_model)
    mended = 0
    if activation_bits is not None:
        quantized, mended = mend_dead_channels(quantized, float_tflite)
    write_bytes(path, quantized)
    params: dict[str, Any] = {"plan": plan.to_dict(), "recipe_entries": [_entry_summary(e) for e in entries]}
    if mended:
        params["dead_channels_mended"] = mended
    params["ops"] = _quantized_ops(path, plan, keras_layers)
    if activation_bits is not None:
        params["calibration_samples"] = len(calibration)
    return params


_BIASED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def mend_dead_channels(quantized: bytes, float_tflite: Path) -> tuple[bytes, int]:
    """Give the output channels whose weights are all zero a usable weight scale, and their bias its true value.

    Such a channel (a unit that died in training, or one pruned away) computes its bias alone. The LiteRT quantizer
    gives it a weight scale of about 1e-11 (its floor for a zero range), so the bias scale, input scale x weight
    scale, is near 0 and the bias overflows int32: it is clipped, and the channel's output is wrong wherever it is
    used. Its int8 weights are all zero, so any scale gives the same products: the channel takes the median scale
    of its layer's live channels, and its bias is quantized again from the float file's bias at the new scale. The
    outputs are then what the float model computes, and nothing else in the file changes.

    Returns:
        The mended file's bytes (the input unchanged when nothing needed it), and how many channels were mended.
    """
    from ai_edge_litert.tools import flatbuffer_utils as fb

    model = fb.read_model_from_bytearray(bytearray(quantized))
    float_model = fb.read_model(str(float_tflite))
    float_biases = {}
    for graph in float_model.subgraphs:
        for tensor in graph.tensors:
            data = float_model.buffers[tensor.buffer].data
            if tensor.type == fb.TensorType.FLOAT32 and data is not None and len(tensor.shape) == 1:
                float_biases[tensor.name] = np.frombuffer(bytes(data), np.float32)
    codes = {getattr(fb.BuiltinOperator, name) for name in _BIASED_OPS}
    integer = {fb.TensorType.INT32: np.int32, fb.TensorType.INT64: np.int64}
    mended = 0
    for graph in model.subgraphs:
        for op in graph.operators:
            if fb.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex]) not in codes:
                continue
            if len(op.inputs) < 3 or min(op.inputs[:3]) < 0:
                continue
            source, weight, bias = (graph.tensors[i] for i in op.inputs[:3])
            if weight.type != fb.TensorType.INT8 or bias.type not in integer or bias.name not in float_biases:
                continue
            scales = np.asarray(weight.quantization.scale, np.float32)
            axis = int(weight.quantization.quantizedDimension)
            values = model.buffers[weight.buffer].data
            if values is None or source.quantization is None or scales.size != weight.shape[axis] or scales.size < 2:
                continue
            kernel = np.moveaxis(np.frombuffer(bytes(values), np.int8).reshape(weight.shape), axis, 0)
            dead = ~kernel.reshape(len(kernel), -1).any(axis=1)
            if not dead.any() or dead.all():
                continue
            dtype = integer[bias.type]
            scales[dead] = np.median(scales[~dead])
            bias_scales = np.asarray(bias.quantization.scale, np.float32).copy()
            bias_scales[dead] = float(np.asarray(source.quantization.scale)[0]) * scales[dead]
            quantized_bias = np.frombuffer(bytes(model.buffers[bias.buffer].data), dtype).copy()
            limits = np.iinfo(np.int32)
            true_bias = float_biases[bias.name][dead].astype(np.float64)
            quantized_bias[dead] = np.clip(np.round(true_bias / bias_scales[dead]), limits.min + 1, limits.max)
            weight.quantization.scale = scales
            bias.quantization.scale = bias_scales
            model.buffers[bias.buffer].data = np.frombuffer(quantized_bias.tobytes(), np.uint8)
            mended += int(dead.sum())
    if not mended:
        return quantized, 0
    return bytes(fb.convert_object_to_bytearray(model)), mended


def _weighted_ops(graph) -> list[tuple[Any, str]]:
    """(op, the layer as its scope spells it) for each op with constant float weights the quantizer handles."""
    found = []
    for op in graph.ops:
        weight = graph.weight(op)
        if _QUANTIZER_OP.get(op.op, op.op) in WEIGHTED_OPS and weight is not None and weight.type == "FLOAT32":
            found.append((op, scope_layer(graph.scope(op))))
    return found


def _config(manager, regex: str, op: str, *, weight_bits: int, activation_bits: int | None, block: int | None,
            algorithm: str = "min_max"):  # fmt: skip
    """Add one entry: dynamic (activation_bits None) or static, channelwise or blockwise."""
    from litert_quantizer import qtyping

    granularity = qtyping.QuantGranularity[f"BLOCKWISE_{block}"] if block else qtyping.QuantGranularity.CHANNELWISE
    key = WEIGHT_ALGORITHMS[algorithm]
    if activation_bits is None:
        manager.add_dynamic_config(
            regex, qtyping.TFLOperationName(op), weight_bits, granularity=granularity, algorithm_key=key
        )
    else:
        manager.add_static_config(
            regex, qtyping.TFLOperationName(op), activation_bits, weight_bits, weight_granularity=granularity,
            algorithm_key=key,
        )  # fmt: skip


def _supports(op: str, *, weight_bits: int, activation_bits: int | None, block: int | None = None) -> bool:
    """Whether the quantizer's policy has this config for this op: it refuses to add one it does not."""
    from litert_quantizer import recipe_manager

    op = _QUANTIZER_OP.get(op, op)
    try:
        _config(recipe_manager.RecipeManager(), ".*", op, weight_bits=weight_bits, activation_bits=activation_bits,
                block=block)  # fmt: skip
    except ValueError:
        return False
    return True


def _recipe(plan: LayerPlan, graph, names: dict[str, str], scopes_of: dict[str, set[str]]) -> list[dict]:
    """The quantizer's recipe for a plan, general entries first (the last matching entry wins: see the module)."""
    from litert_quantizer import qtyping, recipe_manager

    every = qtyping.TFLOperationName.ALL_SUPPORTED
    no_quantize = recipe_manager.AlgorithmName.NO_QUANTIZE
    activation_bits = ACTIVATIONS[plan.activations]
    manager = recipe_manager.RecipeManager()
    weighted = _weighted_ops(graph)
    op_types = list(dict.fromkeys(_QUANTIZER_OP.get(op.op, op.op) for op, _ in weighted))

    def add(regex: str, op: str, precision: Precision, algorithm: str = plan.weight_algorithm) -> None:
        if precision == Precision.FLOAT:
            manager.add_quantization_config(regex, op, algorithm_key=no_quantize)
            return
        bits, block = BITS[precision], None
        if precision == Precision.INT4:
            if not _supports(op, weight_bits=4, activation_bits=activation_bits):
                bits = 8  # recorded as a fallback when the file is read back
            elif plan.blockwise and _supports(op, weight_bits=4, activation_bits=activation_bits, block=plan.blockwise):
                block, algorithm = plan.blockwise, "min_max"  # OCTAV's clip is per channel, not per block
        _config(manager, regex, op, weight_bits=bits, activation_bits=activation_bits, block=block,
                algorithm=algorithm)  # fmt: skip

    default_bits = Precision.INT8 if plan.weights == Precision.INT4 else plan.weights
    add(".*", every, default_bits, "min_max")  # every op; the ops with weights then take int4 or the algorithm
    if plan.weights == Precision.INT4 or plan.weight_algorithm != "min_max":
        for op in op_types:
            add(".*", op, plan.weights)
    for layer, precision in plan.layers:
        regex = scope_regex(scopes_of[layer])
        if precision == Precision.FLOAT:
            add(regex, every, precision)  # every op of the layer, so static mode leaves its activations float too
            continue
        layer_ops = [_QUANTIZER_OP.get(op.op, op.op) for op, scope in weighted if names[scope] == layer]
        for op in dict.fromkeys(layer_ops):
            add(regex, op, precision)
    return manager.get_quantization_recipe()


def _entry_summary(entry: dict) -> dict[str, Any]:
    """A recipe entry as the step records it: regex, operation, algorithm, weight bits and granularity."""
    summary = {
        "regex": entry["regex"],
        "operation": _value(entry["operation"]),
        "algorithm": _value(entry["algorithm_key"]),
    }
    op_config = entry.get("op_config") or {}
    weight = op_config.get("weight_tensor_config")
    if weight:
        summary["weight_bits"] = int(weight["num_bits"])
        summary["granularity"] = _value(weight["granularity"]).lower()
    activation = op_config.get("activation_tensor_config")
    if activation:
        summary["activation_bits"] = int(activation["num_bits"])
    return summary


def _value(member: Any) -> str:
    """An enum member of the quantizer's as its plain string: `*`, `no_quantize`, `CHANNELWISE`."""
    return str(getattr(member, "value", member))


PRECISION_OF_TYPE = {
    "INT4": Precision.INT4,
    "INT8": Precision.INT8,
    "FLOAT32": Precision.FLOAT,
    "FLOAT16": Precision.FLOAT,
}


def _quantized_ops(path: Path, plan: LayerPlan, keras_layers: list[str] | None) -> list[dict[str, Any]]:
    """{layer, op, precision} for each weighted op of the written file, with what the plan asked where it differs."""
    from ..export.tflite_graph import read_graph

    graph = read_graph(path)
    found = []
    for op in graph.ops:
        weight = graph.weight(op)
        if _QUANTIZER_OP.get(op.op, op.op) in WEIGHTED_OPS and weight is not None:
            found.append((op, weight, scope_layer(graph.scope(op))))
    names = keras_names({scope for _, _, scope in found}, keras_layers)
    ops = []
    for op, weight, scope in found:
        layer = names[scope]
        entry = {"layer": layer, "op": op.op, "precision": str(PRECISION_OF_TYPE.get(weight.type, weight.type))}
        requested = plan.precision(layer)
        if entry["precision"] != requested:
            entry["requested"] = str(requested)
            if requested == Precision.INT4 and entry["precision"] == Precision.INT8:
                mode = "dynamic" if plan.activations == "float" else f"static {plan.activations}"
                entry["note"] = f"the LiteRT quantizer has no int4 {op.op} in {mode} mode: int8 instead"
        ops.append(entry)
    return ops


CALIBRATION_BATCH = 256


def _calibration_data(float_tflite: Path, calibration: np.ndarray) -> dict:
    """{signature: [{input name: a batch of samples}, ...]}, the form the quantizer's calibrator reads.

    One large batch, not single samples: the calibrator keeps a moving average of each step's min and max, and a
    tensor with one value per sample (the logit before a sigmoid head) has min == max at every single-sample step,
    so its range collapses to about one point and the quantized head saturates (seen on imdb_text: 50% top-1
    agreement). With all samples in one step, min and max are the calibration set's own.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(float_tflite))
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        raise StageError(f"{float_tflite.name} has {len(signatures)} signatures; the LiteRT quantizer needs one")
    ((key, signature),) = signatures.items()
    (input_name,) = signature["inputs"]
    dynamic_batch = interpreter.get_input_details()[0]["shape_signature"][0] == -1
    size = CALIBRATION_BATCH if dynamic_batch else 1
    return {key: [{input_name: calibration[i : i + size]} for i in range(0, len(calibration), size)]}


def noise_ranking(
    float_tflite: Path, quantized_tflite: Path, samples: np.ndarray, *, keras_layers: Iterable[str] | None = None
) -> list[tuple[str, float]]:
    """The weighted ops of a quantized .tflite, ranked by the error each adds: (layer, factor), largest first.

    The LiteRT quantizer's model validator runs both files on `samples` and gives each tensor's signal-to-noise
    ratio against the float model. An op's factor is the SNR of its input over the SNR of its output: how much
    noise that op itself adds, not the noise it inherits. One pass over the model, so it ranks large models whose
    layers are too many to quantize one at a time.
    """
    from litert_quantizer import model_validator
    from litert_quantizer.utils import validation_utils

    from ..export.tflite_graph import read_graph

    graph = read_graph(float_tflite)
    with silenced():
        comparison = model_validator.compare_model(
            Path(float_tflite).read_bytes(),
            Path(quantized_tflite).read_bytes(),
            _calibration_data(float_tflite, samples),
            [validation_utils.ValidationErrorMetric.SNR],
            use_xnnpack=True,
            num_threads=1,
        )
    (key,) = comparison.available_signature_keys()
    result = comparison.get_signature_comparison_result(key)
    snr = {
        name: values["snr"]
        for group in (result.input_tensors, result.intermediate_tensors, result.output_tensors)
        for name, values in group.items()
    }
    found = _weighted_ops(graph)
    names = keras_names({scope for _, scope in found}, None if keras_layers is None else list(keras_layers))
    ranking = []
    for op, scope in found:
        source = next((graph.tensors[i].name for i in op.inputs if i >= 0 and not graph.tensors[i].constant), None)
        output = graph.tensors[op.outputs[0]].name
        if source in snr and output in snr and snr[output] > 0:
            ranking.append((names[scope], float(snr[source] / snr[output])))
    return sorted(ranking, key=lambda item: -item[1])
