"""Fine-tunes in a child process: a real native crash (an abort, a segfault) costs one step, never the run.

The crashes here are real: `os.abort()` raises SIGABRT and `ctypes.string_at(0)` reads address 0 (SIGSEGV) in the
child. `EFFKIT_CRASH_CHILD` makes the child abort before its step, as oneDNN's crash would, so the retry path is
tested on a CPU where oneDNN does not crash.
"""

from __future__ import annotations

import ctypes
import operator
import os
import signal
import subprocess
import sys
import time

import pytest

from effkit import compress
from effkit.config import CompressConfig, Format, Quant
from effkit.isolation import CRASH_TEST, ONEDNN, ChildCrashed, Isolation
from effkit.types import Report, Status

from .conftest import FAST_LATENCY, FAST_PRUNE


@pytest.fixture(scope="module")
def isolation():
    with Isolation() as pool:
        yield pool


def test_a_step_runs_in_a_child_and_its_errors_come_back(isolation):
    assert isolation.run("add", operator.add, 2, 3) == (5, {})
    assert isolation.run("pid", os.getpid)[0] != os.getpid()
    with pytest.raises(ValueError, match="invalid literal"):
        isolation.run("parse", int, "not a number")
    assert isolation.onednn_off is None  # a Python exception is not a crash


def test_a_segfault_is_caught_named_and_retried_with_onednn_off():
    with Isolation() as pool:
        with pytest.raises(ChildCrashed, match=rf"crashed: SIGSEGV in read 0, also with {ONEDNN}=0") as crash:
            pool.run("read 0", ctypes.string_at, 0)
        assert crash.value.signal == "SIGSEGV" and crash.value.exit_code == 3
        assert pool.onednn_off == "SIGSEGV in read 0"
        # the run goes on: the next step gets a fresh child, with oneDNN off, and says so
        value, record = pool.run("environment", os.getenv, ONEDNN)
        assert value == "0" and record == {"isolation": "oneDNN off (SIGSEGV in read 0)"}


def test_a_crash_that_onednn_causes_is_retried_and_recorded(monkeypatch):
    monkeypatch.setenv(CRASH_TEST, "abort")  # the child aborts while oneDNN is on, as on the CPUs where it crashes
    with Isolation() as pool:
        value, record = pool.run("fit", operator.mul, 6, 7)
    assert value == 42
    assert record == {"isolation": f"crashed: SIGABRT in fit; retried with {ONEDNN}=0"}


def test_in_line_when_disabled(monkeypatch):
    monkeypatch.setenv(CRASH_TEST, "always")  # would abort any child: there is none
    assert Isolation(enabled=False).run("pid", os.getpid) == (os.getpid(), {})


def _config(**changes) -> CompressConfig:
    base = {
        "sparsities": (0.5,),
        "quantizations": (Quant.INT8,),
        "formats": (Format.TFLITE,),
        "prune": FAST_PRUNE,
        "latency": FAST_LATENCY,
    }
    return CompressConfig(**{**base, **changes})


def test_compress_retries_a_crashed_fine_tune_and_records_it(tiny_model, digits, tmp_path, monkeypatch):
    monkeypatch.setenv(CRASH_TEST, "abort")
    report = compress(tiny_model, digits, config=_config(qat=True), out_dir=tmp_path / "out")
    assert report.complete and all(v.status == Status.OK for v in report.variants)
    pruned = {v.name: v for v in report.variants if v.name.startswith("pruned50")}
    assert set(pruned) == {"pruned50-keras", "pruned50-tflite-none", "pruned50-tflite-int8",
                           "pruned50-tflite-int8-litert", "pruned50-qat-tflite-int8"}  # fmt: skip
    prune_step = pruned["pruned50-tflite-int8"].steps[0]
    assert prune_step.params["isolation"] == f"crashed: SIGABRT in pruned50 fine-tune; retried with {ONEDNN}=0"
    assert prune_step.params["sparsity"] >= 0.49  # the retry really pruned and fine-tuned
    assert pruned["pruned50-tflite-int8"].top1 > 0.85
    qat_step = next(s for s in pruned["pruned50-qat-tflite-int8"].steps if s.stage == "qat")
    assert qat_step.params["isolation"] == "oneDNN off (SIGABRT in pruned50 fine-tune)"


def test_compress_keeps_every_other_variant_when_a_fine_tune_crashes_twice(tiny_model, digits, tmp_path, monkeypatch):
    monkeypatch.setenv(CRASH_TEST, "always")
    out = tmp_path / "out"
    report = compress(tiny_model, digits, config=_config(), out_dir=out)
    assert report.complete
    failed = {v.name: v.error for v in report.variants if v.status == Status.FAILED}
    assert set(failed) == {
        "pruned50-keras",
        "pruned50-tflite-none",
        "pruned50-tflite-int8",
        "pruned50-tflite-int8-litert",
    }
    assert set(failed.values()) == {f"crashed: SIGABRT in pruned50 fine-tune, also with {ONEDNN}=0"}
    baseline = [v for v in report.variants if v.name.startswith("baseline")]
    assert len(baseline) == 4 and all(v.status == Status.OK and v.top1 > 0.85 for v in baseline)
    assert Report.from_json((out / "report.json").read_text()).variants == report.variants


def test_a_killed_run_leaves_every_finished_variant_on_disk(tiny_tf_keras_file, tmp_path):
    """SIGKILL, which nothing in the process can handle: the report written after each variant survives it."""
    out = tmp_path / "out"
    args = ["compress", str(tiny_tf_keras_file), "--out", str(out), "--sparsity", "0.5", "--prune-epochs", "2"]
    process = subprocess.Popen([sys.executable, "-m", "effkit", *args, "--quiet"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                seen = Report.from_json((out / "report.json").read_text())
            except (OSError, ValueError):
                seen = None
            if seen is not None and len(seen.variants) >= 3:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    report = Report.from_json((out / "report.json").read_text())
    assert report.complete is False
    assert len(report.variants) >= 3 and all(v.status == Status.OK for v in report.variants)
    assert [v.name for v in report.variants][:3] == [
        "baseline-keras",
        "baseline-tflite-none",
        "baseline-tflite-dynamic",
    ]
