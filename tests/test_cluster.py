"""Sparsity-preserving clustering on the tiny model: counts hold in Keras and in the .tflite, zeros stay zero."""

import numpy as np
import pytest

from effkit.config import Backend, CompressConfig, Format, PruneConfig, Quant
from effkit.errors import ModelError
from effkit.export.tflite import constant_kernels, export_tflite
from effkit.load import keras_compat
from effkit.load.classifier import describe
from effkit.pipeline import compress
from effkit.quantize.litert import quantize_litert
from effkit.runtime.measure import file_sizes
from effkit.techniques.cluster import cluster, distinct_values

from .conftest import FAST_LATENCY

CLUSTER_CONFIG = PruneConfig(epochs=4)


@pytest.fixture(scope="module")
def clustered(tiny_pruned80, digits, tiny_info):
    before = [w.copy() for w in tiny_pruned80.model.get_weights()]
    result = cluster(tiny_pruned80.model, digits, info=tiny_info, clusters=8, config=CLUSTER_CONFIG)
    return result, before


@pytest.fixture(scope="module")
def artifacts(tiny_pruned80, clustered, digits, tmp_path_factory):
    """float32, LiteRT dynamic-range and LiteRT static int8 files of the pruned and the clustered model."""
    folder = tmp_path_factory.mktemp("cluster")
    files = {}
    for name, model in (("pruned", tiny_pruned80.model), ("clustered", clustered[0].model)):
        float_path = export_tflite(model, folder / f"{name}-none.tflite")
        files[name, Quant.NONE] = float_path
        for quantization in (Quant.DYNAMIC, Quant.INT8):
            path = folder / f"{name}-{quantization}.tflite"
            quantize_litert(float_path, path, quantization=quantization, calibration=digits.x_train[:200])
            files[name, quantization] = path
    return files


def _kernels(model) -> dict[str, np.ndarray]:
    return {layer.name: layer.get_weights()[0] for layer in model.layers if layer.get_weights()}


def test_every_kernel_has_at_most_k_values(clustered):
    result, _ = clustered
    assert result.clustered_layers == ("conv2d", "dense", "dense_1")
    for name, kernel in _kernels(result.model).items():
        assert len(np.unique(kernel)) <= 8, name


def test_zeros_stay_zero_and_sparsity_is_preserved(clustered, tiny_pruned80):
    result, _ = clustered
    assert result.input_sparsity == pytest.approx(tiny_pruned80.sparsity)
    assert result.sparsity == pytest.approx(tiny_pruned80.sparsity, abs=0.01)
    assert result.sparsity >= tiny_pruned80.sparsity
    for name, kernel in _kernels(result.model).items():
        zeros_before = _kernels(tiny_pruned80.model)[name] == 0
        assert np.all(kernel[zeros_before] == 0), name


def test_cluster_counts_hold_in_the_artifact_float_and_int8(clustered, artifacts):
    result, _ = clustered
    for quantization in (Quant.NONE, Quant.DYNAMIC, Quant.INT8):
        counts = distinct_values(artifacts["clustered", quantization])
        assert set(result.clustered_layers) <= set(counts), (quantization, counts)
        for layer in result.clustered_layers:
            assert counts[layer] <= 8, (quantization, layer, counts)
    # the unclustered model's kernels have many more values: the count is a real measurement
    assert distinct_values(artifacts["pruned", Quant.NONE])["dense"] > 40


def test_int8_keeps_the_pruned_zeros(clustered, artifacts):
    for tensors in constant_kernels(artifacts["clustered", Quant.INT8]).values():
        for tensor in tensors:
            assert tensor.dtype == np.int8
            assert np.mean(tensor == 0) >= 0.79


def test_clustering_shrinks_the_gzip_size(artifacts):
    for quantization in (Quant.NONE, Quant.DYNAMIC, Quant.INT8):
        _, pruned_gzip = file_sizes(artifacts["pruned", quantization])
        _, clustered_gzip = file_sizes(artifacts["clustered", quantization])
        assert clustered_gzip < 0.95 * pruned_gzip, quantization


def test_eight_clusters_keep_validation_top1(clustered, tiny_pruned80):
    result, _ = clustered
    assert result.val_top1 >= 0.9
    assert result.val_top1 >= tiny_pruned80.val_top1 - 0.03
    params = result.step_params()
    assert params["clusters"] == 8 and params["val_top1"] == round(result.val_top1, 4)
    assert 1 <= params["epochs"] <= CLUSTER_CONFIG.epochs


def test_the_callers_model_is_untouched(clustered, tiny_pruned80):
    _, before = clustered
    for original, now in zip(before, tiny_pruned80.model.get_weights(), strict=True):
        np.testing.assert_array_equal(original, now)


