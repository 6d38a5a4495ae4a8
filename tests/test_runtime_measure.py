import time

import numpy as np
import pytest

from effkit.config import Format, LatencyConfig, Quant
from effkit.errors import StageError
from effkit.export.onnx import export_onnx
from effkit.export.tflite import export_tflite
from effkit.load.classifier import OutputKind
from effkit.quantize.tflite_converter import quantize_tflite
from effkit.runtime import open_runner
from effkit.runtime.measure import file_sizes, parity, time_latency, weight_sparsity


@pytest.fixture(scope="module")
def artifacts(tiny_model, digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runtime")
    return {
        "float": export_tflite(tiny_model, folder / "f.tflite"),
        "int8": quantize_tflite(
            tiny_model, folder / "q.tflite", quantization=Quant.INT8, calibration=digits.x_train[:100]
        ),
        "onnx": export_onnx(tiny_model, folder / "f.onnx"),
    }


@pytest.mark.parametrize("kind", ["float", "int8", "onnx"])
def test_batched_predictions_equal_sample_by_sample_ones(kind, artifacts, digits):
    runner = open_runner(artifacts[kind], Format.ONNX if kind == "onnx" else Format.TFLITE)
    x = digits.x_test[:300]  # spans two evaluation chunks of different sizes
    (batched,) = runner.predict(x)
    single = np.concatenate([runner.predict(x[i : i + 1])[0] for i in range(0, 300, 37)])
    np.testing.assert_allclose(batched[::37], single, atol=1e-6)


def test_bound_call_returns_the_same_raw_output_as_predict(artifacts, digits):
    runner = open_runner(artifacts["int8"], Format.TFLITE)
    (raw,) = runner.bind(digits.x_test[:1])()
    assert raw.dtype == np.int8
    np.testing.assert_allclose(runner.dequantize_output(raw), runner.predict(digits.x_test[:1])[0], atol=1e-7)


def test_int8_input_quantization_uses_scale_and_zero_point(artifacts):
    runner = open_runner(artifacts["int8"], Format.TFLITE)
    scale, zero_point = runner.input["quantization"]
    x = np.array([0.0, 16.0, 1e6, -1e6], dtype=np.float32)
    q = runner.quantize_input(x)
    assert q.dtype == np.int8
    assert q[0] == zero_point
    assert abs((int(q[1]) - zero_point) * scale - 16.0) <= scale
    assert (q[2], q[3]) == (127, -128)


def test_corrupt_artifacts_fail_to_open_with_stage_errors(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3" * 10)
    with pytest.raises(StageError, match="LiteRT cannot load"):
        open_runner(bad, Format.TFLITE)
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"\x08\x01garbage")
    with pytest.raises(StageError, match="ONNX Runtime cannot load"):
        open_runner(bad_onnx, Format.ONNX)


def test_latency_protocol_honours_minimum_runs_and_duration():
    calls = []
    config = LatencyConfig(warmup_runs=5, warmup_seconds=0.0, min_runs=50, min_seconds=0.05)
    latency = time_latency(lambda: calls.append(time.sleep(0.0002)), config=config, batch=1, threads=1)
    assert latency.runs >= 50
    assert len(calls) == latency.runs + 5  # exactly the 5 warm-up runs (warmup_seconds=0) before the timed ones
    assert latency.runs * latency.mean >= 0.05 * 1e3 * 0.9  # ms: the timed calls span at least min_seconds
    assert 0.2 <= latency.p50 <= 5.0 and latency.min <= latency.p50 <= latency.p90 <= latency.p99


def test_latency_stops_at_max_seconds():
    config = LatencyConfig(warmup_runs=1, warmup_seconds=0.0, min_runs=10_000, min_seconds=0.0, max_seconds=0.05)
    latency = time_latency(lambda: time.sleep(0.005), config=config, batch=1, threads=1)
    assert latency.runs < 100


def test_file_sizes_reports_raw_and_gzip(tmp_path):
    path = tmp_path / "zeros.bin"
    path.write_bytes(bytes(100_000))
    raw, gz = file_sizes(path)
    assert raw == 100_000 and gz < 1_000
    noise = tmp_path / "noise.bin"
    noise.write_bytes(np.random.default_rng(0).bytes(10_000))
    raw, gz = file_sizes(noise)
    assert gz >= raw


def test_parity_figures():
    reference = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    outputs = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    result = parity(reference, outputs, OutputKind.PROBABILITIES)
    assert result.max_abs_diff == pytest.approx(0.2)
    assert result.mean_abs_diff == pytest.approx((0.1 * 4 + 0.2 * 2) / 6)
    assert result.top1_agreement == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="shape"):
        parity(reference, outputs[:2], OutputKind.PROBABILITIES)


