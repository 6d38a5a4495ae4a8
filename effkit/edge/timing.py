"""effkit's one latency protocol, owned here so that a device (`effkit-edge bench`) times a bundle exactly as the
machine that made it timed it (`effkit.runtime.measure.time_latency` calls the same loop).

Warm-up for at least `warmup_runs` calls and `warmup_seconds`, then time single calls until both `min_runs` and
`min_seconds` are reached, or `max_seconds` passes. The garbage collector is paused while timing. Pure Python.

A few-microsecond call runs some 100,000 times in `min_seconds`; `samples_ms` keeps an evenly spaced subset of the
runs (at most `MAX_SAMPLES`, in the order they were timed) for a rank test between two machines' or two days'
timings, where the summary alone cannot tell a slowdown from noise.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Protocol:
    """How long to warm up and to time; effkit's `LatencyConfig` has the same fields and defaults."""

    warmup_runs: int = 10
    warmup_seconds: float = 0.2
    min_runs: int = 200
    min_seconds: float = 0.5
    max_seconds: float = 10.0  # a very slow artifact stops here, with fewer runs recorded


DEFAULT = Protocol()
MAX_SAMPLES = 1000  # a rank test between two such sets resolves a few percent; the JSON stays ~10 KB
SAMPLE_DIGITS = 4  # significant digits per sample: 0.1% of a run, finer than two runs of one call agree


def time_calls(call: Callable[[], Any], protocol: Any = DEFAULT) -> list[float]:
    """Seconds per call of `call`, under `protocol` (anything with `Protocol`'s fields)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        started = time.perf_counter()
        runs = 0
        while runs < protocol.warmup_runs or time.perf_counter() - started < protocol.warmup_seconds:
            call()
            runs += 1
            if time.perf_counter() - started > protocol.max_seconds:
                break
        timings: list[float] = []
        started = time.perf_counter()
        while len(timings) < protocol.min_runs or time.perf_counter() - started < protocol.min_seconds:
            before = time.perf_counter()
            call()
            timings.append(time.perf_counter() - before)
            if time.perf_counter() - started > protocol.max_seconds:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return timings


def summarize(seconds: list[float], *, batch: int) -> dict[str, float | int]:
    """Milliseconds: p50, p90, p99, mean, stdev and min, with the run count and throughput (samples per second)."""
    if not seconds:
        raise ValueError("no timings")
    ms = sorted(value * 1e3 for value in seconds)
    mean = statistics.fmean(ms)
    return {
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "mean": mean,
        "stdev": statistics.stdev(ms) if len(ms) > 1 else 0.0,
        "min": ms[0],
        "runs": len(ms),
        "throughput": batch / (mean / 1e3),
    }


def samples_ms(seconds: list[float], *, limit: int = MAX_SAMPLES) -> list[float]:
    """Milliseconds of at most `limit` runs, evenly spaced over all of them in the order timed, each rounded to
    `SAMPLE_DIGITS` significant digits."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    step = max(1, -(-len(seconds) // limit))
    return [float(f"{value * 1e3:.{SAMPLE_DIGITS}g}") for value in seconds[::step]]


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), without importing numpy."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    rank = (len(sorted_values) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)
