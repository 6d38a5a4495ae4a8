"""What each output of a model means, decided once per model (classifier.py)."""

import numpy as np
import pytest

from effkit.config import CompressConfig
from effkit.errors import DataError, ModelError
from effkit.load import keras_compat
from effkit.load.classifier import OutputKind, describe, vocabulary
from effkit.load.data import Dataset, check_labels
from effkit.pipeline import compress


def _two_heads(units: int = 1):
    tfk = keras_compat.tf_keras()
    inputs = tfk.Input((4,))
    hidden = tfk.layers.Dense(8, activation="relu")(inputs)
    outputs = [
        tfk.layers.Dense(3, activation="softmax", name="kind")(hidden),
        tfk.layers.Dense(units, name="age")(hidden),
    ]
    return tfk.Model(inputs, outputs)


X = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")


@pytest.mark.parametrize(
    "ages, kind",
    [
        (np.array([18, 42, 89, 30, 55, 61, 23, 70]), OutputKind.REGRESSION),  # whole numbers, but no classes of 2
        (np.array([-3.5, 1.2, 0.4, 2.0, 1.0, 0.0, 3.3, 9.9]), OutputKind.REGRESSION),
        (np.array([0, 1, 1, 0, 1, 0, 0, 1]), OutputKind.BINARY_LOGIT),
    ],
)
def test_a_linear_single_unit_head_is_judged_by_its_labels(ages, kind):
    info = describe(_two_heads(), X, name="m", labels={"kind": np.zeros(8, int), "age": ages})
    assert [h.kind for h in info.heads] == [OutputKind.PROBABILITIES, kind]
    assert info.primary.name == "kind" and info.num_classes == 3


def test_a_model_without_a_classification_head_is_refused():
    tfk = keras_compat.tf_keras()
    model = tfk.Sequential([tfk.Input((4,)), tfk.layers.Dense(1)])
    with pytest.raises(ModelError, match="no classification output"):
        describe(model, X, name="regressor", labels={model.output_names[0]: np.linspace(0, 50, 8)})


def test_regression_heads_skip_the_class_range_check():
    dataset = Dataset(
        "d",
        X,
        {"kind": np.zeros(8, int), "age": np.arange(8) * 10},
        X,
        {"kind": np.zeros(8, int), "age": np.arange(8)},
        X,
        {"kind": np.array([0, 1, 2, 0, 1, 2, 0, 5]), "age": np.arange(8)},
    )
    info = describe(_two_heads(), X, name="m", labels={"kind": np.zeros(8, int), "age": np.arange(8) * 10})
    with pytest.raises(DataError, match=r"test label 5 of 'kind' is outside the model's 3 classes"):
        check_labels(dataset, info.heads)


def test_token_ids_beyond_the_vocabulary_are_refused_before_the_model_runs(tmp_path):
    tfk = keras_compat.tf_keras()
    model = tfk.Sequential(
        [
            tfk.Input((6,), dtype="int32"),
            tfk.layers.Embedding(100, 4),
            tfk.layers.GlobalAveragePooling1D(),
            tfk.layers.Dense(1, activation="sigmoid"),
        ]
    )
    assert vocabulary(model) == 100
    tokens = np.random.default_rng(0).integers(0, 100, (30, 6))
    tokens[3, 2] = 664
    labels = np.arange(30) % 2
    dataset = Dataset("text", tokens[:20], labels[:20], tokens[20:25], labels[20:25], tokens[25:], labels[25:])
    with pytest.raises(
        DataError, match=r"train token id 664 is outside the model's vocabulary \(Embedding input_dim 100\)"
    ):
        compress(model, dataset, config=CompressConfig(sparsities=()), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
