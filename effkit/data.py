"""Datasets: the embedded scikit-learn digits, and `.npz` files.

Every loader returns a `Dataset` with train / validation / test splits. When a source has no validation split,
it is carved from the training split with a fixed seed (stratified when every class has two samples or more).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, InputError

EMBEDDED = ("digits",)
NPZ_REQUIRED = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Labelled arrays in three splits. Labels are integer class indices."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max())) + 1

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "train": len(self.x_train),
            "val": len(self.x_val),
            "test": len(self.x_test),
            "input_shape": list(self.input_shape),
            "classes": self.num_classes,
        }

    def astype(self, dtype: str | np.dtype) -> Dataset:
        """The same splits with inputs cast to the model's input dtype."""
        return Dataset(
            self.name,
            self.x_train.astype(dtype, copy=False),
            self.y_train,
            self.x_val.astype(dtype, copy=False),
            self.y_val,
            self.x_test.astype(dtype, copy=False),
            self.y_test,
        )


def load_dataset(source: str | Path, *, seed: int = 0, val_fraction: float = 0.2) -> Dataset:
    """Load `digits` or an `.npz` file and split it.

    Args:
        source: `digits`, or the path of an `.npz` holding `x_train, y_train, x_test, y_test`
            (and optionally `x_val, y_val`).
        seed: fixes the validation (and, for digits, test) split.
        val_fraction: share of the training split held out for validation when the source has none.

    Raises:
        InputError: the file does not exist or cannot be read.
        DataError: the data is malformed, empty, non-finite or too small to split.
    """
    text = str(source)
    if text in EMBEDDED:
        return _digits(seed=seed, val_fraction=val_fraction)
    path = Path(text)
    if path.suffix == ".npz" or path.exists():
        return load_npz(path, seed=seed, val_fraction=val_fraction)
    raise DataError(f"unknown dataset {text!r}; known: {', '.join(EMBEDDED)}, or a path to an .npz file")


def _digits(*, seed: int, val_fraction: float) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)[..., np.newaxis]  # (1797, 8, 8, 1), values 0..16
    y = digits.target.astype(np.int64)
    x_train, y_train, x_test, y_test = split(x, y, fraction=0.2, seed=seed)
    x_train, y_train, x_val, y_val = split(x_train, y_train, fraction=val_fraction, seed=seed)
    return Dataset("digits", x_train, y_train, x_val, y_val, x_test, y_test)


