"""effkit bench: suites, results, the baseline gate with injected regressions, CI output, plots (issue #5)."""

from __future__ import annotations

import copy
import json
import struct

import pytest

from effkit.bench import gate, load_suite, results_markdown, run_suite, write_results
from effkit.cli import main
from effkit.errors import ConfigError, InputError
from effkit.gate import Thresholds, compare
from effkit.plots import pareto_front

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
def bench_run(suite_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    suite = load_suite(suite_file)
    results = run_suite(suite, out)
    write_results(results, out)
    return suite, results, out


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
    assert by_name["baseline-tflite-none"]["latency_ratio"] == 1.0
    assert 0 < by_name["baseline-tflite-int8"]["latency_ratio"] < 5
    for variant in model["variants"]:
        assert [g["batch"] for g in variant["latency_grid"]] == [1, 4]
        if variant["format"] != "keras":  # Keras runs on TensorFlow's own thread pool
            assert [g["threads"] for g in variant["latency_grid"]] == [1, 1]
        assert variant["latency_grid"][1]["throughput"] > 0
        if variant["format"] != "keras":
            assert variant["load_ms"] > 0
            assert 0 < variant["memory_mb"]["model"] < variant["memory_mb"]["peak"] < 500  # no TensorFlow in it
    assert json.loads((out / "results.json").read_text()) == results


def test_gate_passes_an_identical_rerun(bench_run, tmp_path):
    suite, results, out = bench_run
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(results))
    verdict = gate(copy.deepcopy(results), baseline, suite.thresholds, out)
    assert verdict == {"baseline": str(baseline), "passed": True, "regressions": []}


def _variant(results, name):
    return next(v for v in results["models"][0]["variants"] if v["name"] == name)


def test_gate_names_injected_accuracy_size_and_status_regressions(bench_run, tmp_path):
    suite, results, out = bench_run
    claimed = copy.deepcopy(results)  # a baseline that claims what this run does not deliver
    _variant(claimed, "baseline-tflite-int8")["top1"] += 0.02
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


def test_a_latency_regression_is_confirmed_by_timing_again(bench_run, tmp_path):
    suite, results, out = bench_run
    claimed = copy.deepcopy(results)
    onnx = _variant(claimed, "baseline-onnx-none")
    onnx["latency_ratio"] /= 6  # the baseline claims this artifact was six times faster than it is
    noisy = copy.deepcopy(results)
    _variant(noisy, "baseline-tflite-int8")["latency_ratio"] *= 6  # this run's figure hit a burst of noise
    baseline = tmp_path / "claimed.json"
    baseline.write_text(json.dumps(claimed))
    verdict = gate(noisy, baseline, suite.thresholds, out)
    assert [(r["variant"], r["metric"]) for r in verdict["regressions"]] == [("baseline-onnx-none", "latency_ratio")]
    assert "latency_ratio_first" in _variant(noisy, "baseline-tflite-int8")  # re-timed, and cleared


def test_compare_judges_failures_and_missing_models():
    baseline = {
        "models": [{"name": "a", "status": "ok", "variants": []}, {"name": "b", "status": "ok", "variants": []}]
    }
    current = {"models": [{"name": "a", "status": "failed", "error": "cannot load model"}]}
    rows = compare(current, baseline, Thresholds())
    assert [(r["model"], r["current"]) for r in rows] == [("a", "failed"), ("b", "missing")]


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
    rows = compare(now, baseline, Thresholds(latency_floor_ms=0.02))
    expected = [("v", "+64% > 30.0%")] if flagged else []
    assert [(r["variant"], r["why"].split(",")[0]) for r in rows] == expected
    assert compare(now, baseline, Thresholds(latency_floor_ms=0.0))  # without the floor it is judged


def test_cli_bench_exits_1_with_the_offending_rows_and_0_on_a_rerun(
    suite_file, bench_run, tmp_path, capsys, monkeypatch
):
    _, results, _ = bench_run
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    claimed = copy.deepcopy(results)
    _variant(claimed, "baseline-tflite-none")["top1"] = 1.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(claimed))
    out = tmp_path / "run"
    assert main(["bench", str(suite_file), "--out", str(out), "--baseline", str(bad), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "| tiny | baseline-tflite-none | top1 | 1.0000 |" in captured.out
    assert "1 regression(s)" in captured.err
    assert "FAILED: 1 regression(s)" in summary.read_text()

    good = tmp_path / "good.json"
    assert (
        main(["bench", str(suite_file), "--out", str(out), "--baseline", str(good), "--update-baseline", "--quiet"])
        == 0
    )
    assert json.loads(good.read_text())["models"][0]["name"] == "tiny"
    assert main(["bench", str(suite_file), "--out", str(out), "--baseline", str(good), "--quiet"]) == 0
    assert "gate passed" in capsys.readouterr().out


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
        {
            "suite": "s",
            "thresholds": {"latency_reference": "r"},
            "models": [{"name": "m", "data": "d", "status": "failed", "error": "boom"}],
        }
    )
    assert "Failed: boom" in text and "Gate" not in text
