"""Deployment targets and the one rule that picks a variant for each: what a phone runs, what a microcontroller runs.

- `mobile`: a .tflite that LiteRT runs or an .onnx that ONNX Runtime runs. The best is the smallest gzip size
  within the accuracy budget (the download and the app bundle are compressed), then the lowest p50 latency, among
  those no slower than the run's baseline int8 TFLite file beyond timing noise (`not_slower`): a phone runs what
  it downloads, and a smaller file whose kernels are slower (int4 convolutions, dynamic-range activations) is no
  saving there. When no candidate is that fast, or the run has no int8 file, the smallest is taken.
- `mcu`: a full-integer .tflite that TFLite Micro runs, as checked op by op and loaded in its interpreter
  (`micro.check`, recorded as each TFLite variant's `micro`). The best is the smallest flash within the budget:
  the raw file, or its LUT-compressed copy when there is one (a microcontroller stores the file uncompressed),
  then the smallest measured arena, then the higher top-1 (pruning leaves the raw file's size as it was), then
  latency.

`refusal` says in one line why a target cannot take a variant; the bundle step uses it to refuse one.
Records only: nothing here imports a framework.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..config import Format
from ..errors import ConfigError
from ..types import BASELINE_SOURCE, Status, Variant, variant_name

MOBILE = "mobile"
MCU = "mcu"
NOISE_SHARE = 0.10  # a p50 this much above the int8 reference's (and NOISE_MS) is slower, not noise
NOISE_MS = 0.001
TARGETS = (MOBILE, MCU)
DESCRIPTIONS = {
    MOBILE: "LiteRT or ONNX Runtime",
    MCU: "TFLite Micro, full integer",
}


def check_target(target: str) -> str:
    """`target`, or a ConfigError that lists the known ones."""
    if target not in TARGETS:
        raise ConfigError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    return target


def refusal(variant: Variant, target: str) -> str | None:
    """Why `target` cannot take `variant`, in one line; None when it can."""
    check_target(target)
    if variant.status != Status.OK:
        why = f": {variant.error}" if variant.error else ""
        return f"{variant.name} is {variant.status}{why}"
    if target == MOBILE:
        if variant.format not in (Format.TFLITE, Format.ONNX):
            return (
                f"{variant.name} is a {variant.format} model; mobile takes a .tflite (LiteRT) or .onnx (ONNX Runtime)"
            )
        return None
    if variant.format != Format.TFLITE:
        return f"{variant.name} is a {variant.format} model; TFLite Micro runs .tflite files only"
    if not variant.micro:
        return f"{variant.name} has no TFLite Micro check in its report (made before effkit checked one)"
    if not variant.micro.get("runs"):
        return f"{variant.name} does not run on TFLite Micro: {variant.micro.get('reason') or 'no reason recorded'}"
    if not variant.micro.get("full_integer"):
        return (
            f"{variant.name} is not full-integer ({variant.quantization}): a microcontroller build takes int8 "
            "(or int16x8) weights and activations"
        )
    return None


def flash_bytes(variant: Variant) -> int | None:
    """What a microcontroller stores: the LUT-compressed file when there is one that runs, else the raw file."""
    lut = (variant.micro or {}).get("lut")
    if lut and lut.get("runs") and lut.get("flash_bytes"):
        return int(lut["flash_bytes"])
    return variant.size_bytes


def arena_bytes(variant: Variant) -> int | None:
    """The measured tensor arena of what `flash_bytes` counts (the LUT copy decodes its weights into the arena)."""
    micro = variant.micro or {}
    lut = micro.get("lut")
    if lut and lut.get("runs") and lut.get("flash_bytes"):
        return lut.get("arena_bytes")
    return micro.get("arena_bytes")


def recommend_for(
    variants: Iterable[Variant], target: str, *, max_accuracy_drop: float, limits: Any = None
) -> str | None:
    """The name of the best variant `target` can take within `max_accuracy_drop` pp of the baseline and within
    the device's `limits` (`config.Limits`: p50, flash, arena; None for none), or None."""
    check_target(target)
    variants = list(variants)
    candidates = [
        v
        for v in variants
        if refusal(v, target) is None
        and v.top1_delta_pp is not None
        and -v.top1_delta_pp <= max_accuracy_drop + 1e-9
        and (v.gzip_bytes if target == MOBILE else flash_bytes(v)) is not None
        and beyond(v, target, limits) is None
    ]
    if not candidates:
        return None

    def latency(v: Variant) -> float:
        return v.latency_ms.p50 if v.latency_ms else float("inf")

    if target == MOBILE:
        reference = int8_reference(variants)
        fast = [v for v in candidates if reference is None or not_slower(v, reference)]
        best = min(fast or candidates, key=lambda v: (v.gzip_bytes, latency(v)))
    else:
        best = min(candidates, key=lambda v: (flash_bytes(v), arena_bytes(v) or 0, -(v.top1 or 0.0), latency(v)))
    return best.name


def beyond(variant: Variant, target: str, limits: Any) -> str | None:
    """Which of the device's limits the variant exceeds on `target`, in one line; None when within all."""
    if limits is None:
        return None
    figures = {
        "p50_ms": variant.latency_ms.p50 if variant.latency_ms else None,
        "flash_bytes": variant.size_bytes if target == MOBILE else flash_bytes(variant),
        "arena_bytes": arena_bytes(variant) if target == MCU else None,
    }
    bounds = {"p50_ms": limits.latency_ms, "flash_bytes": limits.flash_bytes,
              "arena_bytes": limits.arena_bytes if target == MCU else None}  # fmt: skip
    unknown = [name for name, value in figures.items() if value is None and bounds[name] is not None]
    if unknown:  # a limit on a figure that was not measured: it cannot be said to hold
        return f"its {unknown[0].split('_')[0]} was not measured, and a limit is set on it"
    return limits.exceeded(**figures)


def int8_reference(variants: Iterable[Variant]) -> Variant | None:
    """The run's fastest baseline int8 TFLite file (converter or LiteRT quantizer): what any int8 runtime runs."""
    name = variant_name(BASELINE_SOURCE, Format.TFLITE, "int8")
    timed = [v for v in variants if v.name.startswith(name) and v.status == Status.OK and v.latency_ms]
    return min(timed, key=lambda v: v.latency_ms.p50, default=None)


def not_slower(variant: Variant, reference: Variant) -> bool:
    """Whether `variant`'s p50 is within timing noise of `reference`'s, or below it."""
    if variant.latency_ms is None:
        return False
    return variant.latency_ms.p50 <= reference.latency_ms.p50 * (1 + NOISE_SHARE) + NOISE_MS


def recommend_by_target(
    variants: Iterable[Variant], *, max_accuracy_drop: float, limits: Any = None
) -> dict[str, str | None]:
    variants = list(variants)
    return {
        target: recommend_for(variants, target, max_accuracy_drop=max_accuracy_drop, limits=limits)
        for target in TARGETS
    }
