"""Data without labels: inputs only (an .npz of x arrays, an image folder without class folders), labelled with the
user's model's own top-1, and every decision the same as with those labels given."""

from dataclasses import replace

import numpy as np
import pytest

from effkit.errors import DataError, ModelError
from effkit.load.classifier import Head, OutputKind, own_labels
from effkit.load.data import LABELS_FROM_MODEL, load_dataset
from effkit.load.data.sources import load_npz

from .conftest import run_effkit


def _by_sum(x: np.ndarray) -> np.ndarray:
    """A stand-in model: three classes by each sample's mean, one sample at a time."""
    return np.digitize(x.reshape(len(x), -1).mean(axis=1), [-0.18, 0.18]).astype(np.int64)


def _inputs(n=60, shape=(6,)):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, *shape)).astype("float32"), rng.normal(size=(n // 2, *shape)).astype("float32")


def test_an_npz_of_inputs_only_is_labelled_by_the_model_and_split_as_if_the_labels_were_given(tmp_path):
    x_train, x_test = _inputs()
    np.savez(tmp_path / "inputs.npz", x_train=x_train, x_test=x_test)
    np.savez(tmp_path / "given.npz", x_train=x_train, y_train=_by_sum(x_train), x_test=x_test, y_test=_by_sum(x_test))
    unlabelled = load_npz(tmp_path / "inputs.npz", label=_by_sum)
    given = load_npz(tmp_path / "given.npz")
    assert unlabelled.labels_from == LABELS_FROM_MODEL and given.labels_from == "data"
    assert unlabelled.summary()["labels_from"] == LABELS_FROM_MODEL and "labels_from" not in given.summary()
    for split in ("train", "val", "test"):  # the same stratified validation split, sample for sample
        np.testing.assert_array_equal(getattr(unlabelled, f"x_{split}"), getattr(given, f"x_{split}"))
        np.testing.assert_array_equal(getattr(unlabelled, f"y_{split}"), getattr(given, f"y_{split}"))
    assert set(np.unique(unlabelled.y_val)) == {0, 1, 2}


def test_one_x_array_is_split_six_two_two(tmp_path):
    x, _ = _inputs(n=50)
    np.savez(tmp_path / "pool.npz", x=x)
    dataset = load_npz(tmp_path / "pool.npz", label=_by_sum)
    assert (len(dataset.x_train), len(dataset.x_val), len(dataset.x_test)) == (30, 10, 10)
    np.testing.assert_array_equal(dataset.y_test, _by_sum(dataset.x_test))


def test_inputs_without_labels_and_without_a_model_are_refused_in_one_line(tmp_path):
    x_train, x_test = _inputs()
    np.savez(tmp_path / "inputs.npz", x_train=x_train, x_test=x_test)
    with pytest.raises(DataError, match=r"has inputs but no labels; .* give it your model"):
        load_npz(tmp_path / "inputs.npz")
    np.savez(tmp_path / "half.npz", x_train=x_train)
    with pytest.raises(DataError, match=r"unlabelled \.npz holds x_train and x_test"):
        load_npz(tmp_path / "half.npz", label=_by_sum)
    np.savez(tmp_path / "mixed.npz", x_train=x_train, y_train=_by_sum(x_train), x_test=x_test)
    with pytest.raises(DataError, match="lacks y_test"):  # some labels: all are needed, none are made up
        load_npz(tmp_path / "mixed.npz", label=_by_sum)


def test_an_image_folder_without_class_folders_is_labelled_by_the_model(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "photos").mkdir()
    for i in range(20):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / "photos" / f"{i}.png")
    seen = []

    def label(x):
        seen.append(x.shape)
        return _by_sum(x)

    dataset = load_dataset(tmp_path / "photos", input_shape=(8, 8, 1), label=label)
    assert seen == [(20, 8, 8, 1)] and dataset.labelled_by_model
    assert (len(dataset.x_train), len(dataset.x_val), len(dataset.x_test)) == (12, 4, 4)
    np.testing.assert_array_equal(dataset.y_train, _by_sum(dataset.x_train))
    with pytest.raises(DataError, match="has inputs but no labels"):
        load_dataset(tmp_path / "photos", input_shape=(8, 8, 1))


def test_own_labels_are_classes_for_classifiers_and_values_for_a_linear_unit_beside_them():
    outputs = [np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([[2.5], [-1.0]])]
    single = own_labels((Head("p", OutputKind.BINARY_LOGIT, 1),), [outputs[1]])
    np.testing.assert_array_equal(single, [1, 0])  # alone, a one-unit linear output is a binary classifier
    heads = (Head("kind", OutputKind.PROBABILITIES, 2), Head("age", OutputKind.BINARY_LOGIT, 1))
    labels = own_labels(heads, outputs)
    np.testing.assert_array_equal(labels["kind"], [1, 0])
    np.testing.assert_allclose(labels["age"], [2.5, -1.0])  # beside a classifier, it is a value
    with pytest.raises(ModelError, match="none of the model's outputs can be read as classes"):
        own_labels(heads[1:] * 2, [outputs[1], outputs[1]])


def _shifted_digits(digits):
    """Digits the tiny model was not trained on: brighter and noisier, so its own top-1 differs from the truth."""
    rng = np.random.default_rng(7)
    x = np.concatenate([digits.x_train, digits.x_val, digits.x_test])
    y = np.concatenate([digits.y_train, digits.y_val, digits.y_test])
    return np.clip(x * 1.4 + rng.normal(0, 2.5, x.shape), 0, 16).astype(np.float32), y


def _decisions(report):
    return (
        [(c["name"], c["decision"]) for c in report.search["candidates"]],
        report.recommended,
        {v.name: str(v.status) for v in report.variants},
    )


def test_without_labels_compress_decides_as_with_the_models_own_top1_given(tiny_tf_keras_file, digits, tmp_path):
    from effkit.load import keras_compat
    from effkit.pipeline import compress

    from .test_search import _search_config

    x, truth = _shifted_digits(digits)
    model = keras_compat.tf_keras().models.load_model(tiny_tf_keras_file, compile=False)
    own = np.asarray(model.predict(x, batch_size=256, verbose=0)).argmax(axis=1)
    assert 0.02 < np.mean(own != truth) < 0.5  # labels given and the model's own top-1 really differ
    np.savez(tmp_path / "inputs.npz", x_train=x[:1400], x_test=x[1400:])
    np.savez(tmp_path / "own.npz", x_train=x[:1400], y_train=own[:1400], x_test=x[1400:], y_test=own[1400:])
    # In process: the comparison is of the labels, not of where a fine-tune runs. A wide budget keeps decisions
    # off the boundary, where a fine-tune's last-bit differences could flip one.
    config = _search_config(levels=(0.6,), clusters=())
    config = replace(config, max_accuracy_drop=3.0, prune=replace(config.prune, isolate=False))
    reports = {}
    for name in ("inputs", "own"):
        keras_compat.tf_keras().utils.set_random_seed(0)
        reports[name] = compress(
            tiny_tf_keras_file, tmp_path / f"{name}.npz", config=config, out_dir=tmp_path / name, name="tiny"
        )
    assert _decisions(reports["inputs"]) == _decisions(reports["own"])
    assert reports["inputs"].baseline["top1"] == pytest.approx(1.0)  # the model agrees with itself
    assert reports["inputs"].data["labels_from"] == LABELS_FROM_MODEL and "labels_from" not in reports["own"].data
    for a, b in zip(reports["inputs"].variants, reports["own"].variants, strict=True):
        assert a.top1 == pytest.approx(b.top1, abs=1 / 397)  # one test sample at most, from a near tie
    text = (tmp_path / "inputs" / "report.md").read_text()
    assert "every top-1 here is agreement with the model you gave" in text
    assert "came without labels" not in (tmp_path / "own" / "report.md").read_text()


def test_the_cli_refuses_inputs_without_labels_and_without_a_model(tmp_path):
    x_train, x_test = _inputs(shape=(8, 8, 1))
    np.savez(tmp_path / "inputs.npz", x_train=x_train, x_test=x_test)
    result = run_effkit("compress", "--data", str(tmp_path / "inputs.npz"), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "has inputs but no labels" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()
