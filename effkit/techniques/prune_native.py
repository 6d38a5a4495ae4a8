"""Magnitude pruning that runs on a Keras 3 model itself, for models tf_keras cannot rebuild (issue #15).

tfmot prunes only tf_keras models, so `prune.prune` needs the bridge. A model with a custom layer, or a layer the
bridge cannot translate (ConvNeXt's LayerScale), is pruned here instead, with tfmot's semantics:

- the weights tfmot prunes (`PRUNED_WEIGHTS`: Dense/Conv kernels, embeddings, ...), each with its own magnitude mask;
- tfmot's PolynomialDecay from 0 to the target over the same steps (`prune.ramp_steps`), masks recomputed at its
  update steps and re-applied after every optimizer step;
- the same fine-tune (`train.fit`: exponential learning-rate decay, early stopping once the target is reached);
- exact zeros in the result: the masks are applied one last time, also to weights restored by early stopping.

The caller's model is never modified: a clone is pruned. No wrappers are added, so there is nothing to strip.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import PruneConfig
from ..errors import ModelError, first_line
from ..load import keras_compat
from ..load.classifier import ModelInfo
from ..load.data import Dataset
from .prune import PruneResult, fine_tune, layer_schedule, ramp_steps
from .train import teacher_of

log = logging.getLogger("effkit")

PATH = "keras3"  # what the `prune` step records as its path

# Keras 3 layer classes (exact classes, as tfmot's PruneRegistry matches them) and the weights tfmot prunes in
# their tf_keras twins. A MultiHeadAttention's kernels are those of its query, key, value and output projections.
PRUNED_WEIGHTS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("Conv1D", "Conv2D", "Conv3D", "Conv2DTranspose", "Conv3DTranspose", "Dense"), ("kernel",)),
    "Embedding": ("embeddings",),
    "SeparableConv1D": ("pointwise_kernel",),
    "SeparableConv2D": ("pointwise_kernel",),
    "MultiHeadAttention": ("kernel",),
    **dict.fromkeys(("GRU", "LSTM", "SimpleRNN"), ("kernel", "recurrent_kernel")),
}


@dataclass(frozen=True)
class PolynomialRamp:
    """tfmot's `PolynomialDecay(initial_sparsity, final_sparsity=target, begin_step=0, power=3)` as a value."""

    target: float
    end_step: int
    frequency: int
    power: int = 3
    initial: float = 0.0

    def sparsity_at(self, step: int) -> float:
        progress = min(1.0, max(0.0, step / self.end_step))
        return self.target + (self.initial - self.target) * (1.0 - progress) ** self.power

    def updates_at(self, step: int) -> bool:
        """Whether the masks are recomputed at this step (counted from 1, one per optimizer step)."""
        return 0 <= step <= self.end_step and step % self.frequency == 0


