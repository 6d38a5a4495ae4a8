"""Per-layer plans from the sensitivity table: how far each layer is pruned at a level (`layer_targets`), and
which layers stay float or take int4 weights when a source is quantized (`quantization_plans`,
`selective_int8_order`). Pure functions of the table and the budget: nothing here runs a model."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..config import Precision
from .sensitivity import Sensitivity

MAX_LAYER_SPARSITY = 0.98
SMALL_LAYER = 0.01  # share of the prunable weights under which an unprobed layer is spared
MAX_FLOAT_LAYERS = 32  # selective int8 gives up beyond this many float ops


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
    """(label, LayerPlan): int8 weights; int4 where sensitivity allows; full-integer for latency and MCUs."""
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


def selective_int8_plans(
    ranking: list[tuple[str, float]], sensitivity: Sensitivity | None, *, budget_pp: float, floats_needed: int
) -> Iterator:
    """(count, LayerPlan) for full-integer int8 with the `count` ops adding the most error left float: 1, 2, 4...
    of them, starting where the previous source's plan ended (`floats_needed`). Ops measured fragile alone come
    first, then the validator's ranking (each op's input SNR over its output SNR)."""
    from ..quantize.litert import LayerPlan

    fragile = fragile_layers(sensitivity, budget_pp=budget_pp)
    order = list(dict.fromkeys([*fragile, *(layer for layer, _ in ranking)]))
    count = max(1, len(fragile) + 1, floats_needed)
    while count <= min(len(order), MAX_FLOAT_LAYERS):
        layers = tuple((layer, Precision.FLOAT) for layer in order[:count])
        yield count, LayerPlan(weights=Precision.INT8, activations="int8", layers=layers)
        count *= 2
