"""Structured pruning as a technique: fewer channels, a smaller dense model in raw bytes, fine-tuned from the model."""

from __future__ import annotations

import numpy as np
import pytest

from effkit.config import PruneConfig
from effkit.errors import ConfigError, ModelError
from effkit.export.tflite import export_tflite
from effkit.load import keras_compat
from effkit.load.classifier import describe
from effkit.runtime.measure import file_sizes
from effkit.techniques.channels import channel_graph
from effkit.techniques.structured import channel_order, group_costs, prune_channels

CONFIG = PruneConfig(epochs=4, batch_size=64)


@pytest.fixture(scope="module")
def halved(tiny_model, digits, tiny_info):
    return prune_channels(tiny_model, digits, info=tiny_info, share=0.5, config=CONFIG)


def test_half_the_channels_go_and_the_file_shrinks_in_raw_bytes(halved, tiny_model, tmp_path):
    assert halved.channels == {"conv2d": (16, 8), "dense": (64, 32)}
    assert halved.frozen == {"dense_1": "it reaches the model's output dense_1"}
    before, after = halved.params
    assert before == tiny_model.count_params() and after < before / 3  # the dense layer after flatten shrinks twice
    assert halved.model.get_layer("dense_1").get_config()["units"] == 10  # every class unit stays
    raw_before = file_sizes(export_tflite(tiny_model, tmp_path / "before.tflite"))[0]
    raw_after = file_sizes(export_tflite(halved.model, tmp_path / "after.tflite"))[0]
    assert raw_after < raw_before / 2.5


def test_the_fine_tune_keeps_the_model_accurate_and_never_ends_below_its_start(halved, tiny_model, digits):
    assert halved.val_top1 > 0.9
    tune = halved.fine_tune
    assert tune["val_agreement"] >= tune["val_agreement_start"] and tune["distilled"]
    step = halved.step_params()
    assert step["structured"] and step["channels"]["dense"] == [64, 32] and step["params"] == list(halved.params)


def test_the_weakest_channels_go_first(tiny_model):
    graph = channel_graph(tiny_model)
    conv = next(g for g in graph.prunable() if g.producers == ["conv2d"])
    order = channel_order(tiny_model, conv)
    kernel = tiny_model.get_layer("conv2d").get_weights()[0].reshape(-1, 16)
    norms = np.linalg.norm(kernel, axis=0)
    assert norms[order[0]] == norms.min() and norms[order[-1]] == norms.max()


def test_group_costs_measure_each_group_alone_on_validation(tiny_model, digits, tiny_info):
    curves = group_costs(tiny_model, digits, tiny_info)
    assert curves["conv2d"]["params"] > curves["dense"]["params"] > 0  # a conv channel feeds every flattened position
    assert set(curves) == {"conv2d", "dense"}
    assert curves["conv2d"]["channels"] == 16 and curves["dense"]["channels"] == 64
    for curve in curves.values():
        costs = curve["costs"]
        assert sorted(costs) == [0.25, 0.5, 0.75] and all(0.0 <= c <= 100.0 for c in costs.values())
        assert costs[0.75] > costs[0.25]  # masking more of a group's channels costs more
    assert group_costs(tiny_model, digits, tiny_info, max_groups=1).keys() == {"dense"}  # the widest first


def test_channel_shares_go_where_they_cost_least_per_channel():
    """The tiny model's measured curves (AMD EPYC family 26): the dense layer's half is nearly free but its next
    quarter costs 36 pp, so at 50% both groups give half; at 25% the dense layer alone gives up what is asked."""
    from effkit.search.plans import channel_shares

    curves = {
        "conv2d": {"channels": 16, "costs": {0.25: 1.736, 0.5: 7.986, 0.75: 19.444}},
        "dense": {"channels": 64, "costs": {0.25: 0.0, 0.5: 2.431, 0.75: 38.542}},
    }
    assert channel_shares(0.5, curves, most=0.9) == {"conv2d": 0.5, "dense": 0.5}
    shares = channel_shares(0.25, curves, most=0.9)
    assert shares["conv2d"] == 0.0 and shares["dense"] == pytest.approx(0.3125, abs=0.05)
    flat = {name: {"channels": 10, "costs": {0.5: 1.0}} for name in ("a", "b")}
    assert sum(channel_shares(0.9, flat, most=0.9).values()) == pytest.approx(1.8)


