"""One training loop for every fit effkit runs: reference recipes and pruning fine-tunes.

Exponential learning-rate decay per epoch, early stopping on validation loss with the best weights restored, and
one progress line per epoch on the `effkit` logger.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..load.classifier import Head, loss_for, metric_for
from ..load.data import Dataset
from ..progress import bar

log = logging.getLogger("effkit")


@dataclass(frozen=True)
class FitResult:
    epochs_run: int
    val_accuracy: float | None
    seconds: float


def fit(
    model: Any,
    dataset: Dataset,
    *,
    keras: Any,
    heads: tuple[Head, ...],
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    decay_rate: float = 0.9,
    patience: int = 5,
    start_from_epoch: int = 0,
    loss_weights: dict[str, float] | None = None,
    callbacks: tuple = (),
    label: str = "train",
) -> FitResult:
    """Compile and fit `model` (of the Keras generation `keras`) on the dataset's train split.

    Args:
        model: a Keras model; compiled here with Adam and an exponentially decaying learning rate.
        dataset: train split for fitting, validation split for early stopping.
        keras: the Keras module the model belongs to (`keras_compat.keras_module`).
        heads: the model's outputs (`classifier.describe`): each gets the loss and metric its kind needs.
        epochs: the most epochs to run.
        batch_size: samples per step.
        learning_rate: the initial learning rate.
        decay_rate: factor applied to the learning rate over each epoch.
        patience: epochs without a better validation loss before stopping.
        start_from_epoch: epochs before early stopping may act (a pruning ramp must finish first).
        loss_weights: per-head weights of a multi-output model's losses; 1.0 each by default.
        callbacks: extra Keras callbacks, e.g. tfmot's UpdatePruningStep.
        label: how progress lines name this fit.

    Returns:
        How many epochs ran, the final validation accuracy and the wall time.
    """
    steps_per_epoch = max(1, math.ceil(len(dataset.x_train) / batch_size))
    schedule = keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps=steps_per_epoch, decay_rate=decay_rate
    )
    names = [head.name for head in heads]
    losses = [loss_for(head.kind, keras) for head in heads]
    metrics = [[metric_for(head.kind)] for head in heads]
    weights = [float((loss_weights or {}).get(name, 1.0)) for name in names]
    if len(heads) == 1:
        losses, metrics, weights = losses[0], metrics[0], None
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=losses, metrics=metrics, loss_weights=weights)
    y_train = _targets(dataset, "train", names)
    y_val = _targets(dataset, "val", names)
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True, start_from_epoch=start_from_epoch
    )
    started = time.perf_counter()
    with bar(f"{label}: epochs", epochs) as advance:
        history = model.fit(
            dataset.x_train,
            y_train,
            validation_data=(dataset.x_val, y_val),
            epochs=epochs,
            batch_size=batch_size,
            shuffle=True,
            verbose=0,
            callbacks=[*callbacks, stopper, _progress_callback(keras, label=label, epochs=epochs, advance=advance)],
        )
    accuracy_keys = [key for key in history.history if key.startswith("val_") and key.endswith("accuracy")]
    val_accuracy = history.history[accuracy_keys[0]] if accuracy_keys else None
    return FitResult(
        epochs_run=len(history.history.get("loss", ())),
        val_accuracy=float(max(val_accuracy)) if val_accuracy else None,
        seconds=time.perf_counter() - started,
    )


def _targets(dataset: Dataset, split: str, names: list[str]):
    labels = dataset.labels(split, names)
    return labels[names[0]] if len(names) == 1 else [labels[name] for name in names]


def _progress_callback(keras: Any, *, label: str, epochs: int, advance: Callable[[int], None]) -> Any:
    class Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            advance(1)
            logs = logs or {}
            keys = ["loss", "accuracy", "val_loss"]
            keys += [key for key in logs if key.startswith("val_") and key.endswith(("accuracy", "mae"))]
            shown = "  ".join(f"{key} {logs[key]:.4f}" for key in dict.fromkeys(keys) if key in logs)
            log.info("%s epoch %d/%d  %s", label, epoch + 1, epochs, shown)

    return Progress()
