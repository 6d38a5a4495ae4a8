import pytest

from effkit.config import (
    CompressConfig,
    Format,
    LatencyConfig,
    PruneConfig,
    Quant,
    parse_clusters,
    parse_enum,
    parse_enum_list,
    parse_sparsities,
)
from effkit.errors import ConfigError


def test_unknown_quantization_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown quantization 'int3'; known: none, dynamic, float16, int8"):
        parse_enum(Quant, "int3", what="quantization")


def test_enum_lists_parse_deduplicate_and_keep_order():
    assert parse_enum_list(Quant, "int8, dynamic,int8", what="quantization") == (Quant.INT8, Quant.DYNAMIC)
    assert parse_enum_list(Format, "ONNX", what="format") == (Format.ONNX,)
    with pytest.raises(ConfigError, match="no format given"):
        parse_enum_list(Format, " , ", what="format")


def test_sparsities_parse_and_reject_garbage():
    assert parse_sparsities("0.5,0.8") == (0.5, 0.8)
    assert parse_sparsities("") == ()
    with pytest.raises(ConfigError, match="'half' is not a number"):
        parse_sparsities("half")


def test_cluster_counts_parse_and_reject_garbage():
    assert parse_clusters("16, 8,16") == (16, 8)
    assert parse_clusters("") == ()
    with pytest.raises(ConfigError, match=r"'8\.5' is not a whole number"):
        parse_clusters("8.5")


@pytest.mark.parametrize("clusters", [2, 0, 257])
def test_cluster_counts_outside_what_clustering_can_do_are_refused(clusters):
    with pytest.raises(ConfigError, match=r"cluster count -?\d+ is outside \[3, 256\]"):
        CompressConfig(clusters=(16, clusters)).validate()


@pytest.mark.parametrize("asked", [{"clusters": (16,)}, {"qat": True}])
def test_clustering_and_qat_need_a_pruned_model(asked):
    CompressConfig(**asked).validate()
    with pytest.raises(ConfigError, match="applied to pruned models"):
        CompressConfig(sparsities=(), **asked).validate()


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5])
def test_sparsity_outside_unit_interval_is_refused(sparsity):
    with pytest.raises(ConfigError, match=r"outside \[0, 1\)"):
        CompressConfig(sparsities=(sparsity,)).validate()


@pytest.mark.parametrize(
    "config, message",
    [
        (CompressConfig(max_accuracy_drop=-1), "max accuracy drop"),
        (CompressConfig(calibration_samples=0), "calibration samples"),
        (CompressConfig(formats=(Format.KERAS,)), "always measured"),
        (CompressConfig(prune=PruneConfig(epochs=0)), "prune epochs"),
        (CompressConfig(latency=LatencyConfig(threads=(0,))), "threads"),
        (CompressConfig(latency=LatencyConfig(batches=())), "batches"),
    ],
)
def test_invalid_settings_are_refused(config, message):
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_config_round_trips_through_a_dict():
    config = CompressConfig(
        sparsities=(0.3,), clusters=("16", 8), qat=True, quantizations=("int8",), formats=("onnx",), seed=7
    )
    assert config.quantizations == (Quant.INT8,) and config.clusters == (16, 8)
    assert config.to_dict()["clusters"] == [16, 8] and config.to_dict()["qat"] is True
    assert CompressConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown config keys"):
        CompressConfig.from_dict({"sparsity": 0.5})
