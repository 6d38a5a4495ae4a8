import numpy as np
import pytest

from effkit.errors import ModelError
from effkit.export.tflite import export_tflite
from effkit.load.classifier import describe
from effkit.runtime.measure import file_sizes, top1, weight_sparsity
from effkit.techniques.prune import prune

from .conftest import FAST_PRUNE, TINY_LAYERS, build_tiny_cnn, outputs_of


@pytest.fixture(scope="module")
def pruned(tiny_model, digits):
    before = [w.copy() for w in tiny_model.get_weights()]
    info = describe(tiny_model, digits.x_train[:8], name="tiny")
    result = prune(tiny_model, digits, info=info, sparsity=0.6, config=FAST_PRUNE)
    return result, before, info


def test_pruning_reaches_the_target_sparsity_in_every_pruned_layer(pruned):
    result, _, _ = pruned
    assert result.sparsity == pytest.approx(0.6, abs=0.01)
    assert set(result.layer_sparsity) == set(result.pruned_layers) == {"conv2d", "dense", "dense_1"}
    for value in result.layer_sparsity.values():
        assert value == pytest.approx(0.6, abs=0.02)
    assert weight_sparsity(result.model)[0] == pytest.approx(result.sparsity)


@pytest.mark.parametrize("generation", ["tf_keras", "keras3"])
def test_the_tiny_models_layer_names_do_not_depend_on_what_was_built_before(generation):
    """The tests name the tiny CNN's layers; Keras numbers unnamed ones across the process, so a model built
    earlier (by another test, in another order) must not shift them."""
    from effkit.load import keras_compat

    keras = keras_compat.tf_keras() if generation == "tf_keras" else keras_compat.keras3()
    keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(), keras.layers.Dense(2)])
    weighted = [layer.name for layer in build_tiny_cnn(keras).layers if layer.weights]
    assert tuple(weighted) == TINY_LAYERS == ("conv2d", "dense", "dense_1")


def test_pruning_leaves_the_callers_model_untouched(pruned, tiny_model):
    _, before, _ = pruned
    for original, now in zip(before, tiny_model.get_weights(), strict=True):
        np.testing.assert_array_equal(original, now)
    assert weight_sparsity(tiny_model)[0] < 0.05


def test_pruned_model_is_stripped_and_still_classifies(pruned, tiny_model, digits):
    result, _, info = pruned
    assert not any("prune_low_magnitude" in layer.name for layer in result.model.layers)
    assert len(result.model.get_weights()) == len(tiny_model.get_weights())
    baseline = top1(outputs_of(tiny_model, digits.x_test), digits.y_test, info.output_kind)
    accuracy = top1(outputs_of(result.model, digits.x_test), digits.y_test, info.output_kind)
    assert accuracy > 0.85
    assert accuracy > baseline - 0.05
    assert result.step_params()["target_sparsity"] == 0.6


def test_pruning_shrinks_the_gzip_size_not_the_raw_size(pruned, tiny_model, tmp_path):
    result, _, _ = pruned
    dense = file_sizes(export_tflite(tiny_model, tmp_path / "dense.tflite"))
    sparse = file_sizes(export_tflite(result.model, tmp_path / "sparse.tflite"))
    assert sparse[0] == pytest.approx(dense[0], rel=0.02)
    assert sparse[1] < 0.75 * dense[1]


def test_a_model_without_prunable_layers_is_refused(digits):
    from effkit.load import keras_compat

    tfk = keras_compat.tf_keras()
    model = tfk.Sequential(
        [tfk.Input((8, 8, 1)), tfk.layers.Rescaling(1 / 16), tfk.layers.Flatten(), tfk.layers.Softmax()]
    )
    info = describe(model, digits.x_train[:4], name="flat")
    with pytest.raises(ModelError, match="no layer tfmot can prune"):
        prune(model, digits, info=info, sparsity=0.5, config=FAST_PRUNE)


def test_keras3_models_must_be_bridged_first(tiny_keras3_model, digits):
    info = describe(tiny_keras3_model, digits.x_train[:4], name="k3")
    with pytest.raises(ModelError, match="tf_keras model"):
        prune(tiny_keras3_model, digits, info=info, sparsity=0.5, config=FAST_PRUNE)
