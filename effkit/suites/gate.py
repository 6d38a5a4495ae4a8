"""The CI gate: what counts as a regression between a baseline results.json and a new one.

Accuracy and size are deterministic on a given stack, so their thresholds can be tight. Latency is judged as a
ratio to a reference artifact measured in the same run (by default the float32 TFLite baseline), so a slower or
busier machine moves both figures together and does not trip the gate; only an artifact that got slower relative
to its own reference does.

Batch-1 timings of a few microseconds are below what a Python harness resolves across processes: between two runs
of the same code, fashion_mlp's float32 TFLite reference moved from 8.9 to 5.8 us and its ONNX float32 file from 20
to 39 us, so ratios moved 35-64% with nothing changed. A latency change therefore also has to exceed an absolute
floor (`latency_floor_ms`, measured at this run's speed: the reference's p50 times the growth of the ratio).

Latency ratios compare only between CPUs whose kernels match (`cpu.CpuFingerprint.kernels_key`: the kernel-selecting
features, vendor, family and model). A class is too coarse: int8 that runs at 0.37x float32 with VNNI runs at 0.99x
without it, and ONNX Runtime's ConvInteger ratios moved 44% between two EPYC generations of one class. Across
fingerprints, latency changes are listed as not comparable and not counted; accuracy, size and status are still
judged.

A latency suspect on a matching CPU is timed again in rounds (`bench.baselines.latency_rounds`); it counts only
when its median ratio still exceeds the threshold and the floor, and a one-sided test over the rounds finds it
slower than the baseline allows (p < `latency_p_value`). A baseline keeps rounds of its own (`effkit bench
--update-baseline` times every variant so): then the test is Mann-Whitney's, the run's rounds against the
baseline's scaled by the threshold, so the baseline's own spread counts. Against a baseline without rounds, the
exact sign test of the rounds against its one ratio: with 9 rounds, at least 8 must be slower than it allows.
Measured on an AVX2 EPYC between two quiet runs of the same code: an ONNX ConvInteger ratio of 1.82 in one, 2.55 in
every re-timed round of the other.

An accuracy drop beyond `accuracy_drop_pp` counts only when it is more than a few flipped samples: when both runs
kept per-sample correctness on the same test split, the exact McNemar test must also give p < `accuracy_p_value`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import Format
from ..report.render import markdown_table
from ..report.results import ModelResult, SuiteResult, VariantResult
from ..stats import paired_change, rank_test, sign_test
from ..types import REFERENCE_VARIANT, Status


@dataclass(frozen=True)
class Thresholds:
    accuracy_drop_pp: float = 0.5  # top-1 may fall this many percentage points
    size_growth_pct: float = 2.0  # gzip bytes may grow this much
    latency_slowdown_pct: float = 30.0  # the p50 ratio to the reference artifact may grow this much
    latency_floor_ms: float = 0.02  # and the p50 must also be this much slower than the baseline's ratio predicts
    latency_reference: str = REFERENCE_VARIANT
    accuracy_p_value: float = 0.05  # ...and the paired test must find the drop this unlikely under noise
    latency_p_value: float = 0.05  # ...and the sign test over re-timed rounds must find the slowdown this unlikely

    def __post_init__(self) -> None:
        for name in (
            "accuracy_drop_pp",
            "size_growth_pct",
            "latency_slowdown_pct",
            "latency_floor_ms",
            "accuracy_p_value",
            "latency_p_value",
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
    results: SuiteResult, baseline: SuiteResult, thresholds: Thresholds, *, latency_incomparable: str | None = None
) -> Verdict:
    """Every regression of `results` against `baseline`, model by model and variant by variant.

    A variant that was ok and no longer is, or has disappeared, is a regression; so is a model that ran in the
    baseline and fails now. Variants new in `results` are not judged. With `latency_incomparable` (why the runs'
    latencies do not compare: their CPUs differ), latency changes go to `not_counted` with that reason.
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
            new = model.variant(old.name)
            rows = _variant_regressions(
                model.name,
                old,
                new,
                thresholds,
                reference_p50=reference.p50_ms if reference else None,
                paired_samples=paired,
            )
            made_otherwise = _made_otherwise(old, new, cpu_differs=latency_incomparable is not None)
            for row in rows:
                if made_otherwise and row["metric"] in ("top1", "gzip_bytes"):
                    row.pop("noise", None)
                    verdict.not_counted.append({**row, "why": f"{row['why']}; not comparable: {made_otherwise}"})
                elif row["metric"] == "latency_ratio" and latency_incomparable:
                    row.pop("noise", None)
                    row = {**row, "why": f"{row['why']}; not comparable: {latency_incomparable}"}
                    verdict.not_counted.append(row)
                elif row.pop("noise", False):
                    verdict.not_counted.append(row)
                else:
                    verdict.regressions.append(row)
    return verdict


