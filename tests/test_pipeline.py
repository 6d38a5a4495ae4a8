"""compress() end to end on a tiny real model, in the real runtimes."""

import dataclasses
import json

import numpy as np
import pytest

from effkit import recipes
from effkit.config import Backend, CompressConfig, Format, Quant
from effkit.cpu import fingerprint
from effkit.errors import DataError
from effkit.pipeline import compress
from effkit.report.outdir import fresh_dir
from effkit.report.targets import int8_reference, not_slower
from effkit.types import Report, Status

from .conftest import FAST_LATENCY, FAST_PRUNE

SOURCES = ("baseline", "pruned50", "pruned80")
KINDS = (
    "keras",
    "tflite-none",
    "tflite-dynamic",
    "tflite-dynamic-litert",
    "tflite-float16",
    "tflite-int8",
    "tflite-int8-litert",
    "onnx-none",
    "onnx-dynamic",
    "onnx-int8",
)


def test_every_variant_is_made_and_ok(compressed):
    report, _ = compressed
    assert [v.name for v in report.variants] == [f"{s}-{k}" for s in SOURCES for k in KINDS]
    assert all(v.status == Status.OK for v in report.variants), [(v.name, v.error) for v in report.variants]
    for variant in report.variants:
        assert variant.size_bytes > 0 and variant.gzip_bytes > 0
        assert variant.latency_ms.p50 > 0 and variant.latency_ms.runs >= FAST_LATENCY.min_runs
        assert variant.latency_ms.batch == 1
        assert variant.parity.top1_agreement >= 97.0


def test_int8_artifacts_stay_within_two_points_of_keras(compressed):
    report, _ = compressed
    for source in SOURCES:
        keras = report.variant(f"{source}-keras")
        for kind in ("tflite-int8", "tflite-int8-litert", "onnx-int8"):
            int8 = report.variant(f"{source}-{kind}")
            assert abs(int8.top1 - keras.top1) <= 0.02, kind
    assert report.baseline["top1"] > 0.9


def test_float_exports_reproduce_their_keras_model(compressed):
    report, _ = compressed
    for source in SOURCES:
        for kind in ("tflite-none", "onnx-none"):
            variant = report.variant(f"{source}-{kind}")
            assert variant.parity.max_abs_diff <= 1e-4
            assert variant.parity.top1_agreement == 100.0
            assert variant.top1 == report.variant(f"{source}-keras").top1


def test_pruning_shrinks_every_artifact_after_gzip(compressed):
    report, _ = compressed
    for kind in KINDS[1:]:
        baseline = report.variant(f"baseline-{kind}")
        half = report.variant(f"pruned50-{kind}")
        most = report.variant(f"pruned80-{kind}")
        assert most.gzip_bytes < half.gzip_bytes < baseline.gzip_bytes, kind
    assert report.variant("pruned80-tflite-int8").sparsity == pytest.approx(0.8, abs=0.01)
    assert report.variant("baseline-tflite-int8").sparsity < 0.05


def test_steps_record_how_each_variant_was_made(compressed):
    report, _ = compressed
    steps = report.variant("pruned50-tflite-int8").steps
    assert [s.stage for s in steps] == ["prune", "quantize"]
    assert steps[0].params["target_sparsity"] == 0.5 and steps[0].params["path"] == "tfmot"
    quantize = {key: value for key, value in steps[1].params.items() if key != "xnnpack"}
    assert quantize == {"mode": "int8", "format": "tflite", "backend": "converter", "calibration_samples": 200}
    # XNNPACK takes the convolution and the dense layers on every CPU; what it leaves to LiteRT's builtin kernels
    # (int8 SOFTMAX on the CPUs seen so far) may differ, but every op of the file is one or the other.
    from effkit.export.tflite_graph import read_graph

    xnnpack = steps[1].params["xnnpack"]
    ops = [op.op for op in read_graph(compressed[1] / report.variant("pruned50-tflite-int8").path).ops]
    assert xnnpack["delegated_ops"] + sum(xnnpack["fallback"].values()) == len(ops) == 6
    assert not {"CONV_2D", "FULLY_CONNECTED"} & set(xnnpack["fallback"])
    assert [s.stage for s in report.variant("baseline-onnx-none").steps] == ["export"]
    assert report.variant("baseline-keras").steps == ()
    litert = report.variant("pruned80-tflite-int8-litert").steps[-1].params
    assert litert["backend"] == "litert" and litert["recipe"] == "static_wi8_ai8"
    assert litert["from"] == "pruned80-tflite-none.tflite"
    onnx_static = report.variant("baseline-onnx-int8").steps[-1].params
    assert onnx_static["format"] == "onnx" and onnx_static["quant_format"] == "qdq"
    # ORT's guidance, read off this CPU's flags: U8S8 with an int8 dot product (VNNI, AMX), U8U8 on AVX2-only x86
    flags = _cpu_flags()
    expected = "u8s8" if flags is None or flags & {"avx512_vnni", "avx_vnni", "amx_int8"} else "u8u8"
    assert onnx_static["per_channel"] is True and onnx_static["types"] == expected
    assert onnx_static["chosen_for_cpu"] == {"types": expected}
    assert onnx_static["isa_class"] == fingerprint().isa_class
    assert "ConvInteger" in report.variant("baseline-onnx-dynamic").steps[-1].params["note"]