def test_convolutions_are_clustered_per_channel_when_each_channel_can_hold_k(tiny_model, digits, tiny_info, tmp_path):
    """The unpruned conv has 9 non-zero weights per channel, enough for 8 centroids in each."""
    result = cluster(tiny_model, digits, info=tiny_info, clusters=8, config=CLUSTER_CONFIG, epochs=0)
    assert result.per_channel == ("conv2d",)
    kernel = _kernels(result.model)["conv2d"]
    assert len(np.unique(kernel)) > 8  # per channel, not over the whole kernel
    assert max(len(np.unique(kernel[..., c])) for c in range(kernel.shape[-1])) <= 8
    float_path = export_tflite(result.model, tmp_path / "c8.tflite")
    int8_path = quantize_litert(float_path, tmp_path / "c8-int8.tflite", quantization=Quant.INT8,
                                calibration=digits.x_train[:100])  # fmt: skip
    assert distinct_values(int8_path)["conv2d"] <= 8


def test_past_the_per_channel_cap_the_widest_convolutions_are_clustered_per_tensor(digits):
    """tfmot's set-up grows with the channels clustered per channel: the narrow ones keep it up to
    PER_CHANNEL_MAX output channels in all, the wider ones are clustered over the whole kernel, which still leaves
    at most k values in each channel, and the step names them."""
    from effkit.techniques.cluster import PER_CHANNEL_MAX

    tfk = keras_compat.tf_keras()
    tfk.utils.set_random_seed(0)
    wide = PER_CHANNEL_MAX  # with the narrow one, one channel past the cap
    model = tfk.Sequential([
        tfk.Input((8, 8, 1)),
        tfk.layers.Conv2D(16, 3, padding="same", activation="relu", name="narrow"),
        tfk.layers.Conv2D(wide - 15, 3, padding="same", activation="relu", name="wide"),
        tfk.layers.GlobalAveragePooling2D(),
        tfk.layers.Dense(10, activation="softmax", name="head"),
    ])  # fmt: skip
    info = describe(model, digits.x_train[:4], name="wide")
    result = cluster(model, digits, info=info, clusters=8, config=CLUSTER_CONFIG, epochs=0)
    assert result.per_channel == ("narrow",) and result.per_tensor_for_time == ("wide",)
    assert result.step_params()["per_tensor_for_time"] == ["wide"]
    kernels = _kernels(result.model)
    assert len(np.unique(kernels["wide"])) <= 8  # one set of centroids for the whole kernel
    assert len(np.unique(kernels["narrow"])) > 8  # one per channel
    assert max(len(np.unique(kernels["narrow"][..., c])) for c in range(16)) <= 8


def test_pruned_convolution_channels_too_sparse_for_k_are_clustered_whole(clustered):
    """80% pruning leaves about 2 of 9 weights per conv channel: per-channel k-means++ cannot place 8 centroids."""
    result, _ = clustered
    assert result.per_channel == ()
    assert "conv2d" in result.clustered_layers


def test_only_the_named_layers_are_clustered(tiny_pruned80, digits, tiny_info):
    result = cluster(
        tiny_pruned80.model, digits, info=tiny_info, clusters=8, config=CLUSTER_CONFIG, layers=["dense"], epochs=0
    )
    assert result.clustered_layers == ("dense",)
    kernels = _kernels(result.model)
    assert len(np.unique(kernels["dense"])) <= 8
    assert len(np.unique(kernels["dense_1"])) > 8


def test_a_named_layer_that_cannot_be_clustered_is_refused(tiny_pruned80, digits, tiny_info):
    with pytest.raises(ModelError, match="max_pooling2d: it has no kernel") as error:
        cluster(
            tiny_pruned80.model, digits, info=tiny_info, clusters=8, config=CLUSTER_CONFIG, layers=["max_pooling2d"]
        )
    assert "\n" not in str(error.value)
    with pytest.raises(ModelError, match="nope: no such layer"):
        cluster(tiny_pruned80.model, digits, info=tiny_info, clusters=8, config=CLUSTER_CONFIG, layers=["nope"])


def test_a_model_without_kernels_to_cluster_is_refused(digits):
    tfk = keras_compat.tf_keras()
    model = tfk.Sequential([tfk.Input((8, 8, 1)), tfk.layers.Flatten(), tfk.layers.Dense(10, activation="softmax")])
    tiny_info = describe(model, digits.x_train[:4], name="small")
    with pytest.raises(ModelError, match="no layer to cluster to 256 values"):
        cluster(model, digits, info=tiny_info, clusters=256, config=CLUSTER_CONFIG)


