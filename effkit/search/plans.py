"""Per-layer plans from the sensitivity table: how far each layer is pruned at a level (`layer_targets`), and
which layers stay float or take int4 weights when a source is quantized (`quantization_plans`,
`FloatLadder`). Pure functions of the table and the budget, and a ladder fed the top-1 of each rung: nothing
here runs a model."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

from ..config import Precision
from .sensitivity import Sensitivity

MAX_LAYER_SPARSITY = 0.98
SMALL_LAYER = 0.01  # share of the prunable weights under which an unprobed layer is spared
MAX_FLOAT_LAYERS = 32  # selective int8 gives up beyond this many float ops


CHANNEL_STEP = 0.05  # the greedy allocation of channel shares moves one group by this much at a time


def channel_shares(level: float, curves: dict[str, dict], *, most: float, per: str = "channels") -> dict[str, float]:
    """Per probed channel group (named by a producer), the share of its channels to remove so that `level` of
    what `per` counts goes in all, where it costs the least: step by step, the group whose next `CHANNEL_STEP`
    costs the least validation agreement per unit removed gives it up. `per` is "channels", or what a channel
    carries (`structured.group_costs`): "params" (raw bytes, the flash goal) or "macs" (the work, the latency
    goal). A group's cost at a share is read from its curve (linear between the probes from 0 at 0, and beyond
    the last probe at twice its last slope), so a group whose curve turns steep stops giving channels where it
    turns."""
    if not curves:
        return {}
    if per not in ("channels", "params", "macs"):
        raise ValueError(f"channel shares count channels, params or macs, not {per!r}")
    sizes = {name: c["channels"] * (1 if per == "channels" else max(1, c[per])) for name, c in curves.items()}
    wanted = level * sum(sizes.values())
    shares = dict.fromkeys(curves, 0.0)

    def cost(name: str, share: float) -> float:
        points = sorted({0.0: 0.0, **{float(s): max(0.0, c) for s, c in curves[name]["costs"].items()}}.items())
        for (s0, c0), (s1, c1) in itertools.pairwise(points):
            if share <= s1:
                return c0 + (c1 - c0) * (share - s0) / (s1 - s0)
        (s0, c0), (s1, c1) = points[-2:] if len(points) > 1 else ((0.0, 0.0), points[-1])
        return c1 + 2 * (c1 - c0) / max(s1 - s0, 1e-9) * (share - s1)

    removed = 0.0
    while removed < wanted - 1e-9:
        open_groups = [name for name in curves if shares[name] + CHANNEL_STEP <= most + 1e-9]
        if not open_groups:
            break
        name = min(open_groups, key=lambda n: (cost(n, shares[n] + CHANNEL_STEP) - cost(n, shares[n])) / sizes[n])
        shares[name] = round(shares[name] + CHANNEL_STEP, 4)
        removed += CHANNEL_STEP * sizes[name]
    return shares


def layer_targets(
    level: float, sensitivity: Sensitivity | None, layers: list[tuple[str, int]], *, budget_pp: float
) -> dict[str, float]:
    """Per-layer sparsities whose weighted mean is `level`, the least sensitive layers pruned most.

    A layer's share is `level * lam * g`, where `g = 1 / (1 + drop / budget)` from the mean of its pruning curve (1
    when unmeasured) and `lam` is found by bisection so that the weighted mean is the level. It is capped by what
    its curve showed within budget (`tolerated`): a layer goes past the level only as far as it was seen to hold,
    and up to 0.98 only when it held at the highest probe. An unprobed layer under 1% of the weights is capped at
    half; without a table, every layer gets the level.
    """
    if sensitivity is None or not layers:
        return {name: level for name, _ in layers}
    weights = np.array([count for _, count in layers], dtype=float)
    drops, caps = [], []
    for name, count in layers:
        row = sensitivity.row(name)
        measured = row is not None and row.prune_drop_pp is not None
        drops.append(max(0.0, row.prune_drop_pp) if measured else 0.0)
        if measured:
            caps.append(tolerated(row, level, budget_pp))
        else:  # an unprobed layer too small to matter for size keeps at most half its weights pruned
            caps.append(MAX_LAYER_SPARSITY if count >= SMALL_LAYER * weights.sum() else min(level, 0.5))
    tolerance = 1.0 / (1.0 + np.array(drops) / max(budget_pp, 0.1))
    cap = np.array(caps)

    def mean(lam: float) -> float:
        return float(np.sum(weights * np.minimum(cap, level * lam * tolerance)) / weights.sum())

    low, high = 0.0, 1.0 / max(level, 1e-6) / max(tolerance.min(), 1e-6)
    if mean(high) < level:  # even every layer at the cap does not reach the level
        low = high
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if mean(middle) < level else (low, middle)
    shares = np.minimum(cap, level * high * tolerance)
    return {name: round(float(share), 4) for (name, _), share in zip(layers, shares, strict=True)}


def tolerated(row, level: float, budget_pp: float) -> float:
    """The most a layer may be pruned at this level: beyond the level only as far as its pruning curve showed it
    within budget (past the highest probe only when it held there too), never extrapolated from the mean alone."""
    if not row.prune_curve:
        return MAX_LAYER_SPARSITY
    probes = sorted((float(sparsity), drop) for sparsity, drop in row.prune_curve.items())
    held = [sparsity for sparsity, drop in probes if drop <= budget_pp]
    highest = max(held, default=0.0)
    if probes and highest == probes[-1][0]:
        return MAX_LAYER_SPARSITY
    return min(MAX_LAYER_SPARSITY, max(level, highest))


def fragile_layers(sensitivity: Sensitivity | None, *, budget_pp: float) -> list[str]:
    """Layers whose op alone, quantized to int8, costs more than half the budget: they stay float."""
    if sensitivity is None:
        return []
    return [
        row.layer for row in sensitivity.layers if row.int8_drop_pp is not None and row.int8_drop_pp > budget_pp / 2
    ]


def int4_layers(sensitivity: Sensitivity | None, *, max_drop: float) -> list[str]:
    """Layers measured to take int4 weights alone within `max_drop` pp."""
    if sensitivity is None:
        return []
    return [
        row.layer
        for row in sensitivity.layers
        if row.int4_supported and row.int4_drop_pp is not None and row.int4_drop_pp <= max_drop
    ]


def quantization_plans(sensitivity: Sensitivity | None, *, budget_pp: float, int4_max_drop: float) -> Iterator:
    """(label, LayerPlan): int8 weights; int4 where sensitivity allows; full-integer for latency and MCUs; and a
    wider int4 set when the budget admits more layers than `int4_max_drop` does."""
    from ..quantize.litert import LayerPlan

    fragile = fragile_layers(sensitivity, budget_pp=budget_pp)
    float_layers = tuple((layer, Precision.FLOAT) for layer in fragile)
    int4 = tuple(
        (layer, Precision.INT4) for layer in int4_layers(sensitivity, max_drop=int4_max_drop) if layer not in fragile
    )
    yield "w8", LayerPlan(weights=Precision.INT8, activations="float", layers=float_layers)
    if int4:
        yield "w4", LayerPlan(weights=Precision.INT8, activations="float", layers=float_layers + int4)
    yield "a8", LayerPlan(weights=Precision.INT8, activations="int8", layers=float_layers)
    # More int4: every layer whose int4 alone stays within the budget. On a few hundred validation samples one
    # sample is a third of a point, so the strict set can be almost empty for a model whose layers each cost a
    # sample or two; together they may still fit, which the judge measures.
    wider = tuple(
        (layer, Precision.INT4) for layer in int4_layers(sensitivity, max_drop=budget_pp) if layer not in fragile
    )
    if len(wider) > len(int4):
        yield "w4w", LayerPlan(weights=Precision.INT8, activations="float", layers=float_layers + wider)


class FloatLadder:
    """Full-integer int8 plans with more and more ops left float, until one is within budget; each rung is judged
    on validation and reported back (`record`), and no rung builds on one that did worse.

    The first order is the ops measured fragile alone, then the LiteRT validator's ranking (each op's input SNR
    over its output SNR). The SNR of one tensor need not predict what its op costs the top-1 (a float op between
    int8 ones adds a dequantize and a requantize of its own), so when a rung does not beat the best so far, the
    ops still int8 are re-ranked by their measured effect: the top-1 each one cost when it alone was quantized
    (the sensitivity table's int8 column). The next rung always grows the best set, never the one that did worse:
    keeping more ops float never ends below a rung already made.
    """

    def __init__(
        self,
        ranking: list[tuple[str, float]],
        sensitivity: Sensitivity | None,
        *,
        budget_pp: float,
        floats_needed: int,
        start_top1: float | None,
    ) -> None:
        fragile = fragile_layers(sensitivity, budget_pp=budget_pp)
        self.order = list(dict.fromkeys([*fragile, *(layer for layer, _ in ranking)]))
        self.measured = _measured_int8_order(sensitivity, self.order)
        self.ranked_by = "snr"
        self.count = max(1, len(fragile) + 1, floats_needed)
        self.best: tuple[str, ...] = ()
        self.best_top1 = start_top1
        self.tried: set[frozenset[str]] = set()
        self.limit = min(len(self.order), MAX_FLOAT_LAYERS)

    def next(self):
        """(count, ranking name, LayerPlan) of the next rung, or None when the ladder is at its end."""
        from ..quantize.litert import LayerPlan

        while self.count <= self.limit:
            grown = list(self.best) + [layer for layer in self.order if layer not in self.best]
            floats = tuple(grown[: self.count])
            if frozenset(floats) not in self.tried:
                self.tried.add(frozenset(floats))
                layers = tuple((layer, Precision.FLOAT) for layer in floats)
                return self.count, self.ranked_by, LayerPlan(weights=Precision.INT8, activations="int8", layers=layers)
            self.count *= 2
        return None

    def record(self, floats: tuple[str, ...], val_top1: float | None) -> None:
        """A rung's validation top-1 (None: it failed)."""
        better = val_top1 is not None and (self.best_top1 is None or val_top1 > self.best_top1)
        if better:
            self.best, self.best_top1 = tuple(floats), val_top1
        elif self.ranked_by == "snr" and self.measured and self.measured != self.order:
            self.order, self.ranked_by = self.measured, "measured"
            return  # the same count again, in the measured order, on the best set
        self.count *= 2


def _measured_int8_order(sensitivity: Sensitivity | None, order: list[str]) -> list[str]:
    """`order`'s ops by the top-1 each cost when it alone was quantized to int8, most first; unmeasured ones keep
    their place after the measured."""
    if sensitivity is None:
        return []
    cost = {}
    for layer in order:
        row = sensitivity.row(layer)
        if row is not None and row.int8_drop_pp is not None:
            cost[layer] = row.int8_drop_pp
    if not cost:
        return []
    return sorted(cost, key=lambda layer: -cost[layer]) + [layer for layer in order if layer not in cost]
