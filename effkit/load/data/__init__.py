"""Datasets: labelled arrays in train / validation / test splits, and the checks that they fit a model.

Sources (see `sources.py`): the embedded scikit-learn digits (optionally resized, e.g. `digits:28x28x1`), the
Keras dataset names (`mnist`, `fashion_mnist`, `cifar10`, `cifar100`, `imdb`) through Keras' own loaders and
cache, `.npz` files, image folders with one sub-folder per class, and two offline stand-ins made from real data:
`synthetic_text` (token sequences with a learnable sentiment) and `digits_multihead` (three heads per image).
An `.npz` or image folder may hold inputs only: the user's model's own predictions are then the labels.

Labels are integer class indices; a multi-output dataset holds one label array per head, by head name.
"""

from __future__ import annotations

from .dataset import (
    LABELS_FROM_MODEL,
    MIN_TRAIN,
    SPLITS,
    Dataset,
    Labeller,
    Labels,
    check_fits,
    check_labels,
    check_shape,
    check_sizes,
    check_token_ids,
    check_tokens,
    fit_sequences,
    fitted_sequences,
    split,
)


def load_dataset(
    source,
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    input_shape: tuple | None = None,
    label: Labeller | None = None,
) -> Dataset:
    """Load a dataset by name or path and split it.

    Args:
        source: `digits` (or `digits:HxWxC`), a Keras dataset name, `synthetic_text`, `digits_multihead`, the path
            of an `.npz`, or an image folder.
        seed: fixes the validation split (and the test split, for sources without one).
        val_fraction: share of the training split held out for validation when the source has none.
        input_shape: the model's input shape, when known: images are resized to it and `digits` follow it.
        label: labels inputs that come without any (an `.npz` of `x_*` arrays only, an image folder without class
            sub-folders), before they are split: the user's model's own predictions. The Dataset then says
            `labels_from == "model"`, and every top-1 measured on it is agreement with that model.

    Raises:
        InputError: a path that does not exist or cannot be read.
        DataError: unknown name, malformed, empty or non-finite data, too small to split, not available offline,
            or inputs without labels and no `label`.
    """
    from .sources import load

    return load(str(source), seed=seed, val_fraction=val_fraction, input_shape=input_shape, label=label)


__all__ = [
    "LABELS_FROM_MODEL",
    "MIN_TRAIN",
    "SPLITS",
    "Dataset",
    "Labeller",
    "Labels",
    "check_fits",
    "check_labels",
    "check_shape",
    "check_sizes",
    "check_token_ids",
    "check_tokens",
    "fit_sequences",
    "fitted_sequences",
    "load_dataset",
    "split",
]
