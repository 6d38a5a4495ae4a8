"""effkit bench: suites, results, the baseline gate with injected regressions, CI output, plots (issue #5)."""

from __future__ import annotations

import copy
import json
import re
import statistics
import struct

import pytest

from effkit.cli import main
from effkit.errors import ConfigError, InputError
from effkit.report.plots import pareto_front
from effkit.report.results import SuiteResult
from effkit.stats import pack_correct, unpack_correct
from effkit.suites import (
    baseline_to_read,
    baseline_to_write,
    load_suite,
    read_baseline,
    results_markdown,
    run_suite,
    write_results,
)
from effkit.suites import gate as bench_gate
from effkit.suites.gate import Thresholds, compare

SUITE = """
name = "tiny"
description = "one tiny model, two formats"

[compress]
sparsities = []
quantizations = ["none", "int8"]
formats = ["tflite", "onnx"]
tflite_backends = ["converter"]

[compress.latency]
batches = [1, 4]
threads = [1]
warmup_runs = 2
warmup_seconds = 0.0
min_runs = 20
min_seconds = 0.02
memory = true

[thresholds]
accuracy_drop_pp = 0.5
size_growth_pct = 2.0
latency_slowdown_pct = 100.0  # the gate's latency logic is what is tested; the tiny model's ratios are noisy
latency_floor_ms = 0.0  # the tiny model runs in microseconds; the floor has its own test

[[models]]
path = "{model}"
name = "tiny"
data = "digits"
"""


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory, tiny_tf_keras_file):
    path = tmp_path_factory.mktemp("suite") / "tiny.toml"
    path.write_text(SUITE.format(model=tiny_tf_keras_file))
    return path


@pytest.fixture(scope="module")
def bench_record(suite_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    suite = load_suite(suite_file)
    record = run_suite(suite, out)
    write_results(record, out)
    return suite, record, out


@pytest.fixture(scope="module")
def bench_run(bench_record):
    """The run as results.json holds it: tests change copies of this dict to play a baseline or a new run."""
    suite, record, out = bench_record
    return suite, record.to_dict(), out


def gate(current, baseline_path, thresholds, out):
    """The gate's verdict on a results dict (or record), as results.json stores it; re-timing rounds back to back
    (what is judged here is the rule, not this machine's bursts)."""
    record = current if isinstance(current, SuiteResult) else SuiteResult.from_dict(current)
    return bench_gate(record, baseline_path, thresholds, out, round_seconds=0.0).gate


def _cpu_class(results):
    return SuiteResult.from_dict(results).cpu_class


def test_results_hold_every_variant_with_a_latency_ratio_and_memory(bench_run):
    _, results, out = bench_run
    assert results["schema_version"] == 1 and results["suite"] == "tiny"
    (model,) = results["models"]
    assert model["status"] == "ok" and model["latency_reference"] == "baseline-tflite-none"
    names = [v["name"] for v in model["variants"]]
    assert names == [
        "baseline-keras",
        "baseline-tflite-none",
        "baseline-tflite-int8",
        "baseline-onnx-none",
        "baseline-onnx-int8",
    ]
    by_name = {v["name"]: v for v in model["variants"]}
    reference_p50 = by_name["baseline-tflite-none"]["p50_ms"]
    assert by_name["baseline-tflite-none"]["latency_ratio"] == 1.0
    for variant in model["variants"]:  # each ratio is its p50 over the reference's, measured in the same run
        assert variant["latency_ratio"] == round(variant["p50_ms"] / reference_p50, 4), variant["name"]
        assert variant["p50_ms"] == variant["latency_grid"][0]["p50_ms"]
    for variant in model["variants"]:
        assert [g["batch"] for g in variant["latency_grid"]] == [1, 4]
        if variant["format"] != "keras":  # Keras runs on TensorFlow's own thread pool
            assert [g["threads"] for g in variant["latency_grid"]] == [1, 1]
        assert variant["latency_grid"][1]["throughput"] > 0
        if variant["format"] != "keras":
            assert variant["load_ms"] > 0
            assert 0 < variant["memory_mb"]["model"] < variant["memory_mb"]["peak"] < 500  # no TensorFlow in it
    assert json.loads((out / "results.json").read_text()) == results
    assert SuiteResult.from_dict(results).to_dict() == results  # the records round-trip through results.json


def test_gate_passes_an_identical_rerun(bench_run, tmp_path):
    suite, results, out = bench_run
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(results))
    verdict = gate(copy.deepcopy(results), baseline, suite.thresholds, out)
    assert verdict["passed"] and verdict["regressions"] == [] and verdict["not_counted"] == []
    assert verdict["latency_compared"] and verdict["baseline"] == str(baseline)
    for growth, passes in ((1.01, True), (1.03, False)):  # the size threshold is 2%: the gate sees the difference
        grown = copy.deepcopy(results)
        _variant(grown, "baseline-onnx-int8")["gzip_bytes"] = int(
            _variant(results, "baseline-onnx-int8")["gzip_bytes"] * growth
        )
        assert gate(grown, baseline, suite.thresholds, out)["passed"] is passes


