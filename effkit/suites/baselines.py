"""Gating a run against a baseline: one baseline per CPU fingerprint, latency suspects confirmed by re-timing."""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..config import Format
from ..cpu import CpuFingerprint
from ..errors import InputError, first_line
from ..report.results import SCHEMA_VERSION, SuiteResult
from ..types import Report, Status
from .gate import Thresholds, compare

log = logging.getLogger("effkit")

# Re-timing rounds for a baseline's variants and a run's latency suspects, at least MIN_ROUND_SECONDS apart.
CONFIRM_ROUNDS = 9
MIN_ROUND_SECONDS = 1.0


def gate(
    results: SuiteResult,
    baseline_path: Path,
    thresholds: Thresholds,
    out_dir: Path,
    *,
    round_seconds: float | None = None,
) -> SuiteResult:
    """Compare with a baseline results.json; returns a copy of `results` that holds the verdict under `gate`.

    Latency is judged only when the baseline was measured on a CPU with this run's kernels (`latency_incomparable`);
    otherwise latency changes are listed as not comparable. A latency regression is confirmed before it counts:
    noise on a shared 2-core machine comes in bursts of a few seconds, which can hit a variant and spare its
    reference. The suspects and their reference are timed again in rounds (`latency_rounds`); the median of those
    rounds' ratios is judged instead, and the rounds themselves go to a rank test against the baseline's own rounds
    (`gate.compare`).

    `round_seconds` spaces the rounds in time (default `MIN_ROUND_SECONDS`; tests of the rule set 0).

    Raises:
        InputError: the baseline is missing, not JSON, or holds nothing to compare with.
    """
    baseline = read_baseline(baseline_path)
    incomparable = latency_incomparable(results.cpu, baseline.cpu)
    verdict = compare(results, baseline, thresholds, latency_incomparable=incomparable)
    suspects: dict[str, list[str]] = {}
    for row in verdict.regressions:
        if row["metric"] == "latency_ratio":
            suspects.setdefault(row["model"], []).append(row["variant"])
    if suspects:
        log.info("bench: timing %d latency suspect(s) again against their reference", sum(map(len, suspects.values())))
        for model_name, names in suspects.items():
            model = results.model(model_name)
            folder = Path(out_dir) / model_name
            report = results.reports.get(model_name) or Report.from_json((folder / "report.json").read_text("utf-8"))
            retimed = latency_rounds(report, folder, names, model.latency_reference, round_seconds=round_seconds)
            for name, rounds in retimed.items():
                results = results.with_variant(
                    model_name,
                    name,
                    latency_ratio=round(statistics.median(rounds), 4),
                    latency_ratio_first=model.variant(name).latency_ratio,
                    latency_rounds=rounds,
                )
        verdict = compare(results, baseline, thresholds, latency_incomparable=incomparable)
    cpu = results.cpu
    why = (
        f"both runs on {cpu.describe()}"
        if incomparable is None
        else f"{incomparable}; keep a baseline for this CPU with --update-baseline"
    )
    return replace(
        results,
        gate={
            "baseline": str(baseline_path),
            "passed": not verdict.regressions,
            "regressions": verdict.regressions,
            "not_counted": verdict.not_counted,
            "latency_compared": incomparable is None,
            "latency_why": why,
        },
    )


def latency_incomparable(mine: CpuFingerprint | None, theirs: CpuFingerprint | None) -> str | None:
    """Why latencies measured on `theirs` do not compare with ones measured on `mine`; None when they do."""
    if mine is None:
        return "this run's CPU is not recorded (timed on nodes whose CPUs differ)"
    if theirs is None:
        return "the baseline's CPU is not recorded"
    if mine.same_kernels(theirs):
        return None
    if theirs.family is None and theirs.model_number is None:
        return (
            f"the baseline's CPU ({theirs.isa_class}) was recorded without its family and model, by an older "
            "effkit: which generation it ran on is unknown"
        )
    return f"measured on another CPU ({mine.difference(theirs)}; here {mine.isa_class}, baseline {theirs.isa_class})"


def read_baseline(path: Path) -> SuiteResult:
    """A baseline results.json that holds something to compare with.

    Raises:
        InputError: missing, not JSON, another schema, or no model with measured variants.
    """
    if not path.is_file():
        raise InputError(f"baseline not found: {path}; create one with --update-baseline")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"baseline {path} is not JSON: {first_line(error)}") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{path} is not an effkit bench results file (schema {SCHEMA_VERSION})")
    try:
        baseline = SuiteResult.from_dict(data)
    except (TypeError, ValueError, AttributeError) as error:
        raise InputError(f"baseline {path} is not a readable results file: {first_line(error)}") from None
    measured = [
        model
        for model in baseline.models
        if any(v.name and (v.top1 is not None or v.gzip_bytes) for v in model.variants)
    ]
    if not measured:
        raise InputError(f"baseline {path} holds no measured model to compare with; recreate it with --update-baseline")
    return baseline


