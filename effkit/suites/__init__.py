"""effkit bench: run a suite of models through `compress`, collect one results.json, gate it against a baseline.

suite.py reads a suite file; run.py runs it into a SuiteResult (`effkit.report.results`); render.py writes results.json,
results.md and report.html; baselines.py gates a run against the baseline kept for its CPU fingerprint.
"""

from .baselines import (
    baseline_to_read,
    baseline_to_write,
    fingerprint_baseline,
    gate,
    latency_rounds,
    read_baseline,
    with_latency_rounds,
)
from .render import RESULTS_HTML, RESULTS_JSON, RESULTS_MD, results_html, results_markdown, write_results
from .run import executor_for, run_suite
from .suite import Suite, SuiteModel, load_suite

__all__ = [
    "RESULTS_HTML",
    "RESULTS_JSON",
    "RESULTS_MD",
    "Suite",
    "SuiteModel",
    "baseline_to_read",
    "baseline_to_write",
    "executor_for",
    "fingerprint_baseline",
    "gate",
    "latency_rounds",
    "load_suite",
    "read_baseline",
    "results_html",
    "results_markdown",
    "run_suite",
    "with_latency_rounds",
    "write_results",
]
