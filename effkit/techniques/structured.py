"""Structured pruning: remove a share of the channels of every channel group, then fine-tune the smaller model.

The surgery is `channels.remove_channels` (dependency groups, in tf_keras and Keras 3 alike). Which channels go is
decided in two steps:

- *Within a group*, by weight norm: each channel's L2 norm over every producer of the group (the norms of each
  producer scaled to a mean of 1, so that a wide layer does not outvote a narrow one), BatchNormalization's scale
  folded in where one follows.
- *Between groups*, by measured sensitivity (`group_costs`): each group alone has its lowest-norm share masked to
  zero, and the drop in validation top-1 agreement with the model is what it costs. The caller (the search) turns
  the costs into per-group shares; `prune_channels` takes them, or one share for all.

The fine-tune is the one every fine-tune shares (`train.fit` with the model as teacher: distilled, BatchNormalization
frozen, the best epoch by validation agreement kept). The model right after the surgery competes with every epoch,
so the step never ends below its own start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..config import MAX_CHANNEL_SHARE, PruneConfig
from ..errors import ModelError
from ..load import keras_compat
from ..load.classifier import ModelInfo
from ..load.data import Dataset
from .channels import ChannelGraph, ChannelGroup, channel_graph, channel_weights, mask_channels, remove_channels
from .made import Made
from .prune import validation_top1
from .train import agreement_with, fine_tune_from, teacher_of

log = logging.getLogger("effkit")

MAX_SHARE = MAX_CHANNEL_SHARE  # no group loses more than this share of its channels
PROBE_SHARES = (0.25, 0.5, 0.75)  # a group's cost curve: its weakest channels masked at each share
MAX_PROBED_GROUPS = 24  # the widest groups are probed; the others are removed at the level itself
LEARNING_RATE_FACTOR = 0.5  # the fine-tune of a model that keeps its trained channels needs less than from scratch


@dataclass(frozen=True)
class StructuredResult(Made):
    STAGE: ClassVar[str] = "prune_channels"

    model: Any  # a new model of the same Keras generation, with fewer channels
    share: float  # the share of each group's channels asked for (or the mean of the per-group shares)
    channels: dict[str, tuple[int, int]]  # producer: (channels before, after)
    frozen: dict[str, str]  # producer: why its channels all stay
    params: tuple[int, int]  # before, after
    epochs_run: int
    val_top1: float
    seconds: float
    fine_tune: dict[str, Any] = field(default_factory=dict)

    def step_params(self) -> dict[str, Any]:
        """What the variant's `prune_channels` step records."""
        return {
            "structured": True,
            "share": round(self.share, 4),
            "params": list(self.params),
            "channels": {name: list(pair) for name, pair in self.channels.items() if pair[0] != pair[1]},
            "frozen": dict(self.frozen),
            "epochs": self.epochs_run,
            "val_top1": round(self.val_top1, 4),
            **self.fine_tune,
        }


def channel_order(model: Any, group: ChannelGroup) -> np.ndarray:
    """The group's channels, least important first: L2 norms of each producer's output weights, each producer's
    scaled to a mean of 1 and summed."""
    score = np.zeros(group.size)
    for name in group.producers:
        layer = model.get_layer(name)
        values = layer.get_weights()
        kernel = values[1] if type(layer).__name__.startswith("SeparableConv") else values[0]
        norms = np.sqrt(np.sum(np.square(kernel.reshape(-1, kernel.shape[-1])), axis=0))
        score += norms / (norms.mean() or 1.0)
    return np.argsort(score, kind="stable")


def keep_plan(model: Any, graph: ChannelGraph, shares: Mapping[int, float]) -> dict[int, list[int]]:
    """For each group with a share, the channels that stay: all but its `share` least important (at least one)."""
    plan = {}
    for group in graph.prunable():
        share = min(MAX_SHARE, max(0.0, float(shares.get(group.index, 0.0))))
        removed = min(group.size - 1, round(share * group.size))
        if removed > 0:
            plan[group.index] = sorted(int(c) for c in channel_order(model, group)[removed:])
    return plan