def _cpu_flags() -> set[str] | None:
    """This x86 machine's CPU flags as Linux lists them; None elsewhere."""
    import platform
    from pathlib import Path

    info = Path("/proc/cpuinfo")
    if platform.machine() not in ("x86_64", "AMD64") or not info.is_file():
        return None
    line = next(line for line in info.read_text().splitlines() if line.startswith("flags"))
    return set(line.split(":", 1)[1].split())


def test_latency_records_the_runtime_it_was_measured_in(compressed):
    report, _ = compressed
    assert report.variant("baseline-tflite-int8").latency_ms.runtime["engine"] == "litert"
    onnx = report.variant("baseline-onnx-int8").latency_ms
    assert onnx.runtime == {
        "engine": "onnxruntime",
        "provider": "CPUExecutionProvider",
        "graph_optimization": "all",
        "intra_op_threads": 1,
    }
    assert onnx.threads == 1


def test_compression_ratios_and_the_recommendation(compressed):
    report, _ = compressed
    reference = report.variant("baseline-tflite-none")
    assert reference.compression_raw == 1.0 and reference.compression_gzip == 1.0
    int8 = report.variant("pruned80-tflite-int8")
    assert int8.compression_raw == pytest.approx(reference.size_bytes / int8.size_bytes, rel=1e-3)
    assert int8.compression_raw > 3.0
    chosen = report.variant(report.recommended)
    assert chosen.format != "keras" and chosen.top1_delta_pp >= -1.0
    # the smallest download among those no slower than the baseline int8 file beyond timing noise (which files
    # those are depends on this CPU's kernels), or the smallest when none is that fast
    reference = int8_reference(report.variants)
    eligible = [v for v in report.variants if v.ok and v.format != "keras" and v.top1_delta_pp >= -1.0]
    fast = [v for v in eligible if not_slower(v, reference)]
    assert chosen.gzip_bytes == min(v.gzip_bytes for v in fast or eligible)


def test_report_files_on_disk_match_the_returned_report(compressed):
    report, out = compressed
    on_disk = Report.from_json((out / "report.json").read_text())
    assert on_disk == report
    assert json.loads((out / "report.json").read_text())["schema_version"] == 1
    assert "★" in (out / "report.md").read_text()
    for variant in report.variants:
        if variant.format != "keras" or variant.name != "baseline-keras":
            assert (out / variant.path).is_file(), variant.path
    assert not list(out.rglob(".*partial*"))


@pytest.mark.zoo  # test_models' digits_cnn takes the same path (a Keras 3 file, bridged, pruned, both formats)
def test_a_keras3_model_file_goes_through(tiny_keras3_file, digits, tmp_path):
    config = CompressConfig(sparsities=(0.5,), quantizations=(Quant.INT8,), prune=FAST_PRUNE, latency=FAST_LATENCY)
    report = compress(tiny_keras3_file, digits, config=config, out_dir=tmp_path)
    assert report.model["keras_generation"] == 3
    assert report.model["bridge_max_abs_diff"] <= 1e-4
    assert len(report.variants) == 12  # (keras, tflite x3, onnx x2) for baseline and pruned50
    assert all(v.status == Status.OK for v in report.variants), [(v.name, v.error) for v in report.variants]