def load_npz(path: Path, *, seed: int = 0, val_fraction: float = 0.2) -> Dataset:
    """An `.npz` with `x_train, y_train, x_test, y_test` (optionally `x_val, y_val`), read without pickle."""
    if not path.exists():
        raise InputError(f"data file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder; expected an .npz file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataError(f"{path} holds a single array, not an .npz archive with {', '.join(NPZ_REQUIRED)}")
            missing = [key for key in NPZ_REQUIRED if key not in archive.files]
            if missing:
                raise DataError(
                    f"{path} lacks {', '.join(missing)}; an .npz needs {', '.join(NPZ_REQUIRED)} "
                    f"(and may add x_val, y_val); it has: {', '.join(archive.files) or 'nothing'}"
                )
            arrays = {key: archive[key] for key in (*NPZ_REQUIRED, "x_val", "y_val") if key in archive.files}
    except DataError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        reason = "it holds pickled objects, which effkit never loads" if "pickle" in str(error) else str(error)
        raise DataError(f"cannot read {path} as .npz: {reason}") from None
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise DataError(f"{path} has only one of x_val, y_val; give both or neither")
    for split_name in ("train", "val", "test"):
        if f"x_{split_name}" in arrays:
            arrays[f"x_{split_name}"], arrays[f"y_{split_name}"] = _checked(
                arrays[f"x_{split_name}"], arrays[f"y_{split_name}"], where=f"{path.name} {split_name}"
            )
    x_train, y_train = arrays["x_train"], arrays["y_train"]
    if "x_val" in arrays:
        x_val, y_val = arrays["x_val"], arrays["y_val"]
    else:
        x_train, y_train, x_val, y_val = split(x_train, y_train, fraction=val_fraction, seed=seed)
    shapes = {arrays["x_train"].shape[1:], arrays["x_test"].shape[1:], x_val.shape[1:]}
    if len(shapes) != 1:
        raise DataError(f"{path.name}: splits have different sample shapes {sorted(shapes)}")
    return Dataset(path.stem, x_train, y_train, x_val, y_val, arrays["x_test"], arrays["y_test"])


def _checked(x: np.ndarray, y: np.ndarray, *, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one split: numbers, same length, finite inputs, integer class labels >= 0."""
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise DataError(f"{where}: expected numeric arrays, got x {x.dtype} and y {y.dtype}")
    if x.ndim < 2 or 0 in x.shape[1:]:
        raise DataError(f"{where}: x has shape {x.shape}; expected (samples, features...)")
    if y.ndim == 0:
        raise DataError(f"{where}: y is a single value; expected one label per sample")
    if len(x) == 0:
        raise DataError(f"{where}: no samples")
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} inputs but {len(y)} labels")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{where}: x holds {int((~np.isfinite(x)).sum())} NaN or Inf values")
    y = class_indices(y, where=where)
    return x, y


def class_indices(y: np.ndarray, *, where: str) -> np.ndarray:
    """Labels as a 1-D int64 array of class indices; one-hot rows are turned into indices."""
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim != 1:
        raise DataError(f"{where}: labels have shape {y.shape}; expected (samples,) class indices or one-hot rows")
    if y.dtype.kind == "f" and (not np.isfinite(y).all() or not np.all(y == np.round(y))):
        raise DataError(f"{where}: labels must be whole class indices, found fractional or non-finite values")
    if y.min() < 0:
        raise DataError(f"{where}: label {int(y.min())} is negative; labels are class indices 0..N-1")
    return y.astype(np.int64)


def split(x: np.ndarray, y: np.ndarray, *, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Hold out `fraction` of the samples (stratified when possible): returns x_keep, y_keep, x_held, y_held."""
    from sklearn.model_selection import train_test_split

    held = round(len(x) * fraction)
    if held < 1 or len(x) - held < 1:
        raise DataError(f"{len(x)} samples are too few to hold out {fraction:.0%} for validation")
    counts = np.bincount(y) if y.ndim == 1 else None
    stratify = y if counts is not None and counts[counts > 0].min() >= 2 and held >= len(counts[counts > 0]) else None
    x_keep, x_held, y_keep, y_held = train_test_split(x, y, test_size=held, random_state=seed, stratify=stratify)
    return x_keep, y_keep, x_held, y_held


MIN_TRAIN = 10  # fewer cannot fine-tune a pruned model nor calibrate int8 meaningfully


def check_sizes(dataset: Dataset) -> None:
    """Raise a DataError when a split is too small for what effkit does with it."""
    if len(dataset.x_train) < MIN_TRAIN:
        raise DataError(
            f"the training split has {len(dataset.x_train)} samples; effkit needs at least {MIN_TRAIN} "
            "to fine-tune pruned models and calibrate int8"
        )
    for split_name in ("val", "test"):
        if not len(getattr(dataset, f"x_{split_name}")):
            raise DataError(f"the {split_name} split is empty")


def check_fits(dataset: Dataset, *, input_shape: tuple, num_classes: int | None = None) -> None:
    """Raise a DataError when the data cannot feed a model with this input shape (and number of classes)."""
    expected = tuple(input_shape)
    actual = dataset.input_shape
    if len(expected) != len(actual) or any(e is not None and e != a for e, a in zip(expected, actual, strict=False)):
        shown = tuple("?" if e is None else e for e in expected)
        raise DataError(f"data samples have shape {actual} but the model expects {shown}")
    if num_classes is None:
        return
    for split_name, labels in (("train", dataset.y_train), ("val", dataset.y_val), ("test", dataset.y_test)):
        if labels.max() >= num_classes:
            label = int(labels.max())
            raise DataError(
                f"{split_name} label {label} is outside the model's {num_classes} classes (0..{num_classes - 1})"
            )
