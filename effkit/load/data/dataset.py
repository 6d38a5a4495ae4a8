"""The Dataset record: three labelled splits, and the checks a model's inputs and heads put on them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...errors import DataError

Labels = np.ndarray | dict[str, np.ndarray]

MIN_TRAIN = 10  # fewer cannot fine-tune a pruned model nor calibrate int8 meaningfully
SPLITS = ("train", "val", "test")
LABELS_FROM_MODEL = "model"

# Labels for inputs that came without any: the user's model's own predictions (`pipeline` makes one from the model).
Labeller = Callable[[np.ndarray], Labels]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Labelled arrays in three splits. Labels are class indices, or a dict of per-head label arrays."""

    name: str
    x_train: np.ndarray
    y_train: Labels
    x_val: np.ndarray
    y_val: Labels
    x_test: np.ndarray
    y_test: Labels
    labels_from: str = "data"  # LABELS_FROM_MODEL: the data had none, and the labels are the model's own top-1

    @property
    def labelled_by_model(self) -> bool:
        return self.labels_from == LABELS_FROM_MODEL

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def heads(self) -> tuple[str, ...] | None:
        """Head names of a multi-output dataset; None when there is one label array."""
        return tuple(self.y_train) if isinstance(self.y_train, dict) else None

    @property
    def num_classes(self) -> int:
        """Classes of the (first) label array."""
        labels = [
            y if not isinstance(y, dict) else next(iter(y.values())) for y in (self.y_train, self.y_val, self.y_test)
        ]
        return int(max(np.max(y) for y in labels if len(y))) + 1

    def labels(self, split: str, names: list[str]) -> dict[str, np.ndarray]:
        """One split's labels by head name, for a model whose outputs are `names`.

        Raises:
            DataError: the data's heads and the model's outputs do not match.
        """
        y = getattr(self, f"y_{split}")
        if not isinstance(y, dict):
            if len(names) != 1:
                raise DataError(
                    f"the model has {len(names)} outputs ({', '.join(names)}) but the data has one label array; "
                    f"give y_{split}_<output> per output"
                )
            return {names[0]: y}
        if set(y) != set(names):
            raise DataError(
                f"the data's label heads ({', '.join(y)}) differ from the model's outputs ({', '.join(names)})"
            )
        return {name: y[name] for name in names}

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "train": len(self.x_train),
            "val": len(self.x_val),
            "test": len(self.x_test),
            "input_shape": list(self.input_shape),
            "test_digest": self.test_digest(),
        }
        if self.labelled_by_model:
            data["labels_from"] = LABELS_FROM_MODEL
        if self.heads:
            data["heads"] = list(self.heads)
        else:
            data["classes"] = self.num_classes
        return data

    def test_digest(self) -> str:
        """Identifies the test split (inputs and labels): paired accuracy tests need the very same samples."""
        return self.digest("test")[:16]

    def digest(self, split: str) -> str:
        """sha256 of one split's inputs and labels."""
        import hashlib

        x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
        digest = hashlib.sha256(np.ascontiguousarray(x).tobytes())
        labels = y if isinstance(y, dict) else {"": y}
        for name in sorted(labels):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(labels[name]).tobytes())
        return digest.hexdigest()

    def astype(self, dtype: str | np.dtype) -> Dataset:
        """The same splits with inputs cast to the model's input dtype."""
        return replace(
            self,
            x_train=self.x_train.astype(dtype, copy=False),
            x_val=self.x_val.astype(dtype, copy=False),
            x_test=self.x_test.astype(dtype, copy=False),
        )

    def without_test(self) -> Dataset:
        """The same train and validation splits and an empty test split: what a search that may not look at the
        test split is given."""

        return replace(self, x_test=self.x_test[:0], y_test=_empty(self.y_test))

    def only_validation(self) -> Dataset:
        """The validation split alone (train and test empty, their shapes kept): what a task that measures
        candidates on validation is sent."""
        return replace(self.without_test(), x_train=self.x_train[:0], y_train=_empty(self.y_train))

    def map_inputs(self, function) -> Dataset:
        return replace(self, x_train=function(self.x_train), x_val=function(self.x_val), x_test=function(self.x_test))