def test_a_keras3_model_with_a_custom_layer_is_pruned_in_keras3_and_every_variant_is_made(
    keras3_custom_layer_file, tmp_path, capsys
):
    from effkit.cli import main

    out = tmp_path / "out"
    args = ["compress", str(keras3_custom_layer_file), "--data", "digits", "--out", str(out), "--sparsity", "0.5"]
    assert main([*args, "--prune-epochs", "1", "--quiet"]) == 0, capsys.readouterr().err
    report = Report.from_json((out / "report.json").read_text())
    assert report.model["keras_generation"] == 3 and report.model["bridge_max_abs_diff"] is None
    assert "ChannelScale" in report.model["bridge_error"]  # why tfmot could not prune it
    assert [v.name for v in report.variants] == [f"{s}-{kind}" for s in ("baseline", "pruned50") for kind in KINDS]
    assert all(v.status == Status.OK for v in report.variants), [(v.name, v.error) for v in report.variants]
    assert report.baseline["top1"] > 0.8
    for source in ("baseline", "pruned50"):
        for kind in ("tflite-none", "onnx-none"):
            assert report.variant(f"{source}-{kind}").parity.max_abs_diff <= 1e-4, (source, kind)
    prune_step = report.variant("pruned50-tflite-int8").steps[0]
    assert prune_step.stage == "prune" and prune_step.params["path"] == "keras3"
    assert prune_step.params["epochs"] == 1  # 18 steps, and still pruned to the target (docs/pitfalls.md)
    for kind in KINDS:
        pruned, baseline = report.variant(f"pruned50-{kind}"), report.variant(f"baseline-{kind}")
        assert pruned.sparsity == pytest.approx(0.5, abs=0.01), kind
        assert pruned.top1 > report.baseline["top1"] - 0.05, kind
        if kind != "keras":  # the exported zeros stay exact: they show after gzip, in int8 too
            assert pruned.gzip_bytes < 0.9 * baseline.gzip_bytes, kind


def test_a_rebuild_that_misses_parity_is_pruned_in_keras3(tiny_keras3_model, digits, tmp_path, monkeypatch):
    from effkit.load import keras_compat

    monkeypatch.setattr(keras_compat, "BRIDGE_TOLERANCE", -1.0)  # no rebuild can be within it
    config = CompressConfig(
        sparsities=(0.5,), quantizations=(Quant.NONE,), formats=(Format.TFLITE,), prune=FAST_PRUNE, latency=FAST_LATENCY
    )
    report = compress(tiny_keras3_model, digits, config=config, out_dir=tmp_path)
    assert report.model["bridge_error"].startswith("the tf_keras rebuild of the Keras 3 model differs")
    assert [(v.name, v.status) for v in report.variants] == [
        ("baseline-keras", Status.OK),
        ("baseline-tflite-none", Status.OK),
        ("pruned50-keras", Status.OK),
        ("pruned50-tflite-none", Status.OK),
    ]
    for variant in report.variants[1::2]:
        assert variant.parity.max_abs_diff <= 1e-4  # exported from the Keras 3 model, not the rebuild
    pruned = report.variant("pruned50-tflite-none")
    assert pruned.steps[0].params["path"] == "keras3" and pruned.sparsity == pytest.approx(0.5, abs=0.01)


def _replace_recipe(monkeypatch, fmt, quantization, produce, backend=None):
    """Register a producer in place of one real recipe, as a plug-in backend would."""
    replaced = tuple(
        dataclasses.replace(r, produce=produce)
        if (r.format, r.quantization) == (fmt, quantization) and backend in (None, r.backend)
        else r
        for r in recipes.RECIPES
    )
    monkeypatch.setattr(recipes, "RECIPES", replaced)


def _not_a_flatbuffer(inputs, path):
    path.write_bytes(b"TFL3 this is not a flatbuffer")
    return {}


def _miscalibrated_int8(inputs, path):
    """A real int8 artifact whose calibration saw inputs 100x too small: its input scale saturates."""
    from effkit.quantize.tflite_converter import quantize_tflite

    quantize_tflite(inputs.model, path, quantization=Quant.INT8, calibration=inputs.calibration * 0.01)
    return {}


def _corrupted_float32(inputs, path):
    """A float32 artifact with one Dense kernel overwritten in the flatbuffer: valid file, wrong weights."""
    from effkit.export.tflite import export_tflite

    export_tflite(inputs.model, path)
    dense = next(layer for layer in inputs.model.layers if type(layer).__name__ == "Dense")  # names vary by order
    kernel = dense.get_weights()[0]
    data = path.read_bytes()
    stored = kernel.T.astype("float32").tobytes()  # TFLite keeps FullyConnected weights as [out, in]
    at = data.find(stored)
    assert at > 0, "the kernel's bytes were not found in the flatbuffer"
    noise = np.random.default_rng(0).normal(0, 1, kernel.size).astype("float32").tobytes()
    path.write_bytes(data[:at] + noise + data[at + len(stored) :])
    return {}


def test_one_failing_variant_does_not_stop_the_others(tiny_model, digits, tmp_path, monkeypatch):
    _replace_recipe(monkeypatch, Format.TFLITE, Quant.FLOAT16, _not_a_flatbuffer)
    config = CompressConfig(sparsities=(), formats=(Format.TFLITE,), prune=FAST_PRUNE, latency=FAST_LATENCY)
    report = compress(tiny_model, digits, config=config, out_dir=tmp_path)
    failed = report.variant("baseline-tflite-float16")
    assert failed.status == Status.FAILED and "LiteRT cannot load" in failed.error
    others = [v for v in report.variants if v.name != failed.name]
    assert len(others) == 6 and all(v.status == Status.OK for v in others)
    assert report.recommended != failed.name


