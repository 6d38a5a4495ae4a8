"""Structured 2:4 sparsity: tfmot's `sparsity_m_by_n`, checked on the artifact, and the converter's sparse encoding
kept only where it shrinks the file."""

import numpy as np
import pytest

from effkit.config import Backend, CompressConfig, Format, PruneConfig, Quant, parse_m_by_n
from effkit.errors import ConfigError
from effkit.export.tflite import export_sparse_tflite, export_tflite, m_by_n_check, tflite_kernels
from effkit.load.classifier import describe
from effkit.quantize.tflite_converter import quantize_tflite
from effkit.runtime import open_runner
from effkit.runtime.measure import file_sizes, m_by_n_pattern, top1
from effkit.techniques.prune import prune

from .conftest import FAST_LATENCY, FAST_PRUNE, outputs_of


def test_m_by_n_pattern_counts_nonzeros_in_groups_along_the_input_axis():
    holds = np.array([[1.0, 0.0, 2.0, 0.0, 0.0, 3.0, 0.0, 4.0]])
    assert m_by_n_pattern(holds, 2, 4)
    assert not m_by_n_pattern(np.array([[1.0, 1.0, 1.0, 0.0]]), 2, 4)
    # Groups run along the given axis only: the same values read along the other axis break it.
    assert m_by_n_pattern(holds.T, 2, 4, axis=0)
    assert not m_by_n_pattern(np.ones((3, 4)), 2, 4, axis=0) and m_by_n_pattern(np.ones((4, 2)), 2, 4)
    # A short last group counts as padded with zeros.
    assert m_by_n_pattern(np.array([[0.0, 0.0, 1.0, 1.0, 5.0, 6.0]]), 2, 4)
    assert not m_by_n_pattern(np.array([[0.0, 0.0, 1.0, 1.0, 5.0, 6.0, 7.0]]), 2, 4)
    # Conv layout [out, h, w, in]
    kernel = np.zeros((2, 3, 3, 8))
    kernel[..., ::2] = 1.0
    assert m_by_n_pattern(kernel, 2, 4)
    kernel[0, 1, 1, 1] = 1.0
    assert not m_by_n_pattern(kernel, 2, 4)


def test_m_by_n_setting_parses_and_refuses_garbage():
    assert parse_m_by_n(" 2:4 ") == (2, 4)
    assert PruneConfig(m_by_n="2:4").m_by_n_pair == (2, 4)
    assert PruneConfig().m_by_n_pair is None
    for bad in ("2-4", "4:2", "0:4", "two:four", "2:4:8"):
        with pytest.raises(ConfigError, match="m-by-n sparsity"):
            CompressConfig(prune=PruneConfig(m_by_n=bad)).validate()
    config = CompressConfig(prune=PruneConfig(m_by_n="2:4"))
    assert CompressConfig.from_dict(config.to_dict()) == config


def test_the_cli_refuses_a_malformed_pattern_before_loading_anything(capsys):
    from effkit.cli import main

    assert main(["compress", "--sparsity-m-by-n", "4:2", "--quiet"]) == ConfigError.exit_code
    assert "m-by-n sparsity '4:2'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def pruned24(tiny_model, digits):
    info = describe(tiny_model, digits.x_train[:8], name="tiny")
    return prune(tiny_model, digits, info=info, config=FAST_PRUNE, m_by_n=(2, 4)), info


def test_dense_and_conv_layers_take_the_pattern_and_a_one_channel_conv_stays_dense(pruned24):
    result, _ = pruned24
    assert result.m_by_n == "2:4"
    assert result.pruned_layers == ("dense", "dense_1")
    assert result.left_dense == {"conv2d": "1 input channel(s): nothing to prune"}
    params = result.step_params()
    assert params["m_by_n"] == "2:4" and params["m_by_n_layers"] == ["dense", "dense_1"]
    assert params["target_sparsity"] == 0.5
    for layer in result.model.layers:
        if layer.name in result.pruned_layers:
            kernel = layer.get_weights()[0]  # Keras Dense kernel: [in, out]
            assert m_by_n_pattern(kernel, 2, 4, axis=0)
            assert result.layer_sparsity[layer.name] == pytest.approx(0.5)
    assert result.layer_sparsity["conv2d"] < 0.05


def test_2_of_4_keeps_accuracy(pruned24, tiny_model, digits):
    result, info = pruned24
    baseline = top1(outputs_of(tiny_model, digits.x_test), digits.y_test, info.output_kind)
    accuracy = top1(outputs_of(result.model, digits.x_test), digits.y_test, info.output_kind)
    assert accuracy > 0.85
    assert accuracy > baseline - 0.05