def _made_otherwise(old: VariantResult, new: VariantResult | None, *, cpu_differs: bool) -> str | None:
    """Why `new` is another artifact than `old` although made with the same settings: its steps chose other
    settings for its CPU (ONNX Runtime's integer types). A baseline from before effkit recorded those choices
    cannot tell, so on another CPU its quantized rows are not compared either."""
    if new is None or (not new.chosen_for_cpu and not old.chosen_for_cpu):
        return None
    if old.chosen_for_cpu is None:
        return "the baseline does not record what was chosen for its CPU" if cpu_differs else None
    if new.chosen_for_cpu == old.chosen_for_cpu:
        return None
    keys = sorted(set(new.chosen_for_cpu) | set(old.chosen_for_cpu))
    said = ", ".join(f"{k} {new.chosen_for_cpu.get(k, '-')} here, {old.chosen_for_cpu.get(k, '-')} there" for k in keys)
    return f"made with other settings chosen for the CPU ({said})"


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
        row = _latency_row(model, old, new, limits, reference_p50=reference_p50)
        if row:
            found.append(row)
    return found


def _latency_row(
    model: str, old: VariantResult, new: VariantResult, limits: Thresholds, *, reference_p50: float | None
) -> dict[str, Any] | None:
    """The row of a latency ratio that grew past the threshold and the floor; marked noise when the re-timed
    rounds do not show it with significance."""
    slowdown = (new.latency_ratio / old.latency_ratio - 1) * 100
    # how much slower the artifact is than its baseline ratio predicts at this run's speed (its reference's p50)
    excess_ms = reference_p50 * (new.latency_ratio - old.latency_ratio) if reference_p50 else None
    if slowdown <= limits.latency_slowdown_pct or (excess_ms is not None and excess_ms <= limits.latency_floor_ms):
        return None
    extra = f", +{excess_ms:.3f} ms" if excess_ms is not None else ""
    row = _row(model, old.name, "latency_ratio", old.latency_ratio, new.latency_ratio,
               f"+{slowdown:.0f}% > {limits.latency_slowdown_pct}%{extra}")  # fmt: skip
    if new.latency_rounds:
        growth = 1 + limits.latency_slowdown_pct / 100
        if old.latency_rounds:
            p_value = slower_than_allowed(new.latency_rounds, old.latency_rounds, limits)
            test = f"{len(new.latency_rounds)} re-timed rounds against the baseline's {len(old.latency_rounds)} "
            test += f"x {growth:g}"
            name = "Mann-Whitney"
        else:
            bound = old.latency_ratio * growth
            above = sum(ratio > bound for ratio in new.latency_rounds)
            p_value = sign_test(above, len(new.latency_rounds))
            test, name = f"{above} of {len(new.latency_rounds)} re-timed rounds above {bound:.3g}", "sign test"
        noise = p_value >= limits.latency_p_value
        row["why"] += f"; {test} ({'noise' if noise else 'significant'}: {name} p={p_value:.2g})"
        row["noise"] = noise
    return row


def slower_than_allowed(later: Sequence[float], earlier: Sequence[float], limits: Thresholds) -> float:
    """How likely timings at least this much slower than `earlier` allows come out of `later` under noise: the
    one-sided Mann-Whitney test of `later` against `earlier` scaled by the allowed slowdown, so that the baseline's
    own spread counts (the suite's re-timed rounds, a device's per-run samples)."""
    growth = 1 + limits.latency_slowdown_pct / 100
    return rank_test(later, [value * growth for value in earlier])


def _row(model: str, variant: str, metric: str, baseline: Any, current: Any, why: str) -> dict[str, Any]:
    baseline, current = (str(v) if isinstance(v, Status) else v for v in (baseline, current))
    return {"model": model, "variant": variant, "metric": metric, "baseline": baseline, "current": current, "why": why}


def regressions_markdown(regressions: list[dict[str, Any]]) -> str:
    rows = [(r["model"], r["variant"], r["metric"], r["baseline"], r["current"], r["why"]) for r in regressions]
    return markdown_table(("model", "variant", "metric", "baseline", "now", "why"), rows, right={3, 4})
