"""Reference classifiers from the lecture, each a builder plus a training plan.

Installed as `effkit.models`, a sub-package of effkit mapped to this folder, so that its use of effkit's training
loop and effkit's use of it are imports within one package, not a cycle between two.

Each module defines `DATA` (its dataset), `OFFLINE_DATA` (real data of
the same shape that needs no network), `TRAINING` and `build(keras, *, input_shape, num_classes)`, written once for
both Keras generations: `keras` is the module `effkit.keras_compat.keras_module(generation)` returns. A module may
add `LOSS_WEIGHTS` (multi-output) or its own `fit` (multi-phase training).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from effkit.errors import ConfigError, DataError, EffkitError, first_line
from effkit.load.data import Dataset

from .training import train

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
        epochs: overrides the training plan's epochs (each phase's, for multi-phase plans).
    """
    from effkit.load import keras_compat

    module = get(name)
    keras = keras_compat.keras_module(generation)
    # Keras numbers unnamed layers per process (dense, dense_1, ...): without this, a model's file and every artifact
    # made from it would depend on what the process built before (a suite in sequence vs. each model in a worker).
    keras.backend.clear_session()
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
        plan = module.TRAINING if epochs is None else replace(module.TRAINING, epochs=epochs)
        result = train(
            model, dataset, keras=keras, plan=plan, label=name, loss_weights=getattr(module, "LOSS_WEIGHTS", None)
        )
    log.info(
        "trained %s: %d epochs, val accuracy %s, %.1fs",
        name,
        result.epochs_run,
        "n/a" if result.val_accuracy is None else f"{result.val_accuracy:.4f}",
        result.seconds,
    )
    return model


def reference_path(reference: str, data: str, out_dir: Path, *, epochs: int | None, seed: int) -> tuple[Path, dict]:
    """Where `reference_file` keeps a reference model trained on `data`, named by a hash of its training, and that
    training."""
    from effkit import __version__

    training = {"reference": reference, "data": data, "epochs": epochs, "seed": seed, "effkit": __version__}
    key = hashlib.sha256(json.dumps(training, sort_keys=True).encode()).hexdigest()[:12]
    return Path(out_dir) / "models" / f"{reference}-{key}.keras", training


def train_reference_file(reference: str, data: str, path: Path, *, epochs: int | None, seed: int) -> Path:
    """Train a reference classifier on its data (Keras 3) and save it to `path`."""
    from effkit.load import keras_compat
    from effkit.load.data import load_dataset

    dataset = load_dataset(data, seed=seed)
    trained = train_reference(reference, dataset, generation=keras_compat.KERAS_3, seed=seed, epochs=epochs)
    return keras_compat.save_model(trained, path)


def reference_file(reference: str, data: str, out_dir: Path, *, epochs: int | None = None, seed: int = 0) -> Path:
    """The reference model's file under `out_dir/models/`, trained now (Keras 3) or reused from an earlier run with
    the same training and data: what `effkit bench` and bench/peer_tfmot.py both start from."""
    from effkit.files import write_text

    path, training = reference_path(reference, data, out_dir, epochs=epochs, seed=seed)
    if path.exists():
        log.info("bench: reusing %s", path)
        return path
    train_reference_file(reference, data, path, epochs=epochs, seed=seed)
    write_text(path.with_suffix(".json"), json.dumps(training, indent=2) + "\n")
    return path


def train_and_save(
    name: str,
    out: str | Path | None = None,
    *,
    data: str | None = None,
    generation: int = 3,
    seed: int = 0,
    epochs: int | None = None,
    overwrite: bool = False,
) -> str:
    """`effkit train`: train a reference classifier, save it, and say how it scores on the test split.

    Args:
        name: one of `NAMES`.
        out: the .keras (or .h5) file to write; default `<name>.keras`.
        data: a dataset name or path; default the model's own dataset (`DATA`).
        generation: 3 saves a Keras 3 file, 2 a tf_keras one.
        seed: fixes the split, initialisation and training.
        epochs: overrides the training plan's epochs.
        overwrite: replace an existing `out`.

    Returns:
        One line: the test top-1 and where the model was saved.

    Raises:
        EffkitError: unknown model, bad options, an existing file, data that cannot be had or does not fit.
    """
    from effkit.config import Format
    from effkit.errors import InputError
    from effkit.load import keras_compat
    from effkit.load.classifier import describe, model_input
    from effkit.load.data import check_sizes, load_dataset
    from effkit.runtime import open_runner
    from effkit.runtime.measure import primary_top1

    module = get(name)
    if generation not in (2, 3):
        raise ConfigError(f"--keras must be 2 (tf_keras) or 3 (Keras 3), got {generation}")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {epochs}")
    out = Path(out or f"{name}.keras")
    if out.suffix not in (".keras", ".h5"):
        raise ConfigError(f"--out {out} must end in .keras (or .h5)")
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it or choose another --out")
    if out.parent.exists() and not out.parent.is_dir():
        raise InputError(f"--out {out} lies under {out.parent}, which is a file")
    source = data or module.DATA
    try:
        dataset = load_dataset(source, seed=seed)
    except DataError as error:
        if data or source == module.OFFLINE_DATA:
            raise
        raise DataError(f"{error}; or train {name} on its offline stand-in: --data {module.OFFLINE_DATA}") from None
    check_sizes(dataset)
    model = train_reference(name, dataset, generation=generation, seed=seed, epochs=epochs)
    keras_compat.save_model(model, out)
    names = list(model_input(model, name=name).output_names)
    info = describe(model, dataset.x_train[:8], name=name, labels=dataset.labels("train", names))
    outputs = open_runner(model, Format.KERAS, outputs=names).predict(dataset.x_test)
    accuracy = primary_top1(info, outputs, dataset.labels("test", names))
    return f"{name}: test top-1 {accuracy * 100:.2f}% on {len(dataset.x_test)} {dataset.name} samples; saved {out}"
