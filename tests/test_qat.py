"""Quantization-aware training that keeps zeros or clusters, converted to int8 and run in LiteRT."""

import numpy as np
import pytest

from effkit.config import PruneConfig
from effkit.errors import ConfigError, ModelError
from effkit.export.tflite import constant_kernels
from effkit.load import keras_compat
from effkit.load.classifier import describe
from effkit.runtime.litert import LiteRTRunner
from effkit.runtime.measure import top1
from effkit.techniques.cluster import cluster, distinct_values
from effkit.techniques.qat import QatResult, convert_qat, flatten, quantization_aware

from .conftest import outputs_of

QAT_CONFIG = PruneConfig(epochs=3)


@pytest.fixture(scope="module")
def sparse_qat(tiny_pruned80, digits, tiny_info, tmp_path_factory):
    before = [w.copy() for w in tiny_pruned80.model.get_weights()]
    result = quantization_aware(tiny_pruned80.model, digits, info=tiny_info, preserve="sparsity", config=QAT_CONFIG)
    path = tmp_path_factory.mktemp("qat") / "pruned80-qat.tflite"
    params = convert_qat(result, path, calibration=digits.x_train[:200])
    return result, path, params, before


def _litert_top1(path, digits, tiny_info) -> float:
    (outputs,) = LiteRTRunner(path).predict(digits.x_test)
    return top1(outputs, digits.y_test, tiny_info.output_kind)


def test_qat_wraps_every_layer_with_weights(sparse_qat):
    result, _, _, _ = sparse_qat
    assert isinstance(result, QatResult) and result.preserve == "sparsity"
    assert result.quantized_layers == ("conv2d", "dense", "dense_1")
    assert result.float_layers == ()
    assert all(layer.name.startswith(("quant_", "quantize_layer")) for layer in result.model.layers)
    assert 1 <= result.epochs_run <= QAT_CONFIG.epochs
    assert result.step_params()["preserve"] == "sparsity"


def test_the_int8_file_runs_in_litert_and_classifies(sparse_qat, tiny_pruned80, digits, tiny_info):
    result, path, params, _ = sparse_qat
    assert params["io"] == "int8" and params["int8_kernels"] == 3 and params["float_kernels"] == []
    runner = LiteRTRunner(path)
    assert runner.input["dtype"] == np.int8
    accuracy = _litert_top1(path, digits, tiny_info)
    assert accuracy >= 0.9
    pruned_accuracy = top1(outputs_of(tiny_pruned80.model, digits.x_test), digits.y_test, tiny_info.output_kind)
    assert accuracy >= pruned_accuracy - 0.03
    assert result.val_top1 >= 0.9


def test_prune_preserving_qat_keeps_the_zeros_in_the_int8_kernels(sparse_qat, tiny_pruned80):
    _, path, params, _ = sparse_qat
    assert params["kernel_sparsity"] == pytest.approx(tiny_pruned80.sparsity, abs=0.01)
    kernels = constant_kernels(path)
    assert set(kernels) == {"conv2d", "dense", "dense_1"}
    for layer, (tensor,) in kernels.items():
        assert tensor.dtype == np.int8
        assert np.mean(tensor == 0) >= 0.79, layer


def test_cluster_preserving_qat_keeps_k_values_per_channel(tiny_pruned80, digits, tiny_info, tmp_path):
    clustered = cluster(tiny_pruned80.model, digits, info=tiny_info, clusters=8, config=QAT_CONFIG, epochs=1)
    result = quantization_aware(
        clustered.model, digits, info=tiny_info, preserve="clusters", config=QAT_CONFIG, epochs=2
    )
    params = convert_qat(result, tmp_path / "c8-qat.tflite", calibration=digits.x_train[:200])
    counts = distinct_values(tmp_path / "c8-qat.tflite")
    assert all(counts[layer] <= 8 for layer in clustered.clustered_layers), counts
    assert params["max_distinct"] <= 8
    assert params["kernel_sparsity"] >= 0.79
    assert _litert_top1(tmp_path / "c8-qat.tflite", digits, tiny_info) >= 0.85