def _claim(variant, samples, *, gained):
    """Rewrite a baseline variant to claim it got `gained` more test samples right (flipping wrong ones)."""
    bits = unpack_correct(variant["correct"], samples)
    wrong = [i for i, ok in enumerate(bits) if not ok]
    assert len(wrong) >= gained, "the tiny model must get some samples wrong"
    for index in wrong[:gained]:
        bits[index] = True
    variant["correct"] = pack_correct(bits)
    variant["top1"] = sum(bits) / samples


def _variant(results, name):
    return next(v for v in results["models"][0]["variants"] if v["name"] == name)


def test_gate_names_injected_accuracy_size_and_status_regressions(bench_run, tmp_path):
    suite, results, out = bench_run
    claimed = copy.deepcopy(results)  # a baseline that claims what this run does not deliver
    samples = claimed["models"][0]["test_samples"]
    _claim(_variant(claimed, "baseline-tflite-int8"), samples, gained=8)  # 8 samples: p = 0.008
    _variant(claimed, "baseline-onnx-none")["gzip_bytes"] //= 2
    claimed["models"][0]["variants"].append({**_variant(claimed, "baseline-onnx-int8"), "name": "baseline-gone"})
    baseline = tmp_path / "claimed.json"
    baseline.write_text(json.dumps(claimed))
    verdict = gate(copy.deepcopy(results), baseline, suite.thresholds, out)
    found = {(r["variant"], r["metric"]) for r in verdict["regressions"]}
    assert not verdict["passed"]
    assert found == {
        ("baseline-tflite-int8", "top1"),
        ("baseline-onnx-none", "gzip_bytes"),
        ("baseline-gone", "status"),
    }


def test_a_latency_regression_is_confirmed_by_timing_again(bench_record, bench_run, tmp_path):
    suite, record, out = bench_record
    claimed = copy.deepcopy(bench_run[1])
    onnx = _variant(claimed, "baseline-onnx-none")
    # The baseline claims this artifact was twenty times faster than it is. Not six: the in-run ratio, measured
    # while other test workers share the 2 cores, came out over 4.6 times its re-timed value (x86_64-avx2).
    onnx["latency_ratio"] /= 20
    baseline = tmp_path / "claimed.json"
    baseline.write_text(json.dumps(claimed))
    burst = record.model("tiny").variant("baseline-tflite-int8").latency_ratio * 6  # this run hit a burst of noise
    noisy = record.with_variant("tiny", "baseline-tflite-int8", latency_ratio=burst)
    judged = bench_gate(noisy, baseline, suite.thresholds, out, round_seconds=0.0)  # re-times the in-memory reports
    regressions = judged.gate["regressions"]
    assert [(r["variant"], r["metric"]) for r in regressions] == [("baseline-onnx-none", "latency_ratio")]
    retimed = judged.model("tiny").variant("baseline-tflite-int8")
    assert retimed.latency_ratio_first == burst and retimed.latency_ratio < burst  # re-timed, and cleared
    assert noisy.model("tiny").variant("baseline-tflite-int8").latency_ratio_first is None  # the input is unchanged
    assert noisy.gate is None