def test_parity_thresholds_depend_on_precision():
    from effkit.config import ParityConfig
    from effkit.runtime.measure import parity_problem
    from effkit.types import Parity

    config = ParityConfig()
    probabilities = np.tile([[0.9, 0.1]], (1000, 1))
    close = Parity(max_abs_diff=5e-4, mean_abs_diff=1e-4, top1_agreement=100.0)
    assert parity_problem(close, probabilities, quantization=Quant.NONE, config=config) is None
    drifted = Parity(max_abs_diff=5e-3, mean_abs_diff=1e-3, top1_agreement=100.0)
    assert "max abs output difference" in parity_problem(drifted, probabilities, quantization=Quant.NONE, config=config)
    assert parity_problem(drifted, probabilities, quantization=Quant.FLOAT16, config=config) is None
    # Logits in the hundreds: the float tolerance scales with the largest reference output.
    assert parity_problem(drifted, np.tile([[300.0, -20.0]], (1000, 1)), quantization=Quant.NONE, config=config) is None
    # On 359 test samples one flipped near-tie (99.72%) is tolerated for float artifacts, two are not.
    one_flip = Parity(max_abs_diff=5e-4, mean_abs_diff=1e-4, top1_agreement=100 * 358 / 359)
    two_flips = Parity(max_abs_diff=5e-4, mean_abs_diff=1e-4, top1_agreement=100 * 357 / 359)
    small = probabilities[:359]
    assert parity_problem(one_flip, small, quantization=Quant.FLOAT16, config=config) is None
    assert "99.44%" in parity_problem(two_flips, small, quantization=Quant.FLOAT16, config=config)
    loose = Parity(max_abs_diff=0.3, mean_abs_diff=0.01, top1_agreement=97.5)
    assert parity_problem(loose, probabilities, quantization=Quant.INT8, config=config) is None
    assert "97.50% < 99.9%" in parity_problem(loose, probabilities, quantization=Quant.FLOAT16, config=config)
    worse = Parity(max_abs_diff=0.3, mean_abs_diff=0.01, top1_agreement=96.0)
    assert "96.00% < 97%" in parity_problem(worse, probabilities, quantization=Quant.DYNAMIC, config=config)


def test_a_quantized_regression_head_is_judged_against_its_spread():
    from effkit.config import ParityConfig
    from effkit.runtime.measure import parity_problem
    from effkit.types import Parity

    reference = np.linspace(0, 1, 200)[:, None]  # std about 0.29
    close = Parity(max_abs_diff=0.05, mean_abs_diff=0.01, top1_agreement=None)
    far = Parity(max_abs_diff=0.9, mean_abs_diff=0.2, top1_agreement=None)
    judge = {"reference": reference, "quantization": Quant.INT8, "config": ParityConfig(), "regression": True}
    assert parity_problem(close, **judge) is None
    assert "spread" in parity_problem(far, **judge)


def test_sizes_of_a_folder_artifact(tmp_path):
    (tmp_path / "saved" / "variables").mkdir(parents=True)
    (tmp_path / "saved" / "saved_model.pb").write_bytes(bytes(5000))
    (tmp_path / "saved" / "variables" / "data").write_bytes(bytes(3000))
    raw, gz = file_sizes(tmp_path / "saved")
    assert raw == 8000 and 0 < gz < 1000
    assert file_sizes(tmp_path / "saved") == (raw, gz)  # the same folder, the same bytes


def test_weight_sparsity_counts_only_prunable_kernels(tiny_model):
    from effkit.load import keras_compat

    tfk = keras_compat.tf_keras()
    model = tfk.models.clone_model(tiny_model)
    weights = tiny_model.get_weights()
    weights[0][..., :8] = 0.0  # half the conv kernel's filters
    weights[1][:] = 0.0  # the conv bias does not count
    model.set_weights(weights)
    overall, per_layer = weight_sparsity(model)
    assert per_layer["conv2d"] == pytest.approx(0.5)
    assert per_layer["dense"] == pytest.approx(0.0, abs=0.01)
    kernel_sizes = [w.size for w in weights if w.ndim > 1]
    assert overall == pytest.approx(0.5 * kernel_sizes[0] / sum(kernel_sizes), abs=0.01)
