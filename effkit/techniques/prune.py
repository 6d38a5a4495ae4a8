"""Magnitude pruning with tfmot: wrap, fine-tune, strip. The caller's model is never modified.

The PolynomialDecay schedule is sized from the real number of training steps (tfmot's defaults prune nothing on
small data, see docs/pitfalls.md), and early stopping waits until the target sparsity is reached.

Structured m-of-n sparsity (2:4) uses tfmot's `sparsity_m_by_n`: tfmot sets the mask once, on the first training
step, from the weights' magnitudes in each group of n input channels, and keeps it for the fine-tune.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from ..config import PruneConfig
from ..errors import ConfigError, ModelError, first_line
from ..load import keras_compat
from ..load.classifier import ModelInfo
from ..load.data import Dataset
from ..runtime.keras import KerasRunner
from ..runtime.measure import top1, weight_sparsity
from .made import Made
from .train import Teacher, agreement_with, fit, teacher_of

log = logging.getLogger("effkit")


@dataclass(frozen=True)
class PruneResult(Made):
    STAGE: ClassVar[str] = "prune"

    model: Any  # tf_keras model, pruning wrappers stripped
    target_sparsity: float
    sparsity: float  # measured over the kernels tfmot prunes
    layer_sparsity: dict[str, float]
    pruned_layers: tuple[str, ...]
    epochs_run: int
    val_top1: float
    seconds: float
    path: str = "tfmot"  # who pruned: tfmot on a tf_keras model (or a Keras 3 model's bridge), or "keras3"
    m_by_n: str | None = None  # "2:4" when pruned to structured sparsity; `pruned_layers` then hold the pattern
    left_dense: dict[str, str] = field(default_factory=dict)  # layer -> why m-of-n pruning left it dense
    fine_tune: dict[str, Any] = field(default_factory=dict)  # the fine-tune's agreement with its teacher

    def step_params(self) -> dict[str, Any]:
        """What the variant's `prune` step records."""
        structured = {}
        if self.m_by_n is not None:
            structured = {"m_by_n": self.m_by_n, "m_by_n_layers": list(self.pruned_layers)}
            structured["left_dense"] = dict(self.left_dense)
        return {
            "path": self.path,
            "target_sparsity": self.target_sparsity,
            **structured,
            "sparsity": round(self.sparsity, 4),
            "layers": {name: round(value, 4) for name, value in self.layer_sparsity.items()},
            "epochs": self.epochs_run,
            "val_top1": round(self.val_top1, 4),
            **self.fine_tune,
        }