def test_the_artifact_holds_the_pattern_in_the_pruned_kernels(pruned24, tiny_model, tmp_path):
    result, _ = pruned24
    for name, write in {
        "float32": lambda model, path: export_tflite(model, path),
        "dynamic": lambda model, path: quantize_tflite(model, path, quantization=Quant.DYNAMIC),
    }.items():
        path = write(result.model, tmp_path / f"{name}.tflite")
        check = m_by_n_check(path, m=2, n=4, layers=result.pruned_layers)
        assert check["pattern_held"], (name, check)
        assert check["layers"] == {"dense": True, "dense_1": True}
        assert {kernel.op for kernel in tflite_kernels(path)} == {"CONV_2D", "FULLY_CONNECTED"}
    # The check reads real weights: the unpruned model's kernels do not hold the pattern.
    dense = export_tflite(tiny_model, tmp_path / "unpruned.tflite")
    assert m_by_n_check(dense, m=2, n=4, layers=("dense", "dense_1"))["pattern_held"] is False


def test_the_sparse_encoding_is_kept_only_when_smaller_and_running(pruned24, tiny_model, digits, tmp_path):
    result, _ = pruned24
    path = tmp_path / "sparse.tflite"
    encoding = export_sparse_tflite(result.model, path, dense=tmp_path / "dense.tflite")
    kept_bytes = file_sizes(path)
    recorded = encoding.step_params()["sparse_encoding"]
    assert recorded["kept"] == encoding.kept and recorded["reason"] == encoding.reason
    assert encoding.densify_ops == 2  # both Dense kernels are at least 30% zeros
    # Measured: 47,148 raw / 38,638 gzip bytes against 71,864 / 40,763 dense: a third smaller raw, a few % gzipped.
    # The rule's other side (not smaller: the dense file is kept) is the unpruned model below.
    assert encoding.kept and encoding.reason.startswith("2 tensor(s) encoded sparse: smaller raw and gzipped")
    assert (
        encoding.sparse_bytes[0] < 0.75 * encoding.dense_bytes[0] and encoding.sparse_bytes[1] < encoding.dense_bytes[1]
    )
    assert kept_bytes == (encoding.sparse_bytes if encoding.kept else encoding.dense_bytes)
    assert kept_bytes[0] <= encoding.dense_bytes[0] and kept_bytes[1] <= encoding.dense_bytes[1]
    # Whatever was kept runs in LiteRT and gives the dense file's outputs.
    kept = open_runner(path, Format.TFLITE).predict(digits.x_test)[0]
    dense = open_runner(tmp_path / "dense.tflite", Format.TFLITE).predict(digits.x_test)[0]
    np.testing.assert_allclose(kept, dense, atol=1e-5)

    # An unpruned model has no tensor the converter encodes as sparse: the dense file is kept.
    path = tmp_path / "unpruned.tflite"
    encoding = export_sparse_tflite(tiny_model, path, dense=tmp_path / "unpruned-dense.tflite")
    assert not encoding.kept and encoding.densify_ops == 0
    assert path.read_bytes() == (tmp_path / "unpruned-dense.tflite").read_bytes()


def test_compress_adds_a_2_of_4_source_checked_on_its_artifacts(tiny_model, digits, tmp_path):
    from effkit.pipeline import compress

    config = CompressConfig(
        sparsities=(),
        quantizations=(Quant.NONE, Quant.DYNAMIC),
        formats=(Format.TFLITE,),
        tflite_backends=(Backend.CONVERTER, Backend.LITERT),
        prune=PruneConfig(epochs=3, m_by_n="2:4"),
        latency=FAST_LATENCY,
    )
    report = compress(tiny_model, digits, config=config, out_dir=tmp_path / "out", name="tiny_cnn")
    variants = {variant.name: variant for variant in report.variants}
    names = ["pruned2of4-keras", "pruned2of4-tflite-none", "pruned2of4-tflite-dynamic"]
    assert [*names, "pruned2of4-tflite-dynamic-litert"] == [n for n in variants if n.startswith("pruned2of4")]
    for name in names[1:]:
        variant = variants[name]
        assert variant.ok, variant.error
        prune_step, *_, check = variant.steps
        assert prune_step.params["m_by_n"] == "2:4"
        assert check.stage == "check" and check.params["pattern_held"], check
    litert = variants["pruned2of4-tflite-dynamic-litert"]
    assert litert.ok, litert.error  # quantized from the dense float32 file, not from a sparse one
    assert litert.steps[-1].params["pattern_held"]
    export = variants["pruned2of4-tflite-none"].steps[1]
    decision = export.params["sparse_encoding"]
    assert (
        variants["pruned2of4-tflite-none"].size_bytes
        == decision["sparse_bytes" if decision["kept"] else "dense_bytes"][0]
    )