def split(x: np.ndarray, y: Labels, *, fraction: float, seed: int) -> tuple[np.ndarray, Labels, np.ndarray, Labels]:
    """Hold out `fraction` of the samples (stratified on the class labels when possible).

    Returns:
        x_keep, y_keep, x_held, y_held.
    """
    from sklearn.model_selection import train_test_split

    held = round(len(x) * fraction)
    if held < 1 or len(x) - held < 1:
        raise DataError(f"{len(x)} samples are too few to hold out {fraction:.0%} for validation")
    candidates = list(y.values()) if isinstance(y, dict) else [y]
    strata = next((c for c in candidates if c.ndim == 1 and np.issubdtype(c.dtype, np.integer) and c.min() >= 0), None)
    stratify = None
    if strata is not None:
        counts = np.bincount(strata)
        present = counts[counts > 0]
        if present.min() >= 2 and held >= len(present) and len(x) - held >= len(present):
            stratify = strata
    keep, out = train_test_split(np.arange(len(x)), test_size=held, random_state=seed, stratify=stratify)
    return x[keep], _take(y, keep), x[out], _take(y, out)


def _take(y: Labels, indices: np.ndarray) -> Labels:
    return {name: values[indices] for name, values in y.items()} if isinstance(y, dict) else y[indices]


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


def check_fits(dataset: Dataset, *, input_shape: tuple) -> None:
    """Raise a DataError when the data's samples cannot feed a model with this input shape (None: any size)."""
    check_shape(dataset.input_shape, input_shape)


def check_shape(actual: tuple, input_shape: tuple) -> None:
    """Raise a DataError when samples of shape `actual` cannot feed a model with this input shape."""
    expected = tuple(input_shape)
    actual = tuple(actual)
    if len(expected) != len(actual) or any(e is not None and e != a for e, a in zip(expected, actual, strict=False)):
        shown = tuple("?" if e is None else e for e in expected)
        raise DataError(f"data samples have shape {actual} but the model expects {shown}")


def check_labels(dataset: Dataset, heads: tuple) -> None:
    """Raise a DataError when a classification head's labels are not class indices within its classes.

    Args:
        dataset: the data.
        heads: the model's `classifier.Head`s (known once the model has run on a sample).
    """
    names = [head.name for head in heads]
    for split_name in SPLITS:
        labels = dataset.labels(split_name, names)
        for head in heads:
            values = labels[head.name]
            if not head.classifies:
                continue
            if not np.all(values == np.round(values)) or values.min() < 0:
                raise DataError(f"{split_name} labels of {head.name!r} must be class indices 0..{head.num_classes - 1}")
            if values.max() >= head.num_classes:
                label = int(values.max())
                where = f"{split_name} label {label}" + (f" of {head.name!r}" if len(heads) > 1 else "")
                raise DataError(
                    f"{where} is outside the model's {head.num_classes} classes (0..{head.num_classes - 1})"
                )


def check_tokens(dataset: Dataset, vocabulary: int) -> None:
    """Raise a DataError when token ids fall outside an Embedding's vocabulary (0..vocabulary-1)."""
    for split_name in SPLITS:
        check_token_ids(getattr(dataset, f"x_{split_name}"), vocabulary, where=split_name)


def check_token_ids(x: np.ndarray, vocabulary: int, *, where: str) -> None:
    if len(x) and (x.min() < 0 or x.max() >= vocabulary):
        bad = int(x.max()) if x.max() >= vocabulary else int(x.min())
        raise DataError(f"{where} token id {bad} is outside the model's vocabulary (Embedding input_dim {vocabulary})")


def fit_sequences(dataset: Dataset, length: int) -> Dataset:
    """Pad (with 0 at the end) or truncate integer token sequences to the model's length."""
    if dataset.x_train.ndim != 2 or dataset.x_train.shape[1] == length:
        return dataset
    return dataset.map_inputs(lambda x: fitted_sequences(x, length))


def fitted_sequences(x: np.ndarray, length: int) -> np.ndarray:
    """Token sequences (n, any length) padded with 0 at the end or cut to `length`; other inputs unchanged."""
    if x.ndim != 2 or x.shape[1] == length:
        return x
    if x.shape[1] >= length:
        return x[:, :length]
    return np.pad(x, ((0, 0), (0, length - x.shape[1])))


def _empty(y: Labels) -> Labels:
    return {name: values[:0] for name, values in y.items()} if isinstance(y, dict) else y[:0]
