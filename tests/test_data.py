import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from effkit.errors import DataError, InputError
from effkit.load.classifier import Head, OutputKind
from effkit.load.data import check_fits, check_labels, load_dataset
from effkit.load.data.sources import load_npz


def test_digits_splits_are_disjoint_stratified_and_deterministic(digits):
    assert digits.input_shape == (8, 8, 1)
    assert digits.num_classes == 10
    assert len(digits.x_train) + len(digits.x_val) + len(digits.x_test) == 1797
    assert set(np.unique(digits.y_val)) == set(range(10))
    assert set(np.unique(digits.y_test)) == set(range(10))
    again = load_dataset("digits")
    np.testing.assert_array_equal(again.x_test, digits.x_test)
    np.testing.assert_array_equal(again.y_val, digits.y_val)
    other = load_dataset("digits", seed=1)
    assert not np.array_equal(other.y_test, digits.y_test)


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def _arrays(n=40, classes=4, shape=(6,)):
    rng = np.random.default_rng(0)
    return dict(
        x_train=rng.normal(size=(n, *shape)).astype("float32"),
        y_train=np.arange(n) % classes,
        x_test=rng.normal(size=(n // 2, *shape)).astype("float32"),
        y_test=np.arange(n // 2) % classes,
    )


def test_npz_loads_and_carves_a_validation_split(tmp_path):
    dataset = load_npz(_save(tmp_path / "d.npz", **_arrays()))
    assert dataset.name == "d"
    assert len(dataset.x_val) == 8 and len(dataset.x_train) == 32
    assert dataset.y_train.dtype == np.int64


def test_npz_with_its_own_validation_split_keeps_it(tmp_path):
    arrays = _arrays()
    arrays.update(x_val=arrays["x_test"][:5], y_val=arrays["y_test"][:5])
    dataset = load_npz(_save(tmp_path / "d.npz", **arrays))
    assert len(dataset.x_val) == 5 and len(dataset.x_train) == 40


def test_npz_one_hot_labels_become_indices(tmp_path):
    arrays = _arrays()
    arrays["y_train"] = np.eye(4)[arrays["y_train"]]
    dataset = load_npz(_save(tmp_path / "d.npz", **arrays))
    assert dataset.y_train.ndim == 1 and dataset.y_train.max() == 3


def test_npz_without_required_keys_names_them(tmp_path):
    arrays = _arrays()
    del arrays["y_test"]
    with pytest.raises(DataError, match="lacks y_test"):
        load_npz(_save(tmp_path / "d.npz", **arrays))


def test_npz_with_pickled_objects_is_refused(tmp_path):
    arrays = _arrays()
    arrays["y_train"] = np.array([{"label": 1}] * 40, dtype=object)
    with pytest.raises(DataError, match="pickled objects"):
        load_npz(_save(tmp_path / "d.npz", **arrays))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a["x_train"].__setitem__((0, 0), np.nan), "NaN or Inf"),
        (lambda a: a.__setitem__("y_train", a["y_train"][:-1]), "inputs but"),
        (lambda a: a.__setitem__("y_train", -a["y_train"] - 1), "negative"),
        (lambda a: a.__setitem__("y_train", a["y_train"] + 0.5), "whole class indices"),
        (lambda a: a.__setitem__("x_test", np.zeros((0, 6), "float32")), "no samples"),
        (lambda a: a.__setitem__("x_test", np.zeros((20, 7), "float32")), "different sample shapes"),
    ],
)
def test_malformed_npz_is_refused(tmp_path, change, message):
    arrays = _arrays()
    change(arrays)
    with pytest.raises(DataError, match=message):
        load_npz(_save(tmp_path / "d.npz", **arrays))


def test_too_few_samples_to_split(tmp_path):
    arrays = _arrays(n=2)
    with pytest.raises(DataError, match="too few"):
        load_npz(_save(tmp_path / "d.npz", **arrays))


def test_missing_and_unknown_sources(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_dataset(tmp_path / "nope.npz")
    with pytest.raises(DataError, match="unknown dataset 'mnistt'"):
        load_dataset("mnistt")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match=r"not an \.npz archive"):
        load_dataset(tmp_path / "text.npz")


def test_check_fits_and_check_labels_catch_shape_and_label_mismatches(digits):
    check_fits(digits, input_shape=(8, 8, 1))
    check_fits(digits, input_shape=(None, 8, 1))
    with pytest.raises(DataError, match=r"shape \(8, 8, 1\) but the model expects \(28, 28, 1\)"):
        check_fits(digits, input_shape=(28, 28, 1))
    check_labels(digits, (Head("dense", OutputKind.PROBABILITIES, 10),))
    with pytest.raises(DataError, match="label 9 is outside the model's 5 classes"):
        check_labels(digits, (Head("dense", OutputKind.PROBABILITIES, 5),))


npz_values = st.dictionaries(
    keys=st.sampled_from(["x_train", "y_train", "x_test", "y_test", "x_val", "y_val", "other"]),
    values=hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int64, np.int8, np.bool_, np.dtype("U3")]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays=npz_values)