def test_a_flash_level_counts_parameters_and_spends_the_channels_that_carry_most():
    """Two groups whose curves cost the same agreement at each share, one carrying ten times the parameters per
    channel (a convolution before a Flatten, the Dense after it): counted in channels, the wider Dense gives its
    units first (more channels for the same cost); counted in parameters, the convolution does, and the level is met
    in parameters."""
    from effkit.search.plans import channel_shares

    costs = {0.25: 0.5, 0.5: 1.0, 0.75: 1.5}
    curves = {
        "conv": {"channels": 64, "params": 1440, "macs": 11520, "costs": costs},
        "dense": {"channels": 128, "params": 144, "macs": 144, "costs": costs},
    }
    by_channel = channel_shares(0.3, curves, most=0.9)
    assert by_channel["dense"] > by_channel["conv"]
    shares = channel_shares(0.3, curves, most=0.9, per="params")
    assert shares["conv"] > shares["dense"]
    total = sum(c["channels"] * c["params"] for c in curves.values())
    removed = sum(shares[n] * c["channels"] * c["params"] for n, c in curves.items())
    assert 0.3 * total <= removed <= 0.3 * total + 0.05 * 64 * 1440
    with pytest.raises(ValueError, match="params or macs"):
        channel_shares(0.3, curves, most=0.9, per="bytes")


def test_a_keras3_model_is_pruned_in_keras3(tiny_keras3_model, digits):
    info = describe(tiny_keras3_model, digits.x_train[:8], name="k3")
    result = prune_channels(tiny_keras3_model, digits, info=info, share=0.25, config=CONFIG, epochs=1)
    assert keras_compat.generation_of(result.model) == keras_compat.KERAS_3
    assert result.channels["conv2d"] == (16, 12) and result.val_top1 > 0.8


def test_a_model_with_nothing_to_shrink_is_refused_in_one_line(digits):
    keras = keras_compat.tf_keras()
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    info = describe(model, digits.x_train[:4], name="flat")
    with pytest.raises(ModelError, match="no channel group can shrink") as error:
        prune_channels(model, digits, info=info, share=0.5, config=CONFIG)
    assert "\n" not in str(error.value)


# The grid flag: `effkit compress --channels 0.5`.


@pytest.fixture(scope="module")
def channels_report(tiny_model, digits, tmp_path_factory):
    from effkit.config import Backend, CompressConfig, Format, Quant
    from effkit.pipeline import compress

    from .conftest import FAST_LATENCY

    config = CompressConfig(sparsities=(), channels=(0.5,), quantizations=(Quant.NONE, Quant.INT8),
                            formats=(Format.TFLITE, Format.ONNX), tflite_backends=(Backend.LITERT,),
                            prune=CONFIG, latency=FAST_LATENCY)  # fmt: skip
    out = tmp_path_factory.mktemp("channels")
    return compress(tiny_model, digits, config=config, out_dir=out, name="tiny_cnn")


def test_the_grid_makes_a_channels_source_smaller_in_raw_bytes_in_every_format(channels_report):
    report = channels_report
    kinds = ("keras", "tflite-none", "tflite-int8-litert", "onnx-none", "onnx-int8")
    assert [v.name for v in report.variants] == [f"{s}-{k}" for s in ("baseline", "channels50") for k in kinds]
    assert all(v.ok for v in report.variants), [(v.name, v.error) for v in report.variants]
    for kind in kinds[1:]:
        before, after = report.variant(f"baseline-{kind}"), report.variant(f"channels50-{kind}")
        # raw bytes, what a device holds: a quarter of the parameters, plus each format's fixed overhead
        assert after.size_bytes < before.size_bytes * 0.6, (kind, after.size_bytes, before.size_bytes)
        assert -after.top1_delta_pp <= 3.0, (kind, after.top1_delta_pp)
    step = report.variant("channels50-tflite-int8-litert").steps[0]
    assert step.stage == "prune_channels" and step.params["channels"] == {"conv2d": [16, 8], "dense": [64, 32]}
    assert report.config["channels"] == [0.5]


def test_cli_parses_channels(tmp_path):
    from effkit.cli import _compress_config, _parser

    args = _parser().parse_args(["compress", "--channels", "0.25,0.5", "--sparsity", ""])
    assert _compress_config(args).channels == (0.25, 0.5)
    args = _parser().parse_args(["compress", "--channels", "0.95"])
    with pytest.raises(ConfigError, match=r"channel share 0\.95 is outside"):
        _compress_config(args)