def fingerprint_baseline(path: Path, cpu: CpuFingerprint) -> Path:
    """Where the baseline for one CPU lives beside the suite's (`CpuFingerprint.slug`):
    `quick.json` -> `quick.x86_64-avx2.authenticamd-25-1.77e6fd.json`."""
    return path.with_name(f"{path.stem}.{cpu.slug}{path.suffix}")


def baseline_to_read(path: Path, cpu: CpuFingerprint) -> Path:
    """The baseline to gate against: the one kept for this CPU's kernels when it exists, else the one given."""
    own = fingerprint_baseline(path, cpu)
    return own if own.is_file() else path


def baseline_to_write(path: Path, cpu: CpuFingerprint) -> Path:
    """Where --update-baseline writes: the given file when it is new or was measured on this CPU's kernels (or on an
    unrecorded CPU), else this CPU's own file beside it, so that another CPU's baseline is never replaced."""
    if not path.is_file():
        return path
    try:
        recorded = SuiteResult.from_dict(json.loads(path.read_text(encoding="utf-8"))).cpu
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, AttributeError):
        recorded = None
    return path if recorded is None or cpu.same_kernels(recorded) else fingerprint_baseline(path, cpu)


def latency_rounds(
    report: Report,
    model_dir: Path,
    variant_names: Sequence[str],
    reference_name: str,
    *,
    rounds: int = CONFIRM_ROUNDS,
    round_seconds: float | None = None,
) -> dict[str, tuple[float, ...]]:
    """p50(variant) / p50(reference) for each variant in each of `rounds` rounds, at the report's headline batch
    size and thread count, on the same input samples compress timed (its latency_input.npy).

    Noise on a shared machine comes in bursts of a few seconds that can slow one artifact and spare another (here,
    ONNX Runtime's ConvInteger p50 moved between 66 and 157 us from one second to the next, the float32 TFLite
    reference's between 26 and 36). So each ratio pairs the variant with the reference timed just before it, and
    the rounds go round-robin over the variants, at least `round_seconds` apart: a burst then costs a round or
    two, not all of them. `round_seconds` defaults to `MIN_ROUND_SECONDS`.
    """
    import numpy as np

    from ..config import Format, LatencyConfig
    from ..report.outdir import LATENCY_INPUT
    from ..runtime import open_runner
    from ..runtime.measure import time_latency

    headline = report.variant(reference_name).latency_ms
    samples = np.load(model_dir / LATENCY_INPUT, allow_pickle=False)[: headline.batch]
    protocol = LatencyConfig(warmup_runs=10, warmup_seconds=0.05, min_runs=100, min_seconds=0.1)
    optimization = report.config.get("latency", {}).get("ort_optimization", "all")

    def bound(name: str):
        variant = report.variant(name)
        runner = open_runner(
            model_dir / variant.path, Format(variant.format), threads=headline.threads, ort_optimization=optimization
        )
        return runner.bind(samples)

    def p50(call) -> float:
        return time_latency(call, config=protocol, batch=headline.batch, threads=headline.threads).p50

    reference = bound(reference_name)
    calls = {name: bound(name) for name in variant_names}
    ratios: dict[str, list[float]] = {name: [] for name in variant_names}
    for _ in range(rounds):
        started = time.perf_counter()
        for name, call in calls.items():
            ratios[name].append(round(p50(call) / p50(reference), 4))
        spacing = MIN_ROUND_SECONDS if round_seconds is None else round_seconds
        time.sleep(max(0.0, spacing - (time.perf_counter() - started)))
    return {name: tuple(values) for name, values in ratios.items()}


def with_latency_rounds(results: SuiteResult, out_dir: Path, *, round_seconds: float | None = None) -> SuiteResult:
    """`results` with every gated variant (an ok artifact with a latency ratio, not the reference) timed again in
    rounds against its reference: what a baseline keeps, so that the gate can tell a slowdown from the spread of
    the baseline's own figures. The headline ratio becomes the rounds' median; the in-run one is kept beside it."""
    for model in results.models:
        names = [v.name for v in model.variants if _gated(v) and v.name != model.latency_reference]
        if model.status != Status.OK or not model.latency_reference or not names:
            continue
        log.info("bench: timing %s's %d variants in %d rounds for the baseline", model.name, len(names), CONFIRM_ROUNDS)
        folder = Path(out_dir) / model.name
        report = results.reports.get(model.name) or Report.from_json((folder / "report.json").read_text("utf-8"))
        retimed = latency_rounds(report, folder, names, model.latency_reference, round_seconds=round_seconds)
        for name, rounds in retimed.items():
            first = model.variant(name).latency_ratio
            results = results.with_variant(
                model.name,
                name,
                latency_ratio=round(statistics.median(rounds), 4),
                latency_ratio_first=first,
                latency_rounds=rounds,
            )
    return results


def _gated(variant) -> bool:
    return variant.status == Status.OK and variant.latency_ratio is not None and variant.format != Format.KERAS
