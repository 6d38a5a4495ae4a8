"""The CI gate: what counts as a regression between a baseline results.json and a new one.

Accuracy and size are deterministic on a given stack, so their thresholds can be tight. Latency is judged as a
ratio to a reference artifact measured in the same run (by default the float32 TFLite baseline), so a slower or
busier machine moves both figures together and does not trip the gate; only an artifact that got slower relative
to its own reference does.

Batch-1 timings of a few microseconds are below what a Python harness resolves across processes: between two runs
of the same code, fashion_mlp's float32 TFLite reference moved from 8.9 to 5.8 us and its ONNX float32 file from 20
to 39 us, so ratios moved 35-64% with nothing changed. A latency change therefore also has to exceed an absolute
floor (`latency_floor_ms`, measured at this run's speed: the reference's p50 times the growth of the ratio).

Latency ratios compare only between CPUs of one kernel class (`cpu.CpuFingerprint.isa_class`): int8 that runs at
0.37x float32 with VNNI runs at 0.99x without it. Across classes, latency changes are listed as not comparable and
not counted; accuracy, size and status are still judged.

An accuracy drop beyond `accuracy_drop_pp` counts only when it is more than a few flipped samples: when both runs
kept per-sample correctness on the same test split, the exact McNemar test must also give p < `accuracy_p_value`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .config import Format
from .report import markdown_table
from .results import ModelResult, SuiteResult, VariantResult
from .stats import paired_change
from .types import REFERENCE_VARIANT, Status


@dataclass(frozen=True)
class Thresholds:
    accuracy_drop_pp: float = 0.5  # top-1 may fall this many percentage points
    size_growth_pct: float = 2.0  # gzip bytes may grow this much
    latency_slowdown_pct: float = 30.0  # the p50 ratio to the reference artifact may grow this much
    latency_floor_ms: float = 0.02  # and the p50 must also be this much slower than the baseline's ratio predicts
    latency_reference: str = REFERENCE_VARIANT
    accuracy_p_value: float = 0.05  # ...and the paired test must find the drop this unlikely under noise

    def __post_init__(self) -> None:
        for name in (
            "accuracy_drop_pp",
            "size_growth_pct",
            "latency_slowdown_pct",
            "latency_floor_ms",
            "accuracy_p_value",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"threshold {name} must be a number >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.latency_reference, str):
            raise ValueError(f"latency_reference must be a variant name, got {self.latency_reference!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """What the gate found: regressions count; `not_counted` are changes shown but judged noise or not comparable."""

    regressions: list[dict[str, Any]] = field(default_factory=list)
    not_counted: list[dict[str, Any]] = field(default_factory=list)


def compare(
    results: SuiteResult, baseline: SuiteResult, thresholds: Thresholds, *, latency_comparable: bool = True
) -> Verdict:
    """Every regression of `results` against `baseline`, model by model and variant by variant.

    A variant that was ok and no longer is, or has disappeared, is a regression; so is a model that ran in the
    baseline and fails now. Variants new in `results` are not judged. With `latency_comparable` false (the runs'
    CPUs are of different classes), latency changes go to `not_counted`.
    """
    verdict = Verdict()
    for old_model in baseline.models:
        model = results.model(old_model.name)
        if model is None or model.status != Status.OK:
            if old_model.status == Status.OK:
                why = "not in this run" if model is None else model.error or Status.FAILED
                now = Status.FAILED if model else "missing"
                verdict.regressions.append(_row(old_model.name, "(model)", "status", Status.OK, now, why))
            continue
        reference = model.variant(model.latency_reference or thresholds.latency_reference)
        paired = _same_test_split(old_model, model)
        for old in old_model.variants:
            rows = _variant_regressions(
                model.name,
                old,
                model.variant(old.name),
                thresholds,
                reference_p50=reference.p50_ms if reference else None,
                paired_samples=paired,
            )
            for row in rows:
                if row["metric"] == "latency_ratio" and not latency_comparable:
                    row = {**row, "why": f"{row['why']}; not comparable: measured on another CPU class"}
                    verdict.not_counted.append(row)
                elif row.pop("noise", False):
                    verdict.not_counted.append(row)
                else:
                    verdict.regressions.append(row)
    return verdict


def _same_test_split(old_model: ModelResult, model: ModelResult) -> int | None:
    """The number of test samples when both runs measured the very same test split, else None."""
    if (
        old_model.test_digest
        and old_model.test_samples
        and (old_model.test_digest, old_model.test_samples)
        == (
            model.test_digest,
            model.test_samples,
        )
    ):
        return int(old_model.test_samples)
    return None


def _variant_regressions(
    model: str,
    old: VariantResult,
    new: VariantResult | None,
    limits: Thresholds,
    *,
    reference_p50: float | None,
    paired_samples: int | None = None,
) -> list[dict[str, Any]]:
    variant = old.name
    if new is None:
        return [_row(model, variant, "status", old.status, "missing", "variant no longer made")]
    if old.status == Status.OK and new.status != Status.OK:
        return [_row(model, variant, "status", Status.OK, new.status, new.error or "")]
    if new.status != Status.OK:
        return []
    found = []
    if old.top1 is not None and new.top1 is not None:
        drop = (old.top1 - new.top1) * 100
        if drop > limits.accuracy_drop_pp + 1e-9:
            why = f"-{drop:.2f} pp > {limits.accuracy_drop_pp} pp"
            row = _row(model, variant, "top1", f"{old.top1:.4f}", f"{new.top1:.4f}", why)
            if paired_samples and old.correct and new.correct:
                change = paired_change(old.correct, new.correct, paired_samples)
                noise = change.p_value >= limits.accuracy_p_value
                judged = "noise" if noise else "significant"
                row["why"] = f"{change.describe()} ({judged}: McNemar p {'>=' if noise else '<'} "
                row["why"] += f"{limits.accuracy_p_value:g})"
                row["noise"] = noise
            found.append(row)
    if old.gzip_bytes and new.gzip_bytes:
        growth = (new.gzip_bytes / old.gzip_bytes - 1) * 100
        if growth > limits.size_growth_pct:
            why = f"+{growth:.1f}% > {limits.size_growth_pct}%"
            found.append(_row(model, variant, "gzip_bytes", old.gzip_bytes, new.gzip_bytes, why))
    # Keras rows time TensorFlow's own call overhead: a reference for accuracy, not an artifact to gate on.
    if old.latency_ratio and new.latency_ratio and new.format != Format.KERAS:
        slowdown = (new.latency_ratio / old.latency_ratio - 1) * 100
        # how much slower the artifact is than its baseline ratio predicts at this run's speed (its reference's p50)
        excess_ms = reference_p50 * (new.latency_ratio - old.latency_ratio) if reference_p50 else None
        if slowdown > limits.latency_slowdown_pct and (excess_ms is None or excess_ms > limits.latency_floor_ms):
            extra = f", +{excess_ms:.3f} ms" if excess_ms is not None else ""
            why = f"+{slowdown:.0f}% > {limits.latency_slowdown_pct}%{extra}"
            found.append(_row(model, variant, "latency_ratio", old.latency_ratio, new.latency_ratio, why))
    return found


def _row(model: str, variant: str, metric: str, baseline: Any, current: Any, why: str) -> dict[str, Any]:
    baseline, current = (str(v) if isinstance(v, Status) else v for v in (baseline, current))
    return {"model": model, "variant": variant, "metric": metric, "baseline": baseline, "current": current, "why": why}


def regressions_markdown(regressions: list[dict[str, Any]]) -> str:
    rows = [(r["model"], r["variant"], r["metric"], r["baseline"], r["current"], r["why"]) for r in regressions]
    return markdown_table(("model", "variant", "metric", "baseline", "now", "why"), rows, right={3, 4})