def test_any_npz_loads_cleanly_or_fails_with_a_data_error(tmp_path, arrays):
    path = tmp_path / "fuzz.npz"
    np.savez(path, **arrays)
    try:
        dataset = load_npz(path)
    except DataError:
        return
    for split in ("train", "val", "test"):
        x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
        assert len(x) == len(y) > 0
        assert y.dtype == np.int64 and y.min() >= 0


def test_digits_follow_the_models_image_shape():
    resized = load_dataset("digits", input_shape=(28, 28, 3))
    assert resized.input_shape == (28, 28, 3) and resized.name == "digits:28x28x3"
    assert 200 < resized.x_train.max() <= 255.0  # an 8-bit image's range
    np.testing.assert_array_equal(resized.y_test, load_dataset("digits").y_test)
    assert load_dataset("digits:32x32x1").input_shape == (32, 32, 1)
    with pytest.raises(DataError, match="HxWxC"):
        load_dataset("digits:32x32")


def test_digits_multihead_has_three_heads_of_three_kinds():
    dataset = load_dataset("digits_multihead")
    assert dataset.heads == ("category", "flag", "value")
    labels = dataset.labels("test", ["category", "flag", "value"])
    np.testing.assert_array_equal(labels["flag"], (labels["category"] >= 5).astype(int))
    np.testing.assert_allclose(labels["value"], labels["category"] / 9.0, rtol=1e-6)
    with pytest.raises(DataError, match="differ from the model's outputs"):
        dataset.labels("test", ["category", "other", "value"])
    with pytest.raises(DataError, match="one label array"):
        load_dataset("digits").labels("test", ["a", "b"])


def test_synthetic_text_is_integer_sequences_with_a_balanced_label():
    dataset = load_dataset("synthetic_text")
    assert dataset.x_train.dtype == np.int32 and dataset.input_shape == (256,)
    assert dataset.x_train.max() < 10_000 and dataset.x_train.min() == 0
    assert 0.4 < dataset.y_train.mean() < 0.6
    assert load_dataset("synthetic_text", input_shape=(100,)).x_test.shape == (400, 100)


def test_sequences_are_padded_or_truncated_to_the_models_length():
    from effkit.load.data import fit_sequences

    dataset = load_dataset("synthetic_text")
    shorter = fit_sequences(dataset, 100)
    np.testing.assert_array_equal(shorter.x_train, dataset.x_train[:, :100])
    longer = fit_sequences(dataset, 300)
    assert longer.x_test.shape == (400, 300) and not longer.x_test[:, 256:].any()


def test_npz_with_one_label_array_per_head(tmp_path):
    arrays = _arrays()
    y_train, y_test = arrays.pop("y_train"), arrays.pop("y_test")
    arrays.update(y_train_kind=y_train, y_train_size=y_train * 0.5, y_test_kind=y_test, y_test_size=y_test * 0.5)
    dataset = load_npz(_save(tmp_path / "multi.npz", **arrays))
    assert dataset.heads == ("kind", "size")
    assert dataset.y_val["kind"].dtype == np.int64 and dataset.y_val["size"].dtype == np.float32
    arrays["y_train"] = y_train
    with pytest.raises(DataError, match="either y_train or y_train_<head>"):
        load_npz(_save(tmp_path / "both.npz", **arrays))


def test_an_image_folder_with_one_subfolder_per_class(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(10):
            pixels = (rng.uniform(0, 100, (12, 10, 3)) + 150 * label).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pets" / name / f"{i}.png")
    dataset = load_dataset(tmp_path / "pets")
    assert dataset.input_shape == (12, 10, 3)
    assert (len(dataset.x_train), len(dataset.x_val), len(dataset.x_test)) == (12, 4, 4)  # 6:2:2
    assert set(dataset.y_train) == {0, 1}
    gray = load_dataset(tmp_path / "pets", input_shape=(8, 8, 1))
    assert gray.input_shape == (8, 8, 1)
    (tmp_path / "pets" / "dog" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read image"):
        load_dataset(tmp_path / "pets")


def test_one_hot_rows_of_a_head_become_class_indices_and_whole_targets_stay_values(tmp_path):
    arrays = _arrays()
    y_train, y_test = arrays.pop("y_train"), arrays.pop("y_test")
    arrays.update(
        y_train_kind=np.eye(4)[y_train],
        y_test_kind=np.eye(4)[y_test],
        y_train_age=y_train * 10 - 5,
        y_test_age=y_test * 10 - 5,
    )
    dataset = load_npz(_save(tmp_path / "heads.npz", **arrays))
    np.testing.assert_array_equal(dataset.y_test["kind"], y_test)
    assert dataset.y_test["age"].min() == -5  # a negative whole-number target is a value, not a bad class index


def test_an_image_folder_whose_test_split_lacks_a_class(tmp_path):
    from PIL import Image

    for split, classes in (("train", ("a", "b", "c")), ("test", ("a", "c"))):
        for name in classes:
            (tmp_path / "set" / split / name).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(np.full((6, 6), 40 * i, np.uint8)).save(tmp_path / "set" / split / name / f"{i}.png")
    dataset = load_dataset(tmp_path / "set")
    assert set(dataset.y_test) == {0, 2} and len(dataset.x_test) == 12
    (tmp_path / "set" / "test" / "d").mkdir()
    with pytest.raises(DataError, match="no training images: d"):
        load_dataset(tmp_path / "set")
