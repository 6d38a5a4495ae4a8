"""Reference classifiers from the lecture, each a builder plus a training recipe.

Installed as the package `effkit_models`. Each module defines `DATA` (its dataset), `OFFLINE_DATA` (real data of
the same shape that needs no network), `RECIPE` and `build(keras, *, input_shape, num_classes)`, written once for
both Keras generations: `keras` is the module `effkit.keras_compat.keras_module(generation)` returns. A module may
add `LOSS_WEIGHTS` (multi-output) or its own `fit` (multi-phase training).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import replace
from typing import Any

from effkit.data import Dataset
from effkit.errors import ConfigError, DataError, EffkitError, first_line

from .recipe import train

NAMES = ("digits_cnn", "fashion_mlp", "fashion_cnn", "imdb_text", "cifar_cnn", "transfer_mobilenet", "multihead")
DEFAULT = "digits_cnn"

log = logging.getLogger("effkit")


def get(name: str):
    """The module of a reference classifier."""
    if name not in NAMES:
        raise ConfigError(f"unknown reference model {name!r}; known: {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{name}")


def train_reference(
    name: str, dataset: Dataset, *, generation: int = 2, seed: int = 0, epochs: int | None = None
) -> Any:
    """Build and train a reference classifier on `dataset` in the given Keras generation (2 or 3).

    Args:
        name: one of `NAMES`.
        dataset: training data; the model's input shape and classes follow it.
        generation: 3 for Keras 3, 2 for tf_keras.
        seed: fixes initialisation, shuffling, dropout and augmentation.
        epochs: overrides the recipe's epochs (each phase's, for multi-phase recipes).
    """
    from effkit import keras_compat

    module = get(name)
    keras = keras_compat.keras_module(generation)
    keras.utils.set_random_seed(seed)
    try:
        model = module.build(keras, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    except EffkitError:
        raise
    except Exception as error:  # Keras refuses e.g. a convolution over token sequences
        raise DataError(
            f"{name} cannot take {dataset.name}: its samples have shape {dataset.input_shape} ({first_line(error)})"
        ) from None
    log.info(
        "training %s on %s (%d train / %d val samples, %s parameters, Keras %d)",
        name,
        dataset.name,
        len(dataset.x_train),
        len(dataset.x_val),
        f"{model.count_params():,}",
        generation,
    )
    if hasattr(module, "fit"):
        result = module.fit(model, dataset, keras=keras, label=name, epochs=epochs)
    else:
        recipe = module.RECIPE if epochs is None else replace(module.RECIPE, epochs=epochs)
        result = train(
            model, dataset, keras=keras, recipe=recipe, label=name, loss_weights=getattr(module, "LOSS_WEIGHTS", None)
        )
    log.info(
        "trained %s: %d epochs, val accuracy %s, %.1fs",
        name,
        result.epochs_run,
        "n/a" if result.val_accuracy is None else f"{result.val_accuracy:.4f}",
        result.seconds,
    )
    return model