def ramp_steps(train_samples: int, config: PruneConfig) -> tuple[int, int, int]:
    """Steps per epoch, and the `frequency` and `end_step` of the sparsity ramp, sized from the real number of steps.

    The ramp spans `ramp_fraction` of the fine-tune in at least 16 mask updates (one per step when it is shorter),
    so that small data is pruned too (tfmot's default of one update per 100 steps prunes nothing on it).
    """
    steps_per_epoch = max(1, math.ceil(train_samples / config.batch_size))
    ramp = int(config.epochs * steps_per_epoch * config.ramp_fraction)
    frequency = max(1, ramp // 16)
    return steps_per_epoch, frequency, max(frequency, frequency * (ramp // frequency))


def validation_top1(model: Any, dataset: Dataset, info: ModelInfo) -> float:
    """The primary head's top-1 on the validation split."""
    primary = info.primary
    outputs = KerasRunner(model).predict(dataset.x_val)[info.heads.index(primary)]
    return top1(outputs, dataset.labels("val", [h.name for h in info.heads])[primary.name], primary.kind)


def layer_schedule(
    name: str, sparsity: float, *, targets: Mapping[str, float] | None, start: Mapping[str, float] | None
) -> tuple[float, float]:
    """(initial, final) sparsity of one layer's ramp: its own target when `targets` names it (non-uniform
    sparsity), else the overall one; it starts from the sparsity it already has (`start`, progressive pruning)."""
    final = (targets or {}).get(name, sparsity)
    initial = min((start or {}).get(name, 0.0), final)
    return initial, final


def prune(
    model: Any,
    dataset: Dataset,
    *,
    info: ModelInfo,
    sparsity: float | None = None,
    config: PruneConfig,
    seed: int = 0,
    m_by_n: tuple[int, int] | None = None,
    layer_targets: Mapping[str, float] | None = None,
    start: Mapping[str, float] | None = None,
    deadline: float | None = None,
) -> PruneResult:
    """Prune a tf_keras classifier to `sparsity`, or to m-of-n structured sparsity, and fine-tune it on the dataset's
    train split.

    Args:
        model: a tf_keras model (bridge Keras 3 models with `keras_compat.load_model` first); left unchanged.
        dataset: train split for the fine-tune, validation split for early stopping.
        info: the classifier's description; its output kind chooses the loss.
        sparsity: target share of zeros in each prunable kernel, in [0, 1).
        config: fine-tune length, learning rate and schedule shape.
        seed: fixes shuffling and dropout.
        m_by_n: (m, n), e.g. (2, 4), instead of `sparsity`: keep at most m nonzero weights in every n consecutive
            input channels of the layers tfmot can prune so (see `m_by_n_blocker`); the others stay dense.
        layer_targets: per-layer sparsity by layer name (non-uniform pruning); other layers get `sparsity`, and a
            layer whose target is 0 is left dense.
        start: the sparsity each layer already has (a model pruned to a lower level): its ramp starts there, so
            that pruning continues from that model instead of from scratch.
        deadline: a wall-clock time (`time.time()`) at which the fine-tune stops (`train.fit`); None: none.

    Returns:
        A PruneResult whose `model` is a new, stripped tf_keras model.

    Raises:
        ModelError: the model is not tf_keras, or has no layer tfmot can prune (so).
        ConfigError: neither or both of `sparsity` and `m_by_n` given.
    """
    if (sparsity is None) == (m_by_n is None):
        raise ConfigError("prune() takes either a sparsity or an m_by_n pattern")
    if not keras_compat.is_tf_keras_model(model):
        raise ModelError("prune() takes a tf_keras model; load Keras 3 models with keras_compat.load_model")
    tfk = keras_compat.tf_keras()
    tfmot = keras_compat.tfmot()
    sparsity_api = tfmot.sparsity.keras
    PruneRegistry = keras_compat.private.prune_registry()

    tfk.utils.set_random_seed(seed)
    _, frequency, end_step = ramp_steps(len(dataset.x_train), config)

    def options(name: str) -> dict[str, Any] | None:
        """The layer's pruning arguments: the m-of-n pattern, or its own ramp; None leaves it dense."""
        if m_by_n is not None:
            return {"sparsity_m_by_n": (m_by_n[1] - m_by_n[0], m_by_n[1])}  # tfmot counts the zeros
        initial, final = layer_schedule(name, sparsity, targets=layer_targets, start=start)
        if final <= 0.0:
            return None
        schedule = sparsity_api.PolynomialDecay(
            initial_sparsity=initial, final_sparsity=final, begin_step=0, end_step=end_step, frequency=frequency
        )
        return {"pruning_schedule": schedule}

    if m_by_n is not None:
        sparsity = (m_by_n[1] - m_by_n[0]) / m_by_n[1]  # in the layers that take the pattern

    pruned_layers: list[str] = []
    left_dense: dict[str, str] = {}

    def wrap(layer):
        if isinstance(layer, tfk.Model):  # a nested base (MobileNetV2 inside a transfer model): prune inside it
            return tfk.models.clone_model(layer, clone_function=wrap)
        if not (isinstance(layer, sparsity_api.PrunableLayer) or (PruneRegistry.supports(layer) and layer.weights)):
            return layer
        blocker = m_by_n_blocker(layer, m_by_n[0], keras=tfk) if m_by_n is not None else None
        if blocker is not None:
            left_dense[layer.name] = blocker
            return layer
        arguments = options(layer.name)
        if arguments is None:
            return layer
        pruned_layers.append(layer.name)
        return sparsity_api.prune_low_magnitude(layer, **arguments)

    teacher = teacher_of(
        model, dataset, info.heads, distill=config.distill
    )  # before any change: what the fine-tune learns from
    # clone_model rebuilds every layer with fresh weights: copy them, then wrap the copies.
    working = tfk.models.clone_model(model)
    working.set_weights(model.get_weights())
    try:
        wrapped = tfk.models.clone_model(working, clone_function=wrap)
    except ValueError as error:
        raise ModelError(f"tfmot cannot prune this model: {first_line(error)}") from error
    if not pruned_layers:
        what = f"to {m_by_n[0]}:{m_by_n[1]} (Dense, Conv2D)" if m_by_n else "(Dense, Conv, Embedding, ...)"
        raise ModelError(f"the model has no layer tfmot can prune {what}")
    one_shot = None
    if m_by_n is None:
        finals = {name: layer_schedule(name, sparsity, targets=layer_targets, start=start)[1] for name in pruned_layers}
        one_shot = _one_shot(working, wrapped, finals, keras=tfk)

    result = fine_tune(
        wrapped,
        dataset,
        teacher=teacher,
        keras=tfk,
        info=info,
        sparsity=sparsity,
        config=config,
        pruned_layers=tuple(pruned_layers),
        callbacks=(sparsity_api.UpdatePruningStep(),),
        finish=sparsity_api.strip_pruning,
        one_shot=one_shot,
        deadline=deadline,
    )
    if m_by_n is None:
        return result
    return replace(result, m_by_n=f"{m_by_n[0]}:{m_by_n[1]}", left_dense=left_dense)


def _one_shot(working: Any, wrapped: Any, finals: Mapping[str, float], *, keras: Any) -> Any | None:
    """The model pruned at once to each layer's final sparsity by weight magnitude, with no training: where a
    pruning fine-tune starts from in effect, and what it must beat. Made before the fine-tune trains anything; None
    when a pruned layer's weights cannot be matched (a base nested inside the model)."""
    one_shot = keras.models.clone_model(working)
    one_shot.set_weights(working.get_weights())
    try:
        for wrapper in wrapped.layers:
            inner = getattr(wrapper, "layer", None)
            if inner is None or inner.name not in finals:
                continue
            prunable = inner.get_prunable_weights()
            target = one_shot.get_layer(inner.name)
            values = target.get_weights()
            for index, weight in enumerate(inner.weights):
                if any(weight is candidate for candidate in prunable):
                    values[index] = _magnitude_pruned(values[index], finals[inner.name])
            target.set_weights(values)
    except (AttributeError, ValueError):
        return None
    return one_shot


def _magnitude_pruned(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """The tensor with its `sparsity` share of smallest-magnitude values set to zero."""
    zeros = round(sparsity * weights.size)
    if zeros <= 0:
        return weights
    flat = weights.reshape(-1).copy()
    flat[np.argsort(np.abs(flat), kind="stable")[:zeros]] = 0.0
    return flat.reshape(weights.shape)


def m_by_n_blocker(layer: Any, m: int, *, keras: Any) -> str | None:
    """Why tfmot's m-of-n pruning cannot take this layer, or None when it can.

    tfmot rearranges rank-2 (Dense) and rank-4 (Conv2D) kernels so that the groups run along the input channels,
    the last axis of the TFLite weight. Other kernels are refused or put the groups on the wrong axis: a transposed
    convolution's kernel is [h, w, out, in], a grouped convolution's input channels are split, a depthwise one has
    no prunable kernel. With at most m input channels every group already holds the pattern and nothing is pruned.
    """
    layers = keras.layers
    if isinstance(layer, (layers.Conv2DTranspose, layers.DepthwiseConv2D, layers.SeparableConv2D)):
        return f"{type(layer).__name__} is not supported for m-of-n sparsity"
    if isinstance(layer, layers.Conv2D):
        if layer.groups != 1:
            return "grouped convolution"
        inputs = layer.kernel.shape[2]
    elif isinstance(layer, layers.Dense):
        inputs = layer.kernel.shape[0]
    else:
        return f"{type(layer).__name__} is not supported for m-of-n sparsity (Dense and Conv2D are)"
    if inputs <= m:
        return f"{inputs} input channel(s): nothing to prune"
    return None


def fine_tune(
    model: Any,
    dataset: Dataset,
    *,
    keras: Any,
    info: ModelInfo,
    sparsity: float,
    config: PruneConfig,
    pruned_layers: tuple[str, ...],
    callbacks: tuple,
    finish: Callable[[Any], Any],
    path: str = "tfmot",
    teacher: Teacher | None = None,
    one_shot: Any | None = None,
    deadline: float | None = None,
) -> PruneResult:
    """The fine-tune every pruner shares: `train.fit` with the ramp's callbacks and early stopping from the end of
    the ramp, then `finish` (strip the wrappers, apply the masks a last time) and the measured result.

    Args:
        model: the model being pruned (wrapped by tfmot, or a Keras 3 clone with masks).
        callbacks: what advances the sparsity ramp and applies the masks during training.
        finish: turns the trained model into the pruned deliverable with exact zeros.
        path: which pruner this is, recorded in the step.
        teacher: the unpruned model's outputs, distilled from (`train.fit`); the best epoch after the ramp is kept.
        one_shot: the model magnitude-pruned at once to the same sparsity (`_one_shot`): the start the fine-tune is
            judged against. Its validation agreement is the step's `val_agreement_start`, and a fine-tune that ends
            no better than it returns it instead (`best_epoch` 0), as does one that the deadline stops before the
            end of its ramp.
        deadline: a wall-clock time (`time.time()`) at which the fine-tune stops (`train.fit`).
    """
    steps_per_epoch, _, end_step = ramp_steps(len(dataset.x_train), config)
    label = f"prune {sparsity:.0%}"
    log.info(
        "%s: fine-tuning %d layers (%s), sparsity ramps to target over %d of %d steps",
        label,
        len(pruned_layers),
        path,
        end_step,
        config.epochs * steps_per_epoch,
    )
    result = fit(
        model,
        dataset,
        keras=keras,
        heads=info.heads,
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        decay_rate=config.lr_decay_rate,
        patience=config.patience,
        start_from_epoch=math.ceil(end_step / steps_per_epoch),
        callbacks=callbacks,
        label=label,
        teacher=teacher,
        deadline=deadline,
    )
    pruned = finish(model)
    record = result.record()
    if one_shot is not None and teacher is not None:
        start = agreement_with(one_shot, dataset.x_val, teacher, info.heads)
        record["val_agreement_start"] = round(start, 4)
        ended = record.get("val_agreement")  # None: the deadline stopped it inside the ramp, no epoch to keep
        if ended is None or start >= ended:
            if ended is None:
                log.info("%s: the deadline came before the end of the ramp: keeping the one-shot start", label)
            else:
                log.info("%s: the fine-tune ended at %.2f%% agreement, the one-shot start had %.2f%%: keeping the "
                         "start", label, ended * 100, start * 100)  # fmt: skip
            pruned, record["val_agreement"], record["best_epoch"] = one_shot, round(start, 4), 0
    overall, per_layer = weight_sparsity(pruned)
    val_top1 = validation_top1(pruned, dataset, info)
    log.info(
        "%s: measured sparsity %.4f, val top-1 %.2f%% after %d epochs (%.1fs)",
        label,
        overall,
        val_top1 * 100,
        result.epochs_run,
        result.seconds,
    )
    return PruneResult(
        model=pruned,
        target_sparsity=sparsity,
        sparsity=overall,
        layer_sparsity=per_layer,
        pruned_layers=pruned_layers,
        epochs_run=result.epochs_run,
        val_top1=val_top1,
        seconds=result.seconds,
        path=path,
        fine_tune=record,
    )