def test_compare_judges_failures_and_missing_models():
    baseline = {
        "models": [{"name": "a", "status": "ok", "variants": []}, {"name": "b", "status": "ok", "variants": []}]
    }
    current = {"models": [{"name": "a", "status": "failed", "error": "cannot load model"}]}
    rows = compare(SuiteResult.from_dict(current), SuiteResult.from_dict(baseline), Thresholds()).regressions
    assert [(r["model"], r["current"]) for r in rows] == [("a", "failed"), ("b", "missing")]


def test_a_two_sample_accuracy_change_is_noise_and_a_large_one_is_not(bench_run, tmp_path):
    suite, results, out = bench_run
    samples = results["models"][0]["test_samples"]
    assert 200 < samples < 400  # so that 2 samples are more than the 0.5 pp threshold
    claimed = copy.deepcopy(results)
    _claim(_variant(claimed, "baseline-onnx-int8"), samples, gained=2)  # -0.56 pp: two flips, p = 0.5
    _claim(_variant(claimed, "baseline-tflite-none"), samples, gained=7)  # seven flips one way, p = 0.016
    baseline = tmp_path / "claimed.json"
    baseline.write_text(json.dumps(claimed))
    verdict = gate(copy.deepcopy(results), baseline, suite.thresholds, out)
    assert [(r["variant"], r["metric"]) for r in verdict["regressions"]] == [("baseline-tflite-none", "top1")]
    assert "7 samples" in verdict["regressions"][0]["why"]
    (noise,) = verdict["not_counted"]
    assert noise["variant"] == "baseline-onnx-int8" and "-0.56 pp, 2 samples, p=0.5" in noise["why"]
    assert "within noise" in results_markdown(SuiteResult.from_dict({**results, "gate": verdict}))
    other_split = copy.deepcopy(claimed)  # another test split: no paired test, the pp threshold alone decides
    other_split["models"][0]["test_digest"] = "0" * 16
    baseline.write_text(json.dumps(other_split))
    verdict = gate(copy.deepcopy(results), baseline, suite.thresholds, out)
    assert {r["variant"] for r in verdict["regressions"]} == {"baseline-onnx-int8", "baseline-tflite-none"}


# Two EPYC generations of one class (x86_64-avx512-vnni): the later one adds avx_vnni and is family 26.
VNNI_FEATURES = ["sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"]
ZEN4 = {"arch": "x86_64", "vendor": "AuthenticAMD", "model": "AMD EPYC", "features": VNNI_FEATURES, "cores": 2,
        "family": "25", "model_number": "17"}  # fmt: skip
OTHER_GENERATION = {
    "avx_vnni only": {**ZEN4, "features": [*VNNI_FEATURES, "avx_vnni"]},
    "family only": {**ZEN4, "family": "26"},
    "model only": {**ZEN4, "model_number": "2"},
}


def _on_cpu(results, fingerprint):
    moved = copy.deepcopy(results)
    moved["environment"]["fingerprint"] = dict(fingerprint)
    return moved


@pytest.mark.parametrize("differs", sorted(OTHER_GENERATION))
def test_latency_compares_only_on_a_cpu_with_the_same_kernels(differs, bench_run, tmp_path):
    """A baseline from a CPU of the same class that differs only in avx_vnni, or only in family or model: latency
    is listed as not comparable (ORT's ConvInteger ratios moved 44% between such CPUs); top-1, size and status are
    still gated."""
    suite, results, out = bench_run
    current = _on_cpu(results, ZEN4)
    claimed = _on_cpu(results, OTHER_GENERATION[differs])
    assert _cpu_class(claimed) == _cpu_class(current) == "x86_64-avx512-vnni"
    _variant(claimed, "baseline-onnx-none")["latency_ratio"] /= 6  # six times faster there: other kernels
    _variant(claimed, "baseline-onnx-int8")["gzip_bytes"] //= 2
    _claim(_variant(claimed, "baseline-tflite-none"), results["models"][0]["test_samples"], gained=8)
    baseline = tmp_path / "other-cpu.json"
    baseline.write_text(json.dumps(claimed))
    _variant(current, "baseline-tflite-int8")["status"] = "failed"
    verdict = gate(current, baseline, suite.thresholds, out)
    assert verdict["latency_compared"] is False
    found = {(r["variant"], r["metric"]) for r in verdict["regressions"]}
    assert found == {
        ("baseline-onnx-int8", "gzip_bytes"),
        ("baseline-tflite-int8", "status"),
        ("baseline-tflite-none", "top1"),
    }
    (latency,) = verdict["not_counted"]
    assert (latency["variant"], latency["metric"]) == ("baseline-onnx-none", "latency_ratio")
    said = {"avx_vnni only": "avx_vnni there only", "family only": "family 25 here, 26 there",
            "model only": "model 17 here, 2 there"}[differs]  # fmt: skip
    assert f"not comparable: measured on another CPU ({said}" in latency["why"], latency["why"]
    assert said in verdict["latency_why"]
    assert "Latency not compared" in results_markdown(SuiteResult.from_dict({**current, "gate": verdict}))


