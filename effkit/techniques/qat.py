"""Quantization-aware training with tfmot that keeps a model's zeros or clusters, and its int8 conversion.

The fallback when post-training quantization of a sparse or clustered model costs too much accuracy: tfmot's
prune-preserving (PQAT) or cluster-preserving (CQAT) schemes fake-quantize the weights during a short fine-tune
without letting a zero or a shared value drift, and the TFLite converter turns the result into an int8 file.

tfmot's QAT knows only some layers. Rather than refuse a model for a `Rescaling` at its input, effkit annotates
what tfmot supports, gives weightless layers it does not (Rescaling, random augmentation) an output quantizer so
the next layer's input range is learned too, and leaves layers with weights it does not support (Embedding) in
float, to be quantized by the converter's calibration.
"""

from __future__ import annotations

import functools
import itertools
import logging
import tempfile
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..config import Format, PruneConfig, Quant, parse_enum
from ..console import silenced
from ..errors import ModelError, first_line
from ..load import keras_compat
from ..load.classifier import ModelInfo, output_names
from ..load.data import Dataset
from .made import Made
from .prune import validation_top1
from .train import fine_tune_from

log = logging.getLogger("effkit")

LEARNING_RATE_FACTOR = 0.1  # QAT fine-tunes at a tenth of the pruning fine-tune's rate
QUANT_PREFIX = "quant_"  # tfmot names each QuantizeWrapper after its layer with this prefix


class Preserve(StrEnum):
    SPARSITY = "sparsity"  # Default8BitPrunePreserveQuantizeScheme: zeros stay zero
    CLUSTERS = "clusters"  # Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True): values stay shared
    NONE = "none"  # the default 8-bit scheme


@dataclass(frozen=True)
class QatResult(Made):
    STAGE: ClassVar[str] = "qat"

    model: Any  # tf_keras QAT model (quantize wrappers), ready for the TFLite converter
    preserve: str  # "sparsity", "clusters" or "none"
    epochs_run: int
    val_top1: float
    seconds: float
    quantized_layers: tuple[str, ...] = ()  # layers whose weights are fake-quantized
    float_layers: tuple[str, ...] = ()  # layers with weights tfmot's QAT does not support: left in float
    output_names: tuple[str, ...] = ()  # the source model's output names (the wrappers rename output layers)
    fine_tune: dict[str, Any] = field(default_factory=dict)  # the fine-tune's agreement with its teacher

    def step_params(self) -> dict[str, Any]:
        """What the variant's `qat` step records."""
        return {
            "preserve": str(self.preserve),
            "quantized_layers": len(self.quantized_layers),
            "float_layers": list(self.float_layers),
            "epochs": self.epochs_run,
            "val_top1": round(self.val_top1, 4),
            **self.fine_tune,
        }


