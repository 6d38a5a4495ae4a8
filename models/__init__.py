"""Reference classifiers from the lecture, each a builder plus a training recipe.

Installed as the package `effkit_models`. Each module defines `DATA` (its default dataset), `RECIPE` and
`build(keras, *, input_shape, num_classes)`, written once for both Keras generations: `keras` is the module
`effkit.keras_compat.keras_module(generation)` returns.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from effkit.data import Dataset
from effkit.errors import ConfigError

from .recipe import train

NAMES = ("digits_cnn",)
DEFAULT = "digits_cnn"

log = logging.getLogger("effkit")


def get(name: str):
    """The module of a reference classifier."""
    if name not in NAMES:
        raise ConfigError(f"unknown reference model {name!r}; known: {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{name}")


def train_reference(name: str, dataset: Dataset, *, generation: int = 2, seed: int = 0) -> Any:
    """Build and train a reference classifier on `dataset` in the given Keras generation (2 or 3)."""
    from effkit import keras_compat

    module = get(name)
    keras = keras_compat.keras_module(generation)
    keras.utils.set_random_seed(seed)
    model = module.build(keras, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    log.info(
        "training %s on %s (%d train / %d val samples, %s parameters)",
        name,
        dataset.name,
        len(dataset.x_train),
        len(dataset.x_val),
        f"{model.count_params():,}",
    )
    result = train(model, dataset, keras=keras, recipe=module.RECIPE, label=name)
    log.info(
        "trained %s: %d epochs, val accuracy %.4f, %.1fs", name, result.epochs_run, result.val_accuracy, result.seconds
    )
    return model
