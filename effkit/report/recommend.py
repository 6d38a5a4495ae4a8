"""What compress recommends from the measured variants: the pick overall and per target, the compression ratios
that rank them, and the notes on savings the runtime does not realise."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..types import REFERENCE_VARIANT, Status, Variant
from .render import recommend
from .targets import MOBILE, beyond, int8_reference, not_slower, recommend_by_target, refusal


def recommendations(
    variants: list[Variant], *, max_accuracy_drop: float, search_pick: str | None = None, limits: Any = None
) -> tuple[str | None, dict[str, str | None]]:
    """The recommended variant and the best per target. A search's own pick (by its goal) overrides the
    recommendation, and the mobile pick when a phone can run it and it is no slower than the baseline int8 file."""
    chosen = next((v for v in variants if v.name == search_pick), None)
    if chosen is not None and beyond(chosen, MOBILE, limits) is not None:
        chosen, search_pick = None, None  # the search's pick is beyond the device's limits: the grid's rule picks
    recommended = search_pick or recommend(variants, max_accuracy_drop=max_accuracy_drop, limits=limits)
    by_target = recommend_by_target(variants, max_accuracy_drop=max_accuracy_drop, limits=limits)
    int8 = int8_reference(variants)
    if chosen is not None and refusal(chosen, MOBILE) is None and (int8 is None or not_slower(chosen, int8)):
        by_target[MOBILE] = search_pick
    return recommended, by_target


def runtime_notes(variants: list[Variant], recommended: str | None) -> list[str]:
    """Savings of the recommended artifact that its runtime does not realise (XNNPACK leaving int4 or sparse ops to
    builtin kernels), from what its steps recorded."""
    chosen = next((v for v in variants if v.name == recommended), None)
    if chosen is None:
        return []
    recorded = [note for step in chosen.steps for note in (step.params.get("xnnpack") or {}).get("notes", ())]
    return [f"{chosen.name}: {note}" for note in dict.fromkeys(recorded)]


def with_compression(variants: list[Variant]) -> list[Variant]:
    """Raw and gzip ratios against the baseline float32 TFLite artifact, when it exists."""
    reference = next((v for v in variants if v.name == REFERENCE_VARIANT and v.status == Status.OK), None)
    if reference is None:
        return list(variants)
    return [
        replace(
            v,
            compression_raw=round(reference.size_bytes / v.size_bytes, 3),
            compression_gzip=round(reference.gzip_bytes / v.gzip_bytes, 3),
        )
        if v.size_bytes and v.gzip_bytes
        else v
        for v in variants
    ]
