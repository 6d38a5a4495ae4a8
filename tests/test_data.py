import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from effkit.data import check_fits, load_dataset, load_npz
from effkit.errors import DataError, InputError


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
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(tmp_path / "text.npz")


def test_check_fits_catches_shape_and_label_mismatches(digits):
    check_fits(digits, input_shape=(8, 8, 1), num_classes=10)
    with pytest.raises(DataError, match=r"shape \(8, 8, 1\) but the model expects \(28, 28, 1\)"):
        check_fits(digits, input_shape=(28, 28, 1), num_classes=10)
    with pytest.raises(DataError, match="label 9 is outside the model's 5 classes"):
        check_fits(digits, input_shape=(None, 8, 1), num_classes=5)


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