def test_the_same_baseline_on_the_same_cpu_judges_latency(bench_run, tmp_path):
    """The counterpart of the test above: measured on this very CPU, the twenty times faster claim is judged (re-timed,
    and found slower than the baseline allows)."""
    suite, results, out = bench_run
    claimed = _on_cpu(results, ZEN4)
    _variant(claimed, "baseline-onnx-none")["latency_ratio"] /= 20
    baseline = tmp_path / "same-cpu.json"
    baseline.write_text(json.dumps(claimed))
    verdict = gate(_on_cpu(results, ZEN4), baseline, suite.thresholds, out)
    assert verdict["latency_compared"] is True and "both runs on AMD EPYC family 25 model 17" in verdict["latency_why"]
    assert [(r["variant"], r["metric"]) for r in verdict["regressions"]] == [("baseline-onnx-none", "latency_ratio")]


def test_a_baseline_without_family_and_model_does_not_compare_latency(bench_run, tmp_path):
    """Baselines recorded before effkit read family and model (the committed quick.json) cannot say which
    generation they ran on."""
    suite, results, out = bench_run
    legacy = _on_cpu(results, {k: v for k, v in ZEN4.items() if k not in ("family", "model_number")})
    baseline = tmp_path / "legacy.json"
    baseline.write_text(json.dumps(legacy))
    verdict = gate(_on_cpu(results, ZEN4), baseline, suite.thresholds, out)
    assert verdict["passed"] and verdict["latency_compared"] is False
    assert "recorded without its family and model" in verdict["latency_why"]


def test_each_cpu_keeps_its_own_baseline(bench_run, tmp_path):
    from effkit.cpu import CpuFingerprint

    _, results, _ = bench_run
    mine = CpuFingerprint.from_dict(ZEN4)
    given = tmp_path / "quick.json"
    assert baseline_to_write(given, mine) == given  # a new baseline goes where it was asked to
    given.write_text(json.dumps(_on_cpu(results, OTHER_GENERATION["family only"])))
    own = baseline_to_write(given, mine)
    assert own == tmp_path / f"quick.{mine.slug}.json"  # another CPU's baseline is never replaced
    assert own.name.startswith("quick.x86_64-avx512-vnni.authenticamd-25-17.")
    assert baseline_to_read(given, mine) == given  # until this CPU has one, the given one is read
    own.write_text(json.dumps(_on_cpu(results, ZEN4)))
    assert baseline_to_read(given, mine) == own
    given.write_text(json.dumps(_on_cpu(results, ZEN4)))
    assert baseline_to_write(given, mine) == given  # this CPU's own results: updated in place


@pytest.mark.parametrize(
    "baseline, message",
    [
        ({"schema_version": 1, "models": []}, "holds no measured model"),
        ({"schema_version": 1, "models": [{"name": "m", "status": "ok", "variants": [{"name": "v"}]}]}, "no measured"),
        ({"schema_version": 1}, "holds no measured model"),
        ({"models": []}, "not an effkit bench results file"),
        ([1, 2], "not an effkit bench results file"),
    ],
)
def test_an_empty_or_unusable_baseline_is_an_input_error(baseline, message, tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline))
    with pytest.raises(InputError, match=message):
        read_baseline(path)