@pytest.mark.parametrize(
    "quantization, produce, message",
    [
        (Quant.INT8, _miscalibrated_int8, "top-1 agreement with Keras"),
        (Quant.NONE, _corrupted_float32, "max abs output difference"),
    ],
    ids=["miscalibrated-int8", "corrupted-float32-weight"],
)
def test_a_broken_artifact_is_a_mismatch_and_never_recommended(
    quantization, produce, message, tiny_model, digits, tmp_path, monkeypatch
):
    _replace_recipe(monkeypatch, Format.TFLITE, quantization, produce, backend=Backend.CONVERTER)
    config = CompressConfig(
        sparsities=(),
        quantizations=(Quant.INT8,),
        formats=(Format.TFLITE,),
        tflite_backends=(Backend.CONVERTER,),
        max_accuracy_drop=100.0,  # everything would be eligible on accuracy alone
        latency=FAST_LATENCY,
    )
    report = compress(tiny_model, digits, config=config, out_dir=tmp_path)
    broken = report.variant(f"baseline-tflite-{quantization}")
    assert broken.status == Status.MISMATCH, (broken.status, broken.parity)
    assert message in broken.error
    assert broken.parity is not None and broken.top1 is not None  # the figures stay in the report
    assert report.recommended not in (None, broken.name)
    assert "(mismatch)" in (tmp_path / "report.md").read_text()


def test_cli_exits_3_and_names_a_mismatched_variant(tiny_tf_keras_file, tmp_path, monkeypatch, capsys):
    from effkit.cli import main

    _replace_recipe(monkeypatch, Format.TFLITE, Quant.INT8, _miscalibrated_int8, backend=Backend.CONVERTER)
    args = [
        "compress",
        str(tiny_tf_keras_file),
        "--out",
        str(tmp_path / "out"),
        "--sparsity",
        "",
        "--quant",
        "int8",
        "--formats",
        "tflite",
        "--tflite-backend",
        "converter",
        "--quiet",
    ]
    assert main(args) == 3
    assert "effkit: baseline-tflite-int8 mismatch: top-1 agreement" in capsys.readouterr().err


def test_data_that_does_not_fit_the_model_fails_before_anything_is_written(tiny_model, digits, tmp_path):
    shifted = dataclasses.replace(digits, y_test=digits.y_test + 5)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="outside the model's 10 classes"):
        compress(tiny_model, shifted, config=CompressConfig(sparsities=()), out_dir=out)
    assert not out.exists()


def test_default_output_folders_are_numbered_not_overwritten(tmp_path):
    first = tmp_path / "tiny"
    assert fresh_dir(first) == first
    first.mkdir()
    (first / "report.json").write_text("{}")
    assert fresh_dir(first) == tmp_path / "tiny-2"


def test_a_savedmodel_folder_goes_through_and_is_sized_as_a_folder(tiny_model, digits, tmp_path):
    folder = tmp_path / "saved"
    tiny_model.save(folder, save_format="tf")
    config = CompressConfig(sparsities=(), quantizations=(Quant.NONE,), formats=(Format.TFLITE,), latency=FAST_LATENCY)
    report = compress(folder, digits, config=config, out_dir=tmp_path / "out")
    keras_variant = report.variant("baseline-keras")
    assert keras_variant.status == Status.OK, keras_variant.error
    assert keras_variant.size_bytes == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_each_tflite_variant_records_tflite_micro_and_mcu_gets_a_full_integer_one(compressed):
    report, _ = compressed
    for variant in report.variants:
        assert (variant.micro is not None) == (variant.format == "tflite"), variant.name
    dynamic = [v for v in report.variants if v.format == "tflite" and v.quantization == "dynamic"]
    assert len(dynamic) == 6 and all(not v.micro["runs"] and "hybrid" in v.micro["reason"] for v in dynamic)
    int8 = report.variant("baseline-tflite-int8")
    assert int8.micro["runs"] and int8.micro["full_integer"] and int8.micro["arena_bytes"] > 0
    mcu = report.variant(report.recommended_by_target["mcu"])
    assert mcu.quantization == "int8" and mcu.micro["full_integer"] and mcu.micro["runs"]
    assert report.recommended_by_target["mobile"] == report.recommended
    assert "Best per target" in (compressed[1] / "report.md").read_text()