def test_without_calibration_the_file_takes_float_input(sparse_qat, digits, tiny_info, tmp_path):
    result, _, _, _ = sparse_qat
    params = convert_qat(result.model, tmp_path / "float-io.tflite")
    assert params["io"] == "float32" and params["calibration_samples"] is None and params["int8_kernels"] == 3
    assert LiteRTRunner(tmp_path / "float-io.tflite").input["dtype"] == np.float32
    assert _litert_top1(tmp_path / "float-io.tflite", digits, tiny_info) >= 0.9


def test_qat_leaves_the_callers_model_untouched(sparse_qat, tiny_pruned80):
    *_, before = sparse_qat
    assert all(np.array_equal(a, b) for a, b in zip(before, tiny_pruned80.model.get_weights(), strict=True))
    assert not any(layer.name.startswith("quant_") for layer in tiny_pruned80.model.layers)


def test_a_model_with_no_layer_qat_supports_is_refused_in_one_line(digits):
    tfk = keras_compat.tf_keras()
    model = tfk.Sequential(
        [tfk.Input((8, 8, 1)), tfk.layers.Flatten(), tfk.layers.LayerNormalization(), tfk.layers.Softmax()]
    )
    tiny_info = describe(model, digits.x_train[:4], name="norm")
    with pytest.raises(ModelError, match=r"left float: layer_normalization \(LayerNormalization\)") as error:
        quantization_aware(model, digits, info=tiny_info, preserve="none", config=QAT_CONFIG)
    assert "\n" not in str(error.value)


def test_an_unknown_preservation_is_refused(tiny_model, digits, tiny_info):
    with pytest.raises(ConfigError, match="known: sparsity, clusters, none"):
        quantization_aware(tiny_model, digits, info=tiny_info, preserve="weights", config=QAT_CONFIG)


def test_keras3_models_must_be_bridged_first(tiny_keras3_model, digits):
    tiny_info = describe(tiny_keras3_model, digits.x_train[:4], name="k3")
    with pytest.raises(ModelError, match="tf_keras model"):
        quantization_aware(tiny_keras3_model, digits, info=tiny_info, preserve="none", config=QAT_CONFIG)


def _nested_model(tfk):
    """A transfer-style model: a functional base called inside an outer functional model."""
    base_input = tfk.Input((8, 8, 1))
    features = tfk.layers.Conv2D(8, 3, use_bias=False)(base_input)
    features = tfk.layers.BatchNormalization()(features)
    features = tfk.layers.ReLU()(features)
    base = tfk.Model(base_input, features, name="base")
    inputs = tfk.Input((8, 8, 1))
    x = tfk.layers.Rescaling(1 / 16)(inputs)
    x = base(x, training=False)
    x = tfk.layers.GlobalAveragePooling2D()(x)
    outputs = tfk.layers.Dense(10, activation="softmax")(x)
    return tfk.Model(inputs, outputs, name="nested")


def test_a_nested_model_is_flattened_with_the_same_outputs(digits):
    tfk = keras_compat.tf_keras()
    model = _nested_model(tfk)
    flat = flatten(model, tfk)
    assert not any(isinstance(layer, tfk.Model) for layer in flat.layers)
    kinds = [type(layer) for layer in flat.layers]
    assert {tfk.layers.Conv2D, tfk.layers.BatchNormalization, tfk.layers.ReLU} <= set(kinds)
    np.testing.assert_allclose(outputs_of(flat, digits.x_test), outputs_of(model, digits.x_test), atol=1e-6)


def test_qat_quantizes_inside_a_nested_model_and_folds_its_batch_norm(digits, tmp_path):
    tfk = keras_compat.tf_keras()
    model = _nested_model(tfk)
    tiny_info = describe(model, digits.x_train[:4], name="nested")
    result = quantization_aware(model, digits, info=tiny_info, preserve="none", config=QAT_CONFIG, epochs=1)
    convolution = model.get_layer("base").layers[1].name  # Keras numbers layer names in session order
    assert set(result.quantized_layers) == {convolution, model.layers[-1].name} and result.float_layers == ()
    params = convert_qat(result, tmp_path / "nested.tflite", calibration=digits.x_train[:100])
    assert params["int8_kernels"] == 2 and params["float_kernels"] == []