def test_keras3_models_must_be_bridged_first(tiny_keras3_model, digits):
    tiny_info = describe(tiny_keras3_model, digits.x_train[:4], name="k3")
    with pytest.raises(ModelError, match="tf_keras model"):
        cluster(tiny_keras3_model, digits, info=tiny_info, clusters=8, config=CLUSTER_CONFIG)


# The grid flags: `effkit compress --clusters 16 --qat`.

GRID = {
    "sparsities": (0.8,),
    "clusters": (16,),
    "qat": True,
    "quantizations": (Quant.INT8,),
    "formats": (Format.TFLITE,),
    "tflite_backends": (Backend.LITERT,),
    "prune": PruneConfig(epochs=4),
    "latency": FAST_LATENCY,
}
GRID_KINDS = ("keras", "tflite-none", "tflite-int8-litert")


@pytest.fixture(scope="module")
def grid_report(tiny_model, digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    return compress(tiny_model, digits, config=CompressConfig(**GRID), out_dir=out, name="tiny_cnn"), out


def test_grid_flags_make_clustered_and_qat_variants(grid_report):
    report, out = grid_report
    expected = [f"baseline-{kind}" for kind in GRID_KINDS]
    expected += [f"pruned80-{kind}" for kind in GRID_KINDS] + ["pruned80-qat-tflite-int8"]
    expected += [f"pruned80-c16-{kind}" for kind in GRID_KINDS] + ["pruned80-c16-qat-tflite-int8"]
    assert [v.name for v in report.variants] == expected
    assert all(v.ok for v in report.variants), [(v.name, v.error) for v in report.variants]
    assert report.config["clusters"] == [16] and report.config["qat"] is True
    for name in ("pruned80-c16-tflite-int8-litert", "pruned80-c16-qat-tflite-int8"):
        counts = distinct_values(out / report.variant(name).path)
        assert max(counts.values()) <= 16, (name, counts)
        assert report.variant(name).sparsity == pytest.approx(0.8, abs=0.01)


def test_grid_variants_record_their_cluster_and_qat_steps(grid_report):
    report, _ = grid_report
    clustered = report.variant("pruned80-c16-tflite-int8-litert")
    assert [s.stage for s in clustered.steps] == ["prune", "cluster", "quantize"]
    cluster_step = clustered.steps[1].params
    assert cluster_step["clusters"] == 16 and cluster_step["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert set(cluster_step["layers"]) == {"conv2d", "dense", "dense_1"}
    qat = report.variant("pruned80-c16-qat-tflite-int8")
    assert [s.stage for s in qat.steps] == ["prune", "cluster", "qat", "quantize"]
    assert qat.steps[2].params["preserve"] == "clusters"
    assert qat.steps[3].params["mode"] == "int8" and qat.steps[3].params["max_distinct"] <= 16
    assert report.variant("pruned80-qat-tflite-int8").steps[1].params["preserve"] == "sparsity"
    assert qat.parity.top1_agreement >= 97.0 and qat.top1 >= 0.9


def test_clustering_makes_the_int8_file_smaller_after_gzip(grid_report):
    report, _ = grid_report
    pruned = report.variant("pruned80-tflite-int8-litert")
    clustered = report.variant("pruned80-c16-tflite-int8-litert")
    assert clustered.gzip_bytes < pruned.gzip_bytes
    assert clustered.top1 >= pruned.top1 - 0.03


def test_a_failed_clustering_or_qat_costs_only_its_own_variants(keras3_custom_layer_file, digits, tmp_path):
    """A Keras 3 model without a tf_keras rebuild is pruned in Keras 3; tfmot can neither cluster nor train it."""
    config = CompressConfig(**{**GRID, "sparsities": (0.5,), "prune": PruneConfig(epochs=1)})
    report = compress(keras3_custom_layer_file, digits, config=config, out_dir=tmp_path / "out")
    failed = {v.name: v.error for v in report.variants if not v.ok}
    assert set(failed) == {"pruned50-qat-tflite-int8", *(f"pruned50-c16-{k}" for k in GRID_KINDS),
                           "pruned50-c16-qat-tflite-int8"}  # fmt: skip
    assert all("tfmot cannot" in error and "ChannelScale" in error and "\n" not in error for error in failed.values())
    assert {v.name for v in report.variants if v.ok} >= {f"pruned50-{kind}" for kind in GRID_KINDS}


def test_a_clustered_int8_variant_gets_a_lut_compressed_copy_that_tflite_micro_runs(grid_report):
    report, out = grid_report
    clustered = report.variant("pruned80-c16-tflite-int8-litert")
    lut = clustered.micro["lut"]
    assert lut["runs"] and lut["index_bits"] <= 4
    assert (out / lut["path"]).stat().st_size == lut["flash_bytes"] < clustered.size_bytes
    assert "lut" not in report.variant("pruned80-tflite-int8-litert").micro  # not clustered: left alone
