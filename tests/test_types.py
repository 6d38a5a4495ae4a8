import numpy as np
import pytest

from effkit.types import Latency, Parity, Report, Status, Step, Variant


def test_latency_statistics_match_numpy():
    rng = np.random.default_rng(0)
    seconds = list(rng.lognormal(mean=-9, sigma=0.3, size=501))
    latency = Latency.from_seconds(seconds, batch=4, threads=2)
    ms = np.array(seconds) * 1e3
    assert latency.p50 == pytest.approx(np.percentile(ms, 50))
    assert latency.p90 == pytest.approx(np.percentile(ms, 90))
    assert latency.p99 == pytest.approx(np.percentile(ms, 99))
    assert latency.mean == pytest.approx(ms.mean())
    assert latency.stdev == pytest.approx(ms.std(ddof=1))
    assert latency.min == pytest.approx(ms.min())
    assert (latency.batch, latency.threads, latency.runs) == (4, 2, 501)


def test_latency_needs_timings():
    with pytest.raises(ValueError):
        Latency.from_seconds([], batch=1, threads=1)


def _variant(**overrides):
    values = dict(
        name="pruned50-tflite-int8",
        format="tflite",
        quantization="int8",
        backend="converter",
        sparsity=0.5,
        size_bytes=1000,
        gzip_bytes=600,
        top1=0.97,
        top1_delta_pp=-0.3,
        latency_ms=Latency.from_seconds([0.001, 0.002], batch=1, threads=1),
        parity=Parity(max_abs_diff=0.01, mean_abs_diff=0.001, top1_agreement=99.5),
        steps=(Step("prune", {"target_sparsity": 0.5}), Step("quantize", {"mode": "int8"})),
    )
    values.update(overrides)
    return Variant(**values)


def test_report_round_trips_through_json():
    report = Report(
        environment={"cpu": "x"},
        config={"seed": 0},
        model={"name": "m"},
        data={"name": "digits"},
        baseline={"top1": 0.97},
        variants=(_variant(), _variant(name="broken", status=Status.FAILED, error="boom", latency_ms=None)),
        recommended="pruned50-tflite-int8",
    )
    again = Report.from_json(report.to_json())
    assert again == report
    assert again.variant("broken").status == Status.FAILED
    assert [v.name for v in again.failed] == ["broken"]


def test_report_json_keeps_the_contract_names():
    data = Report({}, {}, {}, {}, {"top1": 1.0}, (_variant(),), None).to_dict()
    assert {"schema_version", "environment", "config", "baseline", "variants", "recommended"} <= set(data)
    variant = data["variants"][0]
    for key in (
        "name",
        "format",
        "quantization",
        "backend",
        "sparsity",
        "status",
        "error",
        "path",
        "size_bytes",
        "gzip_bytes",
        "top1",
        "top1_delta_pp",
        "latency_ms",
    ):
        assert key in variant
    assert set(variant["latency_ms"]) >= {"p50", "p90", "p99", "mean", "batch", "threads"}
    assert variant["steps"][0] == {"stage": "prune", "target_sparsity": 0.5}


def test_unknown_variant_name_lists_the_known_ones():
    report = Report({}, {}, {}, {}, {}, (_variant(),), None)
    with pytest.raises(KeyError, match="pruned50-tflite-int8"):
        report.variant("nope")


def test_a_file_step_is_export_for_float32_and_quantize_otherwise_with_its_own_keys_first():
    from effkit.errors import StageError

    assert Step.of_file("onnx", "tf2onnx") == Step("export", {"format": "onnx", "backend": "tf2onnx"})
    assert Step.of_file("tflite", "converter", "none").stage == "export"
    step = Step.of_file("tflite", "litert", "int8", {"calibration_samples": 64})
    assert step.stage == "quantize"
    assert list(step.params) == ["mode", "format", "backend", "calibration_samples"]
    with pytest.raises(StageError, match=r"named like the step's own: \['backend'\]"):
        Step.of_file("tflite", "litert", "int8", {"backend": "other"})


def test_a_technique_result_records_its_step_with_what_isolation_added():
    from effkit.techniques.made import Made
    from effkit.techniques.prune import PruneResult

    result = PruneResult(
        model=None, target_sparsity=0.5, sparsity=0.5, layer_sparsity={"dense": 0.5}, pruned_layers=("dense",),
        epochs_run=2, val_top1=0.9, seconds=1.0,
    )  # fmt: skip
    assert isinstance(result, Made) and result.step().stage == "prune"
    assert "retried" not in result.step().params
    crashed = result.isolated({"retried": "with oneDNN off"})
    assert crashed.step().params["retried"] == "with oneDNN off" and crashed.step().params["sparsity"] == 0.5
    assert result.isolation == {}  # the original is unchanged