def prune_keras3(
    model: Any,
    dataset: Dataset,
    *,
    info: ModelInfo,
    sparsity: float,
    config: PruneConfig,
    seed: int = 0,
    layer_targets: Mapping[str, float] | None = None,
    start: Mapping[str, float] | None = None,
    deadline: float | None = None,
) -> PruneResult:
    """Prune a Keras 3 classifier to `sparsity` in Keras 3 and fine-tune it on the dataset's train split.

    Args:
        model: a Keras 3 model; left unchanged.
        dataset: train split for the fine-tune, validation split for early stopping.
        info: the classifier's description; its output kind chooses the loss.
        sparsity: target share of zeros in each pruned weight, in [0, 1).
        config: fine-tune length, learning rate and schedule shape, as for `prune.prune`.
        seed: fixes shuffling and dropout.
        layer_targets, start: per-layer targets and starting sparsities, as for `prune.prune`.
        deadline: a wall-clock time (`time.time()`) at which the fine-tune stops (`train.fit`); None: none.

    Returns:
        A PruneResult whose `model` is a new Keras 3 model and whose step records `"path": "keras3"`.

    Raises:
        ModelError: the model is not Keras 3, cannot be cloned, or has no layer this pruner prunes.
    """
    if keras_compat.generation_of(model) != keras_compat.KERAS_3:
        raise ModelError("prune_keras3() takes a Keras 3 model; tf_keras models are pruned by tfmot (prune.prune)")
    keras = keras_compat.keras3()
    keras.utils.set_random_seed(seed)
    _, frequency, end_step = ramp_steps(len(dataset.x_train), config)

    def ramp(name: str) -> PolynomialRamp:
        initial, final = layer_schedule(name, sparsity, targets=layer_targets, start=start)
        return PolynomialRamp(final, end_step=end_step, frequency=frequency, initial=initial)

    teacher = teacher_of(model, dataset, info.heads, distill=config.distill)
    working = _clone(model, keras)
    targets = [(name, variable) for name, variable in prunable_weights(working, keras) if ramp(name).target > 0]
    if not targets:
        raise ModelError("the model has no layer effkit can prune in Keras 3 (Dense, Conv, Embedding, ...)")
    masks = _Masks(keras, [variable for _, variable in targets], [ramp(name) for name, _ in targets])
    pruned_layers = tuple(dict.fromkeys(name for name, _ in targets))

    def finish(trained: Any) -> Any:
        masks.apply()  # early stopping may have restored weights: the result holds exact zeros either way
        return trained

    return fine_tune(
        working,
        dataset,
        keras=keras,
        info=info,
        sparsity=sparsity,
        config=config,
        pruned_layers=pruned_layers,
        callbacks=(masks.callback(),),
        finish=finish,
        path=PATH,
        teacher=teacher,
        deadline=deadline,
    )


def prunable_weights(model: Any, keras: Any) -> list[tuple[str, Any]]:
    """(layer name, variable) of every weight this pruner prunes, nested models included."""
    classes = {getattr(keras.layers, name): names for name, names in PRUNED_WEIGHTS.items()}
    found = []
    for layer in _layers(model, keras):
        names = classes.get(type(layer), ())
        for variable in layer.weights:
            if variable.path.split("/")[-1] in names:
                found.append((layer.name, variable))
    return found


def _layers(model: Any, keras: Any):
    for layer in model.layers:
        if isinstance(layer, keras.Model):  # a nested base (a transfer model's backbone): prune inside it
            yield from _layers(layer, keras)
        else:
            yield layer


def _clone(model: Any, keras: Any) -> Any:
    """A copy with variables of its own: every layer rebuilt from its config, then the weights copied."""
    try:
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
    except Exception as error:  # a layer whose config does not rebuild it (no get_config for its arguments)
        raise ModelError(f"cannot clone the Keras 3 model to prune it: {first_line(error)}") from error
    return clone


class _Masks:
    """One magnitude mask per pruned weight: recomputed at the ramp's update steps, applied after every step."""

    def __init__(self, keras: Any, variables: list[Any], ramps: list[PolynomialRamp]):
        self.keras = keras
        self.variables = variables
        self.ramps = ramps  # one per variable: non-uniform targets, each from its own starting sparsity
        self.masks: list[Any] = [None] * len(variables)  # None: nothing pruned yet
        self.step = 0

    def update(self, step: int) -> None:
        """tfmot's rule: keep the round(n * (1 - sparsity)) largest magnitudes (at least one), and their ties."""
        ops = self.keras.ops
        for index, (variable, ramp) in enumerate(zip(self.variables, self.ramps, strict=True)):
            if not ramp.updates_at(step):
                continue
            sparsity = ramp.sparsity_at(step)
            magnitudes = ops.abs(variable.value)
            size = math.prod(variable.shape)
            keep = max(round(size * (1.0 - sparsity)), 1)
            threshold = ops.top_k(ops.reshape(magnitudes, (-1,)), keep, sorted=True)[0][keep - 1]
            self.masks[index] = ops.cast(ops.greater_equal(magnitudes, threshold), variable.dtype)

    def apply(self) -> None:
        for variable, mask in zip(self.variables, self.masks, strict=True):
            if mask is not None:
                variable.assign(variable.value * mask)

    def after_step(self) -> None:
        self.step += 1
        self.update(self.step)
        self.apply()

    def callback(self) -> Any:
        masks = self

        class ApplyMasks(self.keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                masks.after_step()

        return ApplyMasks()
