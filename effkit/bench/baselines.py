"""Gating a run against a baseline: one baseline per CPU class, latency suspects confirmed by re-timing."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from ..errors import InputError, first_line
from ..gate import Thresholds, compare
from ..results import SCHEMA_VERSION, SuiteResult
from ..types import Report

log = logging.getLogger("effkit")


def gate(results: SuiteResult, baseline_path: Path, thresholds: Thresholds, out_dir: Path) -> SuiteResult:
    """Compare with a baseline results.json; returns a copy of `results` that holds the verdict under `gate`.

    Latency is judged only when the baseline was measured on a CPU of this run's class (see `baseline_to_read`);
    otherwise latency changes are listed as not comparable. A latency regression is confirmed before it counts:
    noise on a shared 2-core machine comes in bursts of a few seconds, which can hit a variant and spare its
    reference. The suspect and its reference are timed again in alternation (`confirm_latency`), and the median
    of those ratios is judged instead.

    Raises:
        InputError: the baseline is missing, not JSON, or holds nothing to compare with.
    """
    baseline = read_baseline(baseline_path)
    comparable = baseline.cpu_class is not None and baseline.cpu_class == results.cpu_class
    verdict = compare(results, baseline, thresholds, latency_comparable=comparable)
    suspects = [(r["model"], r["variant"]) for r in verdict.regressions if r["metric"] == "latency_ratio"]
    if suspects:
        log.info("bench: timing %d latency suspect(s) again against their reference", len(suspects))
        for model_name, variant_name in suspects:
            model = results.model(model_name)
            first = model.variant(variant_name).latency_ratio
            folder = Path(out_dir) / model_name
            report = results.reports.get(model_name) or Report.from_json((folder / "report.json").read_text("utf-8"))
            confirmed = confirm_latency(report, folder, variant_name, model.latency_reference)
            results = results.with_variant(model_name, variant_name, latency_ratio=confirmed, latency_ratio_first=first)
        verdict = compare(results, baseline, thresholds, latency_comparable=comparable)
    why = (
        f"both runs on {results.cpu_class}"
        if comparable
        else f"the baseline was measured on {baseline.cpu_class or 'an unrecorded CPU class'}, this run on "
        f"{results.cpu_class}; keep a baseline for this class with --update-baseline"
    )
    return replace(
        results,
        gate={
            "baseline": str(baseline_path),
            "passed": not verdict.regressions,
            "regressions": verdict.regressions,
            "not_counted": verdict.not_counted,
            "latency_compared": comparable,
            "latency_why": why,
        },
    )


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


def class_baseline(path: Path, cpu_class: str) -> Path:
    """Where the baseline for one CPU class lives beside the suite's: `quick.json` -> `quick.x86_64-avx2.json`."""
    return path.with_name(f"{path.stem}.{cpu_class}{path.suffix}")


def baseline_to_read(path: Path, cpu_class: str) -> Path:
    """The baseline to gate against: the one kept for this CPU class when it exists, else the one given."""
    own = class_baseline(path, cpu_class)
    return own if own.is_file() else path


def baseline_to_write(path: Path, cpu_class: str) -> Path:
    """Where --update-baseline writes: the given file when it is new or from this CPU class (or unrecorded), else
    this class's own file beside it, so that another class's baseline is never replaced."""
    if not path.is_file():
        return path
    try:
        recorded = SuiteResult.from_dict(json.loads(path.read_text(encoding="utf-8"))).cpu_class
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, AttributeError):
        recorded = None
    return path if recorded in (None, cpu_class) else class_baseline(path, cpu_class)


def confirm_latency(
    report: Report, model_dir: Path, variant_name: str, reference_name: str, *, rounds: int = 7
) -> float:
    """The median over `rounds` alternating timings of p50(variant) / p50(reference), at the report's headline
    batch size and thread count, on the same input samples compress timed (its latency_input.npy)."""
    import statistics

    import numpy as np

    from ..config import Format, LatencyConfig
    from ..measure import time_latency
    from ..outdir import LATENCY_INPUT
    from ..runtime import open_runner

    headline = report.variant(reference_name).latency_ms
    samples = np.load(model_dir / LATENCY_INPUT, allow_pickle=False)[: headline.batch]
    protocol = LatencyConfig(warmup_runs=10, warmup_seconds=0.05, min_runs=100, min_seconds=0.15)
    optimization = report.config.get("latency", {}).get("ort_optimization", "all")
    runners = []
    for name in (variant_name, reference_name):
        variant = report.variant(name)
        runner = open_runner(
            model_dir / variant.path, Format(variant.format), threads=headline.threads, ort_optimization=optimization
        )
        runners.append(runner.bind(samples))
    ratios = []
    for _ in range(rounds):
        timed = [
            time_latency(call, config=protocol, batch=headline.batch, threads=headline.threads).p50 for call in runners
        ]
        ratios.append(timed[0] / timed[1])
    return round(statistics.median(ratios), 4)