def test_an_interrupted_suite_writes_incomplete_results(tmp_path, monkeypatch):
    import effkit.pipeline

    suite_path = tmp_path / "two.toml"
    suite_path.write_text(
        "[[models]]\npath = 'missing.keras'\nname = 'first'\n[[models]]\npath = 'other.keras'\nname = 'second'\n"
    )
    calls = []

    def interrupted_on_second(model, *args, **kwargs):
        calls.append(model)
        if len(calls) == 2:
            raise KeyboardInterrupt
        raise InputError(f"model not found: {model}")

    monkeypatch.setattr(effkit.pipeline, "compress", interrupted_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_suite(load_suite(suite_path), tmp_path / "out")
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written["complete"] is False
    assert [(m["name"], m["status"]) for m in written["models"]] == [("first", "failed")]


@pytest.mark.parametrize(
    ("reference_p50_ms", "flagged"),
    [
        (0.0059, False),  # fashion_mlp's ONNX row between two runs of the same code: +64%, but only 9 us
        (0.0300, True),  # the same ratio change against a 30 us reference is 45 us: a real slowdown
    ],
)
def test_a_latency_change_below_the_floor_is_not_a_regression(reference_p50_ms, flagged):
    def results(ratio, reference_p50):
        reference = {"name": "r", "format": "tflite", "status": "ok", "latency_ratio": 1.0, "p50_ms": reference_p50}
        variant = {"name": "v", "format": "onnx", "status": "ok", "latency_ratio": ratio}
        return {"models": [{"name": "m", "status": "ok", "latency_reference": "r", "variants": [reference, variant]}]}

    now, baseline = results(3.837, reference_p50_ms), results(2.3391, 0.0089)
    now, baseline = SuiteResult.from_dict(now), SuiteResult.from_dict(baseline)
    rows = compare(now, baseline, Thresholds(latency_floor_ms=0.02)).regressions
    expected = [("v", "+64% > 30.0%")] if flagged else []
    assert [(r["variant"], r["why"].split(",")[0]) for r in rows] == expected
    assert compare(now, baseline, Thresholds(latency_floor_ms=0.0)).regressions  # without the floor it is judged


@pytest.fixture(scope="module")
def cli_suite_file(suite_file):
    """The suite for CLI exits: no memory runs, and a latency threshold no timing noise reaches, since what is
    tested is the exit codes and the rows printed (the latency rules have tests of their own)."""
    path = suite_file.with_name("cli.toml")
    text = (
        suite_file.read_text().replace("memory = true", "memory = false").replace("batches = [1, 4]", "batches = [1]")
    )
    path.write_text(text.replace("latency_slowdown_pct = 100.0", "latency_slowdown_pct = 100000.0"))
    return path


def test_cli_bench_exits_4_with_the_offending_rows_and_0_on_a_rerun(
    cli_suite_file, bench_run, tmp_path, capsys, monkeypatch
):
    from effkit.suites import baselines

    monkeypatch.setattr(baselines, "MIN_ROUND_SECONDS", 0.0)  # the baseline's rounds back to back: a test of the CLI
    suite_file = cli_suite_file
    _, results, _ = bench_run
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    claimed = copy.deepcopy(results)
    _claim(_variant(claimed, "baseline-tflite-none"), claimed["models"][0]["test_samples"], gained=10)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(claimed))
    out = tmp_path / "run"
    assert main(["bench", str(suite_file), "--out", str(out), "--baseline", str(bad), "--quiet"]) == 4
    captured = capsys.readouterr()
    assert re.search(r"\| tiny +\| baseline-tflite-none +\| top1 +\|", captured.out) and "10 samples" in captured.out
    assert captured.err.strip().splitlines() == [f"effkit: 1 regression(s) against {bad}"]
    assert "FAILED: 1 regression(s)" in summary.read_text()

    good = tmp_path / "good.json"
    assert (
        main(["bench", str(suite_file), "--out", str(out), "--baseline", str(good), "--update-baseline", "--quiet"])
        == 0
    )
    (kept,) = json.loads(good.read_text())["models"]
    assert kept["name"] == "tiny"
    for variant in kept["variants"]:  # a baseline keeps its spread: each artifact timed in rounds, the median kept
        if variant["format"] == "keras" or variant["name"] == kept["latency_reference"]:
            assert "latency_rounds" not in variant, variant["name"]
        else:
            assert len(variant["latency_rounds"]) == 9 and all(r > 0 for r in variant["latency_rounds"])
            assert variant["latency_ratio"] == round(statistics.median(variant["latency_rounds"]), 4)
    assert main(["bench", str(suite_file), "--out", str(out), "--baseline", str(good), "--quiet"]) == 0
    assert f"gate passed against {good}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("rounds", "counted"),
    [
        ((2.0,) * 9, True),  # every re-timed round is slower than the baseline allows: p = 0.002
        ((2.0,) * 8 + (1.0,), True),  # eight of nine: p = 0.02
        ((2.0,) * 7 + (1.0,) * 2, False),  # seven of nine: p = 0.09, a burst cannot be ruled out
        ((2.0,) * 5 + (1.0,) * 4, False),  # the median is slower, but half the rounds are not
    ],
)
def test_a_retimed_latency_counts_only_when_the_sign_test_shows_it(rounds, counted):
    import statistics

    def results(ratio, rounds=()):
        reference = {"name": "r", "format": "tflite", "status": "ok", "latency_ratio": 1.0, "p50_ms": 0.5}
        variant = {"name": "v", "format": "onnx", "status": "ok", "latency_ratio": ratio,
                   "latency_rounds": list(rounds)}  # fmt: skip
        return SuiteResult.from_dict(
            {"models": [{"name": "m", "status": "ok", "latency_reference": "r", "variants": [reference, variant]}]}
        )

    verdict = compare(results(statistics.median(rounds), rounds), results(1.0), Thresholds())
    judged = verdict.regressions if counted else verdict.not_counted
    assert [(r["variant"], r["metric"]) for r in judged] == [("v", "latency_ratio")]
    above = sum(r > 1.3 for r in rounds)
    assert f"{above} of 9 re-timed rounds above 1.3" in judged[0]["why"]
    assert ("significant" if counted else "noise") in judged[0]["why"]
    assert not (verdict.not_counted if counted else verdict.regressions)