def quantization_aware(
    model: Any,
    dataset: Dataset,
    *,
    info: ModelInfo,
    preserve: str,
    config: PruneConfig,
    seed: int = 0,
    epochs: int | None = None,
    deadline: float | None = None,
) -> QatResult:
    """Fine-tune a tf_keras classifier with fake-quantized int8 weights and activations.

    Args:
        model: a tf_keras model, usually pruned or clustered; left unchanged.
        dataset: train split for the fine-tune, validation split for early stopping and `val_top1`. The test split
            is never read.
        info: the classifier's description; its output kind chooses the loss.
        preserve: "sparsity" (keep zeros), "clusters" (keep each kernel's shared values and zeros) or "none".
        config: the fine-tune's batch size, patience, epochs and learning rate (used at a tenth).
        seed: fixes shuffling and dropout.
        epochs: fine-tune epochs; `config.epochs` by default. The fake quantizers learn their ranges here, so a QAT
            model is only usable after at least one epoch.
        deadline: a wall-clock time (`time.time()`) at which the fine-tune stops (`train.fit`); None: none.

    Returns:
        A QatResult whose `model` holds tfmot's quantize wrappers; convert it with `convert_qat`.

    Raises:
        ConfigError: an unknown `preserve`.
        ModelError: the model is not tf_keras, nests a model, or has no layer tfmot can quantize (one line naming
            the layers).
    """
    preserve = parse_enum(Preserve, str(preserve), what="QAT preservation")
    if not keras_compat.is_tf_keras_model(model):
        raise ModelError(
            "quantization_aware() takes a tf_keras model; load Keras 3 models with keras_compat.load_model"
        )
    tfk = keras_compat.tf_keras()
    quantization = keras_compat.tfmot().quantization.keras
    scheme = _scheme(preserve)
    registries = (
        scheme.get_quantize_registry(),
        quantization.default_8bit.Default8BitQuantizeScheme().get_quantize_registry(),
    )
    output_config = _output_quantize_config()

    tfk.utils.set_random_seed(seed)
    working = tfk.models.clone_model(model)
    working.set_weights(model.get_weights())
    working = flatten(working, tfk)  # tfmot refuses a model inside a model (a transfer model's base)

    quantized: list[str] = []
    float_layers: list[str] = []
    annotated: set[str] = set()
    inbound = _inbound(working, tfk)
    integer_consumers = _integer_consumers(working, inbound, tfk)

    def annotate(layer):
        if layer.name in integer_consumers:  # a quantizer on token ids would be wrong (tfmot raises a TypeError)
            choice = None
        elif all(registry.supports(layer) for registry in registries):
            choice = quantization.quantize_annotate_layer(layer)
            if layer.trainable_weights:
                quantized.append(layer.name)
        elif _folds_into(layer, annotated, inbound, working, tfk):
            choice = quantization.quantize_annotate_layer(layer)
        elif not layer.weights:
            choice = quantization.quantize_annotate_layer(layer, quantize_config=output_config())
        else:
            choice = None
        if choice is None:
            if layer.weights:
                float_layers.append(f"{layer.name} ({type(layer).__name__})")
            return layer
        annotated.add(layer.name)
        return choice

    annotated_model = tfk.models.clone_model(working, clone_function=annotate)
    if not quantized:
        left = ", ".join(float_layers) or "no layer has weights"
        raise ModelError(f"tfmot's QAT supports no layer of this model with weights; left float: {left}")
    try:
        # silenced: the cluster-preserving scheme warns about every layer that was never clustered
        with quantization.quantize_scope({output_config.__name__: output_config}), silenced():
            qat_model = quantization.quantize_apply(annotated_model, scheme)
    except (ValueError, RuntimeError, TypeError) as error:
        raise ModelError(f"tfmot's QAT cannot quantize this model: {first_line(error)}") from error
    if float_layers:
        log.info("qat: left in float (no QAT support): %s", ", ".join(float_layers))

    label = f"qat ({preserve})"
    epochs = config.epochs if epochs is None else epochs
    result = fine_tune_from(
        model,
        qat_model,
        dataset,
        keras=tfk,
        heads=info.heads,
        config=config,
        epochs=max(1, epochs),
        label=label,
        learning_rate_factor=LEARNING_RATE_FACTOR,
        deadline=deadline,
    )
    started = time.perf_counter()
    val_top1 = validation_top1(qat_model, dataset, info)
    seconds = result.seconds + time.perf_counter() - started
    log.info("%s: %d layers quantized, val top-1 %.2f%% after %d epochs (%.1fs)", label, len(quantized),
             val_top1 * 100, result.epochs_run, seconds)  # fmt: skip
    return QatResult(
        model=qat_model,
        preserve=preserve,
        epochs_run=result.epochs_run,
        val_top1=val_top1,
        seconds=seconds,
        quantized_layers=tuple(quantized),
        float_layers=tuple(float_layers),
        output_names=tuple(output_names(model)),
        fine_tune=result.record(),
    )


@dataclass(frozen=True)
class QatInt8:
    """A QAT fine-tune and its int8 file, as `qat_int8` returns them across a process boundary (a QAT model does
    not pickle): the fine-tune's and the file's step parameters, and the QAT model's figures."""

    qat_params: dict[str, Any]
    file_params: dict[str, Any]
    sparsity: float  # the QAT model's share of zeros in its prunable kernels
    outputs: list[np.ndarray] | None  # the QAT Keras model's outputs on `predict_on`, per head


