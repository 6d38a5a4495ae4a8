"""Keras-3-native magnitude pruning, checked against tfmot on a model both can prune (issue #15)."""

import numpy as np
import pytest

from effkit.config import PruneConfig
from effkit.errors import ModelError
from effkit.export.tflite import export_tflite
from effkit.load import keras_compat
from effkit.load.classifier import describe
from effkit.runtime.measure import correct_samples, file_sizes, weight_sparsity
from effkit.stats import pack_correct, paired_change
from effkit.techniques.prune import prune, ramp_steps
from effkit.techniques.prune_native import PolynomialRamp, prune_keras3

from .conftest import FAST_PRUNE, custom_layer_class, outputs_of

TARGET = 0.6


def kernel_layers(model) -> tuple[str, ...]:
    """The names of the layers with a kernel (Keras numbers them in the order a session creates them)."""
    return tuple(layer.name for layer in model.layers if hasattr(layer, "kernel"))


@pytest.fixture(scope="module")
def native(tiny_keras3_model, digits):
    before = [w.copy() for w in tiny_keras3_model.get_weights()]
    info = describe(tiny_keras3_model, digits.x_train[:8], name="tiny_k3")
    return prune_keras3(tiny_keras3_model, digits, info=info, sparsity=TARGET, config=FAST_PRUNE), before


@pytest.fixture(scope="module")
def tfmot_pruned(tiny_keras3_model, digits):
    """The same Keras 3 model, pruned the other way: tfmot on its tf_keras rebuild."""
    loaded = keras_compat.adopt(tiny_keras3_model)
    assert loaded.bridge_error is None
    info = describe(loaded.model, digits.x_train[:8], name="tiny_k3")
    return prune(loaded.model, digits, info=info, sparsity=TARGET, config=FAST_PRUNE)


def test_the_ramp_is_tfmots_polynomial_decay_sized_from_the_real_steps(digits):
    steps_per_epoch, frequency, end_step = ramp_steps(len(digits.x_train), FAST_PRUNE)
    total = FAST_PRUNE.epochs * steps_per_epoch
    assert total < 200 and frequency < 100  # tfmot's default frequency of 100 would prune once at most here
    ramp = PolynomialRamp(TARGET, end_step=end_step, frequency=frequency)
    decay = keras_compat.tfmot().sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=TARGET, begin_step=0, end_step=end_step, frequency=frequency
    )
    for step in range(total + 1):
        updates, sparsity = decay(step)
        assert ramp.updates_at(step) == bool(updates), step
        assert ramp.sparsity_at(step) == pytest.approx(float(sparsity), abs=1e-6), step
    updates = [step for step in range(1, total + 1) if ramp.updates_at(step)]
    assert len(updates) >= 16 and updates[-1] == end_step <= total * FAST_PRUNE.ramp_fraction
    assert ramp.sparsity_at(end_step) == pytest.approx(TARGET)


def test_native_and_tfmot_prune_the_same_layers_to_the_target(native, tfmot_pruned, tiny_keras3_model):
    result, _ = native
    layers = kernel_layers(tiny_keras3_model)
    assert len(layers) == 3 and result.pruned_layers == tfmot_pruned.pruned_layers == layers
    for pruned in (result, tfmot_pruned):
        assert pruned.sparsity == pytest.approx(TARGET, abs=0.01)
        assert weight_sparsity(pruned.model)[0] == pytest.approx(pruned.sparsity)
        for layer in layers:
            assert pruned.layer_sparsity[layer] == pytest.approx(TARGET, abs=0.01), layer
    assert keras_compat.generation_of(result.model) == keras_compat.KERAS_3
    assert result.step_params()["path"] == "keras3" and tfmot_pruned.step_params()["path"] == "tfmot"
    assert result.epochs_run >= 3  # early stopping waits for the end of the ramp


