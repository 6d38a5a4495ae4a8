"""Fine-tunes learn from the model they start from: distillation, frozen BatchNormalization, the best epoch kept,
and never an end below the start where the start is already what the fine-tune makes (clustering)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from effkit.load import keras_compat
from effkit.load.classifier import describe
from effkit.techniques.cluster import cluster
from effkit.techniques.prune import prune
from effkit.techniques.train import fit, teacher_of

from .conftest import FAST_PRUNE


def _agreement(model, reference, x) -> float:
    from effkit.runtime.keras import KerasRunner

    return float(np.mean(np.argmax(KerasRunner(model).predict(x)[0], -1) == np.argmax(reference.predict(x), -1)))


def test_a_wrecking_learning_rate_cannot_end_a_clustering_below_its_start(tiny_pruned80, digits, tiny_info):
    """At a learning rate of 5 every epoch wrecks the model; the k-means start is returned instead, and said."""
    wrecking = replace(FAST_PRUNE, learning_rate=50.0, epochs=2, patience=1)  # clustering trains at a tenth: 5.0
    result = cluster(tiny_pruned80.model, digits, info=tiny_info, clusters=16, config=wrecking)
    record = result.step_params()
    assert record["best_epoch"] == 0, record  # no epoch beat the start
    assert record["val_agreement"] == record["val_agreement_start"] > 0.9
    assert _agreement(result.model, tiny_pruned80.model, digits.x_val) > 0.9


def test_pruning_distils_from_the_unpruned_model_and_records_its_agreement(tiny_model, digits, tiny_info):
    result = prune(tiny_model, digits, info=tiny_info, sparsity=0.5, config=FAST_PRUNE)
    record = result.step_params()
    assert record["distilled"] == {"temperature": 2.0, "label_weight": 0.5}
    # The start is the model magnitude-pruned at once to 50%, with no fine-tune: what the fine-tune must beat.
    assert 0.5 < record["val_agreement_start"] < 1.0
    assert record["val_agreement_start"] <= record["val_agreement"] <= 1.0
    assert abs(result.sparsity - 0.5) < 0.01
    assert abs(_agreement(result.model, tiny_model, digits.x_val) - record["val_agreement"]) < 1e-4


def test_batch_norm_statistics_stay_as_the_pretrained_model_had_them(digits):
    tfk = keras_compat.tf_keras()
    tfk.utils.set_random_seed(0)
    layers = tfk.layers
    model = tfk.Sequential(
        [
            tfk.Input((8, 8, 1)),
            layers.Rescaling(1.0 / 16.0, name="rescaling"),
            layers.Conv2D(8, 3, padding="same", name="conv"),
            layers.BatchNormalization(name="bn"),
            layers.ReLU(name="relu"),
            layers.Flatten(name="flatten"),
            layers.Dense(10, activation="softmax", name="head"),
        ],
        name="bn_cnn",
    )
    info = describe(model, digits.x_train[:8], name="bn_cnn")
    fit(model, digits, keras=tfk, heads=info.heads, epochs=3, learning_rate=3e-3)
    before = [w.copy() for w in model.get_layer("bn").get_weights()]
    shifted = digits.map_inputs(lambda x: x * 0.5 + 4.0)  # other data: training-mode BN would re-estimate on it
    result = prune(model, shifted, info=info, sparsity=0.5, config=replace(FAST_PRUNE, epochs=3))
    assert result.step_params()["frozen_batch_norm"] == 1
    after = result.model.get_layer("bn").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))  # gamma, beta, mean, variance
    assert model.get_layer("bn").trainable  # the caller's model is untouched


def test_the_teacher_holds_the_models_outputs_on_train_and_validation(tiny_model, digits, tiny_info):
    teacher = teacher_of(tiny_model, digits, tiny_info.heads)
    assert teacher.train[0].shape == (len(digits.x_train), 10) and teacher.val[0].shape == (len(digits.x_val), 10)
    np.testing.assert_allclose(teacher.val[0], tiny_model.predict(digits.x_val, verbose=0), atol=1e-5)


def test_labels_only_fine_tunes_the_same_way_with_the_labels_loss_alone(tiny_model, digits, tiny_info):
    """`distill=False` (`--no-distill`): the teacher is kept for agreement and the best epoch, its soft targets get
    no weight, and the step says it was not distilled."""
    assert teacher_of(tiny_model, digits, tiny_info.heads, distill=False).label_weight == 1.0
    config = replace(FAST_PRUNE, distill=False)
    result = prune(tiny_model, digits, info=tiny_info, sparsity=0.5, config=config)
    record = result.step_params()
    assert record["distilled"] is False
    assert record["val_agreement_start"] <= record["val_agreement"] and 0.9 < record["val_agreement"] <= 1.0


def test_a_pruning_fine_tune_that_ends_below_its_one_shot_start_returns_the_start(tiny_model, digits, tiny_info):
    """At a wrecking learning rate every epoch after the ramp is worse than magnitude pruning alone: the one-shot
    model at the target sparsity comes back, and says so."""
    wrecking = replace(FAST_PRUNE, learning_rate=5.0, epochs=3, patience=1)
    result = prune(tiny_model, digits, info=tiny_info, sparsity=0.5, config=wrecking)
    record = result.step_params()
    assert record["best_epoch"] == 0, record
    assert record["val_agreement"] == record["val_agreement_start"] > 0.8
    assert abs(result.sparsity - 0.5) < 0.01
    assert abs(_agreement(result.model, tiny_model, digits.x_val) - record["val_agreement"]) < 1e-4