def qat_int8(
    model: Any,
    dataset: Dataset,
    path: Path,
    *,
    info: ModelInfo,
    preserve: str,
    config: PruneConfig,
    seed: int = 0,
    epochs: int | None = None,
    calibration: np.ndarray | None = None,
    predict_on: np.ndarray | None = None,
    deadline: float | None = None,
) -> QatInt8:
    """`quantization_aware`, then `convert_qat` to `path`, in one call that a child process can run; with
    `predict_on`, also the QAT Keras model's outputs on it (what the int8 file must reproduce)."""
    from ..runtime import open_runner
    from ..runtime.measure import weight_sparsity

    result = quantization_aware(
        model, dataset, info=info, preserve=preserve, config=config, seed=seed, epochs=epochs, deadline=deadline
    )
    params = convert_qat(result, path, calibration=calibration)
    outputs = None
    if predict_on is not None:
        outputs = open_runner(result.model, Format.KERAS, outputs=info.output_names).predict(predict_on)
    return QatInt8(result.step_params(), params, weight_sparsity(result.model)[0], outputs)


def convert_qat(
    result_or_model: QatResult | Any, path: Path, *, calibration: np.ndarray | None = None
) -> dict[str, Any]:
    """Write the int8 .tflite of a QAT model with the TFLite converter and say what is in it.

    With `calibration`, the file is full-integer like the converter's int8 recipe (int8 input for float inputs,
    int8 output), and tensors QAT left without a range (layers kept in float) are calibrated on these samples.
    Without it, the file takes and returns float32 and ops without a learned range stay float.

    Returns:
        The step's parameters: the input/output type, how many kernels are int8 or still float, the share of zeros
        in the int8 kernels, and the largest number of distinct values in any channel of an int8 kernel.

    Raises:
        StageError: the converter failed.
    """
    from ..export.tflite import constant_kernels, serving_saved_model
    from ..quantize.tflite_converter import quantize_tflite
    from .cluster import distinct_values

    model = result_or_model.model if isinstance(result_or_model, QatResult) else result_or_model
    names = list(result_or_model.output_names) if isinstance(result_or_model, QatResult) else None
    with tempfile.TemporaryDirectory(prefix="effkit-qat-") as scratch:
        source = serving_saved_model(model, Path(scratch) / "serving", names=names or _source_output_names(model))
        quantize_tflite(
            source,
            path,
            quantization=Quant.INT8 if calibration is not None else Quant.DYNAMIC,
            calibration=calibration,
        )
    kernels = constant_kernels(path)
    int8 = {layer: tensors for layer, tensors in kernels.items() if all(t.dtype == np.int8 for t in tensors)}
    values = [t.reshape(-1) for tensors in int8.values() for t in tensors]
    zeros = float(np.mean(np.concatenate(values) == 0)) if values else 0.0
    distinct = distinct_values(path)
    return {
        "calibration_samples": None if calibration is None else len(calibration),
        "io": "int8" if calibration is not None else "float32",
        "int8_kernels": len(int8),
        "float_kernels": sorted(set(kernels) - set(int8)),
        "kernel_sparsity": round(zeros, 4),
        "max_distinct": max((distinct[layer] for layer in int8), default=None),
    }


def flatten(model: Any, tfk: Any) -> Any:
    """The same network as one functional model over the same layer objects: each nested model's layers are
    called in its place. Layers keep their weights; the call's own arguments to the nested model (such as
    `training=False`) are dropped, which a frozen BatchNormalization does not need (it runs in inference mode).

    Raises:
        ModelError: a nested model is subclassed, so its graph cannot be walked.
    """
    if not any(isinstance(layer, tfk.Model) for layer in model.layers):
        return model
    inputs = [tfk.Input(type_spec=tensor.type_spec, name=tensor.name.split(":")[0]) for tensor in model.inputs]
    outputs = _call_graph(model, inputs, tfk)
    return tfk.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)


def _call_graph(model: Any, inputs: list, tfk: Any) -> list:
    """Call `model`'s layers on `inputs` as its graph does (nested models inlined); its output tensors, in order."""
    if isinstance(model, tfk.Sequential):
        (tensor,) = inputs
        for layer in model.layers:
            (tensor,) = _call_layer(layer, [tensor], {}, tfk)
        return [tensor]
    if not _is_graph(model):
        raise ModelError(f"cannot flatten the subclassed model {model.name!r} nested in this model")
    config = model.get_config()
    tensors = {tuple(ref[:3]): tensor for ref, tensor in zip(config["input_layers"], inputs, strict=True)}
    pending = [
        (entry["name"], index + _first_node(model.get_layer(entry["name"]), tfk), node)
        for entry in config["layers"]
        if entry["class_name"] != "InputLayer"
        for index, node in enumerate(entry["inbound_nodes"])
    ]
    while pending:
        waiting = []
        for name, index, node in pending:
            refs = [tuple(ref[:3]) for ref in node]
            if not all(ref in tensors for ref in refs):
                waiting.append((name, index, node))
                continue
            kwargs = node[0][3] if node and len(node[0]) > 3 else {}
            for position, tensor in enumerate(
                _call_layer(model.get_layer(name), [tensors[r] for r in refs], kwargs, tfk)
            ):
                tensors[name, index, position] = tensor
        if len(waiting) == len(pending):
            raise ModelError(f"cannot flatten {model.name!r}: its graph does not resolve")
        pending = waiting
    return [tensors[tuple(ref[:3])] for ref in config["output_layers"]]