# Measured here (AMD EPYC family 25 model 1, x86_64-avx2): the baseline's nine rounds of digits_cnn's
# pruned50-onnx-dynamic over the float32 TFLite file (its in-run ratio was 2.14; an earlier quiet run's 1.82).
SPREAD = (3.5014, 3.0797, 3.0112, 2.7474, 3.6173, 2.405, 3.4699, 4.7588, 2.5553)
STEADY = (1.0, 1.02, 0.98, 1.01, 0.99, 1.0, 1.03, 0.97, 1.0)


@pytest.mark.parametrize(
    ("baseline_rounds", "rounds", "counted"),
    [
        (SPREAD, (2.55,) * 9, False),  # a quiet re-run of the same code (every round near 2.55): not even a suspect
        (SPREAD, (4.2,) * 9, False),  # 36% above the baseline's median, in every round, but within its own spread
        ((1.0, 1.02, 0.98, 1.01, 0.99, 1.0, 1.03, 0.97, 1.0), (2.0, 2.1, 1.9, 2.0, 2.05, 1.95, 2.0, 2.1, 1.9), True),
        (
            (1.0, 1.02, 0.98, 1.01, 0.99, 1.0, 1.03, 0.97, 1.0),
            (1.2, 1.25, 1.21, 1.3, 1.2, 1.22, 1.28, 1.24, 1.2),
            False,
        ),
    ],
)
def test_a_retimed_latency_is_judged_against_the_baselines_own_rounds(baseline_rounds, rounds, counted):
    import statistics

    def results(rounds):
        reference = {"name": "r", "format": "tflite", "status": "ok", "latency_ratio": 1.0, "p50_ms": 0.5}
        variant = {"name": "v", "format": "onnx", "status": "ok", "latency_ratio": statistics.median(rounds),
                   "latency_rounds": list(rounds)}  # fmt: skip
        return SuiteResult.from_dict(
            {"models": [{"name": "m", "status": "ok", "latency_reference": "r", "variants": [reference, variant]}]}
        )

    now, baseline = results(rounds), results(baseline_rounds)
    verdict = compare(now, baseline, Thresholds(latency_floor_ms=0.0))
    rows = verdict.regressions + verdict.not_counted
    if not rows:  # under the threshold at first sight: nothing to judge
        assert not counted and statistics.median(rounds) <= 1.3 * statistics.median(baseline_rounds)
        return
    (row,) = rows
    assert (row in verdict.regressions) is counted
    assert "against the baseline's 9 x 1.3" in row["why"] and "Mann-Whitney" in row["why"]


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plots_and_html_are_written_for_each_model_and_the_suite(bench_run):
    _, _, out = bench_run
    for name in ("accuracy_vs_size.png", "accuracy_vs_latency.png"):
        path = out / "tiny" / name
        width, height = _png_size(path)
        assert width > 600 and height > 400 and path.stat().st_size > 20_000
    page = (out / "tiny" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and 'class="chosen"' in page
    suite_page = (out / "report.html").read_text()
    assert suite_page.count("data:image/png;base64,") == 2 and "effkit bench: tiny" in suite_page
    assert "## tiny (digits)" in (out / "results.md").read_text()


def test_pareto_front_keeps_only_undominated_points():
    points = [(10, 90, "a"), (20, 95, "b"), (15, 89, "dominated"), (30, 94, "worse"), (5, 80, "c")]
    assert [p[2] for p in pareto_front(points)] == ["c", "a", "b"]


@pytest.mark.parametrize(
    "text, error, message",
    [
        ("name = 'x'", ConfigError, "lists no"),
        ("[[models]]\nreference = 'resnet'", ConfigError, "unknown reference model 'resnet'"),
        ("[[models]]\nreference = 'digits_cnn'\npath = 'm.keras'", ConfigError, "exactly one of"),
        ("speed = 1\n[[models]]\nreference = 'digits_cnn'", ConfigError, "unknown keys ['speed']"),
        ("[compress]\nsparsities = [2.0]\n[[models]]\nreference = 'digits_cnn'", ConfigError, "outside"),
        ("[thresholds]\nfast = true\n[[models]]\nreference = 'digits_cnn'", ConfigError, "unknown keys ['fast']"),
        ("not toml [", InputError, "not valid TOML"),
        ("seed = 'x'\n[[models]]\nreference = 'digits_cnn'", ConfigError, "invalid literal"),
        ("[compress]\nquantizations = ['int3']\n[[models]]\nreference = 'digits_cnn'", ConfigError, "'int3'"),
        ("[thresholds]\naccuracy_drop_pp = '0.5'\n[[models]]\nreference = 'digits_cnn'", ConfigError, "number"),
        ("[[models]]\nreference = 'digits_cnn'\nname = '../victim'", ConfigError, "plain folder name"),
    ],
)
def test_bad_suites_are_refused_before_anything_runs(text, error, message, tmp_path):
    path = tmp_path / "suite.toml"
    path.write_text(text)
    with pytest.raises(error, match=__import__("re").escape(message)):
        load_suite(path)


def test_results_markdown_without_a_gate():
    text = results_markdown(
        SuiteResult.from_dict(
            {
                "suite": "s",
                "thresholds": {"latency_reference": "r"},
                "models": [{"name": "m", "data": "d", "status": "failed", "error": "boom"}],
            }
        )
    )
    assert "Failed: boom" in text and "Gate" not in text


def test_the_committed_suites_and_baselines_load():
    """What CI and the README point at: every suite file in bench/suites parses, and every baseline in
    bench/baselines is a results file of the quick suite's models, with the CPU it was measured on."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "bench"
    suites = {path.stem: load_suite(path) for path in sorted((root / "suites").glob("*.toml"))}
    assert {"quick", "full"} <= set(suites)
    quick = {model.name for model in suites["quick"].models}
    assert quick == {"digits_cnn", "fashion_mlp", "imdb_text", "multihead"}
    baselines = sorted((root / "baselines").glob("*.json"))
    assert baselines
    for path in baselines:
        baseline = read_baseline(path)
        assert baseline.suite == path.name.split(".")[0] == "quick", path.name
        assert {model.name for model in baseline.models} == quick, path.name
        assert baseline.cpu is not None, path.name
        if path.name != "quick.json":  # a per-CPU file is named after the CPU it holds
            assert path.name == f"quick.{baseline.cpu.slug}.json"