def test_native_top1_is_within_noise_of_tfmots(native, tfmot_pruned, tiny_keras3_model, digits):
    result, _ = native
    kind = describe(tiny_keras3_model, digits.x_train[:8], name="tiny_k3").output_kind
    correct = {
        name: correct_samples(outputs_of(model, digits.x_test), digits.y_test, kind)
        for name, model in (("baseline", tiny_keras3_model), ("native", result.model), ("tfmot", tfmot_pruned.model))
    }
    change = paired_change(pack_correct(correct["tfmot"]), pack_correct(correct["native"]), len(digits.y_test))
    assert change.p_value >= 0.05, change.describe()
    assert abs(change.lost - change.gained) <= 5, change.describe()
    for name in ("native", "tfmot"):
        assert correct[name].mean() > correct["baseline"].mean() - 0.03, name


def test_native_pruning_leaves_exact_zeros_in_the_model_and_its_float_tflite(native, tiny_keras3_model, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    result, _ = native
    kernels = {layer: result.model.get_layer(layer).kernel.numpy() for layer in kernel_layers(tiny_keras3_model)}
    path = export_tflite(result.model, tmp_path / "pruned.tflite")
    interpreter = Interpreter(model_path=str(path))
    constants = []
    for detail in interpreter.get_tensor_details():
        try:
            constants.append(interpreter.get_tensor(detail["index"]))
        except ValueError:  # an activation tensor, not allocated
            continue
    for layer, kernel in kernels.items():
        zeros = kernel.size - np.count_nonzero(kernel)
        assert zeros == round(kernel.size * TARGET), layer  # exact zeros, no near-zero leftovers
        stored = [c for c in constants if c.size == kernel.size and c.dtype == np.float32]
        assert any(c.size - np.count_nonzero(c) == zeros for c in stored), layer
    dense = file_sizes(export_tflite(tiny_keras3_model, tmp_path / "dense.tflite"))
    sparse = file_sizes(path)
    assert sparse[0] == pytest.approx(dense[0], rel=0.02)
    assert sparse[1] < 0.75 * dense[1]


def test_native_pruning_leaves_the_callers_model_untouched(native, tiny_keras3_model):
    result, before = native
    for original, now in zip(before, tiny_keras3_model.get_weights(), strict=True):
        np.testing.assert_array_equal(original, now)
    assert weight_sparsity(tiny_keras3_model)[0] < 0.05
    assert result.model is not tiny_keras3_model
    assert len(result.model.get_weights()) == len(before)  # no masks or wrappers left behind


def test_a_custom_layer_survives_and_short_fine_tunes_still_reach_the_target(keras3_custom_layer_file, digits):
    keras = keras_compat.keras3()
    model = keras.models.load_model(keras3_custom_layer_file)
    before = [w.copy() for w in model.get_weights()]
    info = describe(model, digits.x_train[:8], name="custom_cnn")
    config = PruneConfig(epochs=1)  # 18 steps: fewer than tfmot's default frequency of 100
    result = prune_keras3(model, digits, info=info, sparsity=0.5, config=config)
    scale = result.model.get_layer("channel_scale")
    assert type(scale) is custom_layer_class() and scale is not model.get_layer("channel_scale")
    kernels = kernel_layers(model)  # Conv2D, Dense
    assert len(kernels) == 2 and result.pruned_layers == kernels
    assert result.sparsity == pytest.approx(0.5, abs=0.01)
    assert result.val_top1 > 0.8
    for original, now in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(original, now)


def test_native_pruning_refuses_tf_keras_models_and_models_without_prunable_layers(tiny_model, digits):
    info = describe(tiny_model, digits.x_train[:4], name="k2")
    with pytest.raises(ModelError, match="takes a Keras 3 model"):
        prune_keras3(tiny_model, digits, info=info, sparsity=0.5, config=FAST_PRUNE)
    keras = keras_compat.keras3()
    flat = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 16), keras.layers.Flatten(), keras.layers.Softmax()]
    )
    info = describe(flat, digits.x_train[:4], name="flat")
    with pytest.raises(ModelError, match="no layer effkit can prune"):
        prune_keras3(flat, digits, info=info, sparsity=0.5, config=FAST_PRUNE)