def group_costs(
    model: Any,
    dataset: Dataset,
    info: ModelInfo,
    shares: tuple[float, ...] = PROBE_SHARES,
    *,
    max_groups: int = MAX_PROBED_GROUPS,
    out_of_time: Callable[[], bool] = lambda: False,
) -> dict[str, dict[str, Any]]:
    """Each prunable group's cost curve, by the name of its first producer: `{"channels": n, "params": p, "macs":
    m, "costs": {share: pp}}`, the validation top-1 agreement lost when its `share` least important channels alone
    are masked to zero, and what one of its channels carries (`channels.channel_weights`).
    The `max_groups` groups with the most channels are probed, while not `out_of_time()`. Reads only the validation
    split."""
    graph = channel_graph(model)
    teacher = teacher_of(model, dataset, info.heads)
    carried = channel_weights(model, graph)
    curves = {}
    for group in sorted(graph.prunable(), key=lambda g: -g.size)[:max_groups]:
        costs = {}
        for share in shares:
            if out_of_time():
                return curves
            plan = keep_plan(model, graph, {group.index: share})
            if plan:
                masked = mask_channels(model, plan, graph)
                costs[share] = round((1.0 - agreement_with(masked, dataset.x_val, teacher, info.heads)) * 100, 3)
        if costs:
            params, macs = carried[group.index]
            curves[group.producers[0]] = {"channels": group.size, "params": params, "macs": macs, "costs": costs}
    return curves


def prune_channels(
    model: Any,
    dataset: Dataset,
    *,
    info: ModelInfo,
    share: float,
    config: PruneConfig,
    seed: int = 0,
    group_shares: Mapping[str, float] | None = None,
    epochs: int | None = None,
    deadline: float | None = None,
) -> StructuredResult:
    """Remove `share` of every channel group's channels (the least important by weight norm) and fine-tune.

    Args:
        model: a tf_keras or Keras 3 Sequential or functional model; left unchanged.
        dataset: train split for the fine-tune, validation split for its early stopping.
        info: the classifier's description; the heads keep every unit.
        share: the share of each group's channels removed, in (0, MAX_SHARE].
        config: the fine-tune's batch size, patience, epochs and learning rate (used at half).
        seed: fixes shuffling and dropout.
        group_shares: per group, by the name of any of its producers, a share that replaces `share`.
        epochs: fine-tune epochs; `config.epochs` by default, 0 for the surgery alone.
        deadline: a wall-clock time (`time.time()`) at which the fine-tune stops (`train.fit`).

    Raises:
        ModelError: no group can shrink (every one reaches an output or a layer the surgery cannot follow).
    """
    if not 0.0 < share <= MAX_SHARE:
        raise ModelError(f"the share of channels removed must be in (0, {MAX_SHARE}], got {share}")
    keras = keras_compat.keras_module(keras_compat.generation_of(model))
    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    graph = channel_graph(model)
    groups = graph.prunable()
    if not groups:
        reasons = "; ".join(f"{name}: {why}" for name, why in list(graph.frozen().items())[:3])
        raise ModelError(f"no channel group can shrink ({reasons})")
    by_producer = {name: group.index for group in groups for name in group.producers}
    shares = {group.index: share for group in groups}
    for name, value in (group_shares or {}).items():
        if name in by_producer:
            shares[by_producer[name]] = value
    plan = keep_plan(model, graph, shares)
    if not plan:
        raise ModelError(f"removing {share:.0%} of the channels leaves every group as it is (too few channels)")
    smaller = remove_channels(model, plan, graph)
    channels = {}
    for group in groups:
        for name in group.producers:
            channels[name] = (group.size, len(plan.get(group.index, range(group.size))))
    params = (int(model.count_params()), int(smaller.count_params()))
    label = f"channels {share:.0%}"
    log.info("%s: %d of %d groups shrink, %d -> %d parameters", label, len(plan), len(groups), *params)
    epochs = config.epochs if epochs is None else epochs
    epochs_run, fine_tune = 0, {}
    if epochs > 0:
        result = fine_tune_from(
            model,
            smaller,
            dataset,
            keras=keras,
            heads=info.heads,
            config=config,
            epochs=epochs,
            label=label,
            learning_rate_factor=LEARNING_RATE_FACTOR,
            include_start=True,  # the surgery's model competes with every epoch: never below its own start
            deadline=deadline,
        )
        epochs_run, fine_tune = result.epochs_run, result.record()
    val_top1 = validation_top1(smaller, dataset, info)
    seconds = time.perf_counter() - started
    log.info("%s: val top-1 %.2f%% after %d epochs (%.1fs)", label, val_top1 * 100, epochs_run, seconds)
    mean_share = float(np.mean([shares[g.index] for g in groups]))
    return StructuredResult(smaller, mean_share, channels, graph.frozen(), params, epochs_run, val_top1, seconds,
                            fine_tune)  # fmt: skip