def _is_graph(model: Any) -> bool:
    return bool(getattr(model, "_is_graph_network", False))


def _first_node(layer: Any, tfk: Any) -> int:
    """The index a config gives a layer's first call: 1 for a functional model, whose node 0 links its own input
    to its output and is left out of the config (tf_keras' `_should_skip_first_node`)."""
    return 1 if isinstance(layer, tfk.Model) and _is_graph(layer) else 0


def _call_layer(layer: Any, inputs: list, kwargs: dict, tfk: Any) -> list:
    if isinstance(layer, tfk.Model):
        return _call_graph(layer, inputs, tfk)
    outputs = layer(inputs[0] if len(inputs) == 1 else inputs, **kwargs)
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _scheme(preserve: Preserve) -> Any:
    tfmot = keras_compat.tfmot()
    if preserve == Preserve.SPARSITY:
        return tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    if preserve == Preserve.CLUSTERS:
        return tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()


def _integer_consumers(model: Any, inbound: dict[str, list[str]], tfk: Any) -> set[str]:
    """The layers that take an integer model input (token ids), which no quantizer may touch."""
    if isinstance(model, tfk.Sequential):
        return {model.layers[0].name} if model.inputs[0].dtype.is_integer else set()
    integer = {
        ref[0]
        for ref, tensor in zip(model.get_config()["input_layers"], model.inputs, strict=True)
        if tensor.dtype.is_integer
    }
    return {name for name, sources in inbound.items() if integer & set(sources)}


def _folds_into(layer: Any, annotated: set[str], inbound: dict[str, list[str]], model: Any, tfk: Any) -> bool:
    """A BatchNormalization right after an annotated linear convolution or Dense: tfmot folds it into that layer
    (the default 8-bit scheme's layout transforms), though its registry does not list it."""
    if not isinstance(layer, tfk.layers.BatchNormalization) or len(inbound.get(layer.name, ())) != 1:
        return False
    (source,) = inbound[layer.name]
    if source not in annotated:
        return False
    source_layer = model.get_layer(source)
    kinds = (tfk.layers.Conv2D, tfk.layers.DepthwiseConv2D, tfk.layers.Dense)
    return isinstance(source_layer, kinds) and source_layer.get_config().get("activation") == "linear"


def _inbound(model: Any, tfk: Any) -> dict[str, list[str]]:
    """Each layer's input layers by name, in this model's graph (a layer object may be in other graphs too)."""
    if isinstance(model, tfk.Sequential):
        names = [layer.name for layer in model.layers]
        return {name: [previous] for previous, name in itertools.pairwise(names)}
    return {
        entry["name"]: [ref[0] for node in entry["inbound_nodes"] for ref in node]
        for entry in model.get_config()["layers"]
    }


def _source_output_names(model: Any) -> list[str]:
    """A QAT model's output names as its source model had them (tfmot's wrappers add `quant_`)."""
    names = []
    for name in output_names(model):
        layer = model.get_layer(name)
        wrapped = type(layer).__name__.startswith("QuantizeWrapper") and name.startswith(QUANT_PREFIX)
        names.append(name[len(QUANT_PREFIX) :] if wrapped else name)
    return names


@functools.cache
def _output_quantize_config() -> type:
    """A tfmot QuantizeConfig that fake-quantizes a layer's output and nothing else (weights stay float)."""
    quantization = keras_compat.tfmot().quantization.keras

    class OutputQuantizeConfig(quantization.QuantizeConfig):
        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            quantizer = quantization.quantizers.MovingAverageQuantizer
            return [quantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

        def get_config(self):
            return {}

    return OutputQuantizeConfig
