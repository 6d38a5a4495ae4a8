"""One training loop for every fit effkit runs: reference recipes and the techniques' fine-tunes.

Exponential learning-rate decay per epoch and one progress line per epoch on the `effkit` logger. Training from
scratch stops early on validation loss and restores the best weights. A fine-tune has a `Teacher`, the model it
starts from: it learns from the teacher's softened outputs as well as the labels (distillation), keeps its
BatchNormalization statistics frozen, stops early on validation agreement with the teacher, and ends with the
weights of its best epoch, or of its start where the start counts and no epoch beat it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..load.classifier import Head, OutputKind, loss_for, metric_for
from ..load.data import Dataset
from ..progress import bar

log = logging.getLogger("effkit")

DISTILL_TEMPERATURE = 2.0  # softens the teacher's outputs so that its second choices teach too
DISTILL_LABEL_WEIGHT = 0.5  # share of a fine-tune's classification loss on the labels; the rest on the teacher


# The keys `FitResult.record` writes: what a search candidate keeps of its fine-tune.
FINE_TUNE_KEYS = (
    "distilled",
    "val_agreement_start",
    "val_agreement",
    "best_epoch",
    "frozen_batch_norm",
    "stopped_by_deadline",
)


@dataclass(frozen=True)
class FitResult:
    epochs_run: int
    val_accuracy: float | None
    seconds: float
    agreement: dict[str, Any] = field(default_factory=dict)  # with a teacher: start, best, best_epoch, frozen BN
    stopped_by_deadline: bool = False  # the search's deadline ended it before its epochs or its early stopping did

    def record(self) -> dict[str, Any]:
        """What a fine-tune's step records about its teacher: validation agreement at the start and at the end."""
        cut = {"stopped_by_deadline": True} if self.stopped_by_deadline else {}
        if not self.agreement:
            return cut
        start, best = self.agreement.get("start"), self.agreement.get("best")
        return {
            "distilled": self.agreement.get("distilled"),
            "val_agreement_start": None if start is None else round(start, 4),
            "val_agreement": None if best is None else round(best, 4),
            "best_epoch": self.agreement.get("best_epoch"),
            "frozen_batch_norm": len(self.agreement.get("frozen", ())),
            **cut,
        }


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
    teacher: Teacher | None = None,
    include_start: bool = False,
    deadline: float | None = None,
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
        teacher: the outputs of the model this fine-tune starts from (`teacher_of`): distil from them, freeze
            BatchNormalization, stop on validation agreement with them and restore the best epoch's weights.
        include_start: with a teacher, the weights before the first step compete with every epoch's, so that the
            fine-tune never ends below its start (clustering's start is already a clustered model; a pruning ramp's
            or QAT's start is not yet what the fine-tune makes, so they leave this off).
        deadline: a wall-clock time (`time.time()`) at which training stops, checked after every step; the epoch
            it stops in is scored like any other, so the best epoch's weights are still what a teacher's fit ends
            with. None: no deadline.

    Returns:
        How many epochs ran, the final validation accuracy, the wall time and, with a teacher, the agreement.
    """
    steps_per_epoch = max(1, math.ceil(len(dataset.x_train) / batch_size))
    schedule = keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps=steps_per_epoch, decay_rate=decay_rate
    )
    names = [head.name for head in heads]
    agreement: dict[str, Any] = {}
    if teacher is None:
        losses = [loss_for(head.kind, keras) for head in heads]
        metrics = [[metric_for(head.kind)] for head in heads]
    else:
        from ..load import keras_compat

        tf = keras_compat.tensorflow()
        distilled = teacher.label_weight < 1.0
        agreement["distilled"] = (
            {"temperature": teacher.temperature, "label_weight": teacher.label_weight} if distilled else False
        )
        agreement["frozen"] = freeze_batch_norm(model, keras)
        losses = [_distillation_loss(h.kind, teacher, tf) if h.classifies else loss_for(h.kind, keras) for h in heads]
        metrics = [[_packed_metric(h.kind, tf) if h.classifies else metric_for(h.kind)] for h in heads]
    weights = [float((loss_weights or {}).get(name, 1.0)) for name in names]
    if len(heads) == 1:
        losses, metrics, weights = losses[0], metrics[0], None
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=losses, metrics=metrics, loss_weights=weights)
    y_train = _targets(dataset, "train", names, heads=heads, soft=teacher.train if teacher else None)
    y_val = _targets(dataset, "val", names, heads=heads, soft=teacher.val if teacher else None)
    if teacher is None:
        stopper = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True, start_from_epoch=start_from_epoch
        )
        callbacks = (*callbacks, stopper)
    else:
        best = _best_by_agreement(
            keras,
            x_val=dataset.x_val,
            teacher=teacher,
            heads=heads,
            start_from_epoch=start_from_epoch,
            include_start=include_start,
            record=agreement,
        )
        stopper = keras.callbacks.EarlyStopping(
            monitor="val_agreement", mode="max", patience=patience, start_from_epoch=start_from_epoch
        )
        callbacks = (*callbacks, best, stopper)
    stop = _deadline_callback(keras, deadline, label=label) if deadline is not None else None
    if stop is not None:
        callbacks = (stop, *callbacks)
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
            callbacks=[*callbacks, _progress_callback(keras, label=label, epochs=epochs, advance=advance)],
        )
    if teacher is not None:  # leave a plain compile config behind: the distillation loss neither saves nor pickles
        plain = [loss_for(head.kind, keras) for head in heads]
        model.compile(loss=plain[0] if len(plain) == 1 else plain)
    accuracy_keys = [key for key in history.history if key.startswith("val_") and key.endswith("accuracy")]
    val_accuracy = history.history[accuracy_keys[0]] if accuracy_keys else None
    return FitResult(
        epochs_run=len(history.history.get("loss", ())),
        val_accuracy=float(max(val_accuracy)) if val_accuracy else None,
        seconds=time.perf_counter() - started,
        agreement=agreement,
        stopped_by_deadline=stop is not None and stop.stopped,
    )


def fine_tune_from(
    source: Any,
    model: Any,
    dataset: Dataset,
    *,
    keras: Any,
    heads: tuple[Head, ...],
    config: Any,
    epochs: int,
    label: str,
    learning_rate_factor: float = 1.0,
    **options: Any,
) -> FitResult:
    """`fit` for a technique's fine-tune of `model`, made from `source`: the settings of `config` (a
    `PruneConfig`: batch size, learning rate times `learning_rate_factor`, decay, patience, distillation) and
    `source` as the teacher. `options` go to `fit` (`include_start`, `deadline`...)."""
    return fit(
        model,
        dataset,
        keras=keras,
        heads=heads,
        epochs=epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate * learning_rate_factor,
        decay_rate=config.lr_decay_rate,
        patience=config.patience,
        label=label,
        teacher=teacher_of(source, dataset, heads, distill=config.distill),
        **options,
    )


def _targets(dataset: Dataset, split: str, names: list[str], *, heads: tuple[Head, ...], soft=None):
    """Each head's labels; with the teacher's outputs `soft`, a classification head's targets are packed as
    [label, teacher's outputs...] for its distillation loss."""
    labels = dataset.labels(split, names)
    targets = [
        _packed(labels[head.name], soft[i]) if soft is not None and head.classifies else labels[head.name]
        for i, head in enumerate(heads)
    ]
    return targets[0] if len(targets) == 1 else targets


def _deadline_callback(keras: Any, deadline: float, *, label: str) -> Any:
    """Stops training after the first step that ends past `deadline` (mid-epoch too: Keras ends the epoch there,
    validates it and calls every callback's `on_epoch_end`)."""

    class Deadline(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.stopped = False
            self._supports_tf_logs = True  # tf_keras: leave the logs as tensors, so that no step waits on them

        def _check(self):
            if not self.stopped and time.time() >= deadline:
                self.stopped = True
                self.model.stop_training = True
                log.info("%s: stopped by the search's deadline", label)

        def on_train_batch_end(self, batch, logs=None):
            self._check()

        def on_epoch_end(self, epoch, logs=None):
            self._check()

    return Deadline()


def _progress_callback(keras: Any, *, label: str, epochs: int, advance: Callable[[int], None]) -> Any:
    class Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            advance(1)
            logs = logs or {}
            keys = ["loss", "accuracy", "val_loss", "val_agreement"]
            keys += [key for key in logs if key.startswith("val_") and key.endswith(("accuracy", "mae"))]
            shown = "  ".join(f"{key} {logs[key]:.4f}" for key in dict.fromkeys(keys) if key in logs)
            log.info("%s epoch %d/%d  %s", label, epoch + 1, epochs, shown)

    return Progress()


@dataclass(frozen=True)
class Teacher:
    """What a fine-tune learns from besides the labels: the outputs of the model it starts from (knowledge
    distillation, Hinton et al. 2015), on the train split for the loss and on the validation split for agreement.

    The loss of each classification head is `label_weight` x cross-entropy on the labels plus (1 - label_weight) x
    T^2 x KL(teacher || student), both softened at temperature T; a regression head mixes its two squared errors.
    """

    train: tuple[np.ndarray, ...]  # per head, the teacher's outputs on x_train
    val: tuple[np.ndarray, ...]  # per head, on x_val
    temperature: float = DISTILL_TEMPERATURE
    label_weight: float = DISTILL_LABEL_WEIGHT


def teacher_of(model: Any, dataset: Dataset, heads: tuple[Head, ...], *, distill: bool = True) -> Teacher:
    """The model's own outputs on the train and validation splits, before a fine-tune changes it.

    With `distill` off, the loss is the labels' alone (label weight 1): the fine-tune still stops on agreement with
    the model, keeps its best epoch and freezes BatchNormalization, so that only the loss differs.
    """
    from ..runtime.keras import KerasRunner

    runner = KerasRunner(model)
    train = runner.predict(dataset.x_train)
    val = runner.predict(dataset.x_val)
    if len(train) != len(heads):
        raise ValueError(f"the teacher has {len(train)} outputs for {len(heads)} heads")
    return Teacher(
        tuple(np.asarray(a, np.float32) for a in train),
        tuple(np.asarray(a, np.float32) for a in val),
        label_weight=DISTILL_LABEL_WEIGHT if distill else 1.0,
    )


def freeze_batch_norm(model: Any, keras: Any) -> list[str]:
    """Keep every BatchNormalization layer's statistics and scale as they are (tf_keras and Keras 3 run a
    non-trainable BatchNormalization in inference mode): a few batches of new data must not re-estimate what a
    pretrained model learned on far more. Layers inside nested models and technique wrappers count too."""
    frozen, stack, seen = [], list(getattr(model, "layers", ())), set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        stack.extend(getattr(layer, "layers", ()))
        inner = getattr(layer, "layer", None)  # tfmot's pruning, clustering and quantize wrappers
        if inner is not None:
            stack.append(inner)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def _distillation_loss(kind: OutputKind, teacher: Teacher, tf: Any) -> Callable:
    """The head's loss on packed targets: column 0 the label, the rest the teacher's outputs."""
    temperature, alpha = teacher.temperature, teacher.label_weight
    eps = 1e-7

    def logits_of(outputs):
        if kind == OutputKind.PROBABILITIES:
            return tf.math.log(tf.clip_by_value(outputs, eps, 1.0))
        if kind == OutputKind.SIGMOID:
            p = tf.clip_by_value(outputs, eps, 1.0 - eps)
            return tf.math.log(p) - tf.math.log(1.0 - p)
        return outputs

    def loss(y_true, y_pred):
        y_true = tf.cast(y_true, y_pred.dtype)
        labels, soft = y_true[:, 0], y_true[:, 1:]
        if kind == OutputKind.REGRESSION:
            own = tf.reduce_mean(tf.square(y_pred - labels[:, None]), axis=-1)
            learned = tf.reduce_mean(tf.square(y_pred - soft), axis=-1)
            return alpha * own + (1.0 - alpha) * learned
        student, taught = logits_of(y_pred), logits_of(soft)
        if kind in (OutputKind.SIGMOID, OutputKind.BINARY_LOGIT):
            own = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels[:, None], logits=student)[:, 0]
            target = tf.sigmoid(taught / temperature)
            learned = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=student / temperature)[:, 0]
            learned -= tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=taught / temperature)[:, 0]
        else:
            own = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=student)
            target = tf.nn.softmax(taught / temperature)
            learned = tf.reduce_sum(
                target * (tf.nn.log_softmax(taught / temperature) - tf.nn.log_softmax(student / temperature)), axis=-1
            )
        return alpha * own + (1.0 - alpha) * temperature**2 * learned

    return loss


def _packed_metric(kind: OutputKind, tf: Any) -> Callable:
    """Top-1 accuracy (or mean absolute error) against the label column of packed targets."""

    def accuracy(y_true, y_pred):
        labels = tf.cast(y_true[:, 0], y_pred.dtype)
        if y_pred.shape[-1] == 1:
            threshold = 0.0 if kind == OutputKind.BINARY_LOGIT else 0.5
            predicted = tf.cast(y_pred[:, 0] > threshold, y_pred.dtype)
        else:
            predicted = tf.cast(tf.argmax(y_pred, axis=-1), y_pred.dtype)
        return tf.cast(tf.equal(predicted, labels), tf.float32)

    def mae(y_true, y_pred):
        return tf.reduce_mean(tf.abs(y_pred - tf.cast(y_true[:, :1], y_pred.dtype)), axis=-1)

    return mae if kind == OutputKind.REGRESSION else accuracy


def _packed(labels: np.ndarray, soft: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels, np.float32).reshape(len(labels), -1)[:, :1]
    return np.concatenate([labels, np.asarray(soft, np.float32).reshape(len(soft), -1)], axis=1)


def agreement_with(model: Any, x_val: np.ndarray, teacher: Teacher, heads: tuple[Head, ...]) -> float:
    """Share of validation samples whose top-1 on the primary head matches the teacher's, as fine-tunes score it."""
    primary = next(i for i, head in enumerate(heads) if head.classifies) if any(h.classifies for h in heads) else 0
    return _agreement(model, x_val, teacher.val[primary], heads[primary].kind, primary)


def _agreement(model: Any, x: np.ndarray, reference: np.ndarray, kind: OutputKind, index: int) -> float:
    """Share of validation samples whose top-1 on the primary head matches the teacher's."""
    from ..runtime.measure import top1

    chunks = []
    for start in range(0, len(x), 256):
        outputs = model(x[start : start + 256], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        chunks.append(np.asarray(outputs[index]))
    predicted = np.concatenate(chunks)
    if reference.shape[-1] == 1:
        threshold = 0.0 if kind == OutputKind.BINARY_LOGIT else 0.5
        return top1(predicted, (reference[:, 0] > threshold).astype(np.int64), kind)
    return top1(predicted, np.argmax(reference, axis=-1), kind)


def _best_by_agreement(keras: Any, *, x_val, teacher: Teacher, heads, start_from_epoch: int, include_start: bool,
                       record: dict) -> Any:  # fmt: skip
    """A callback that scores each epoch by validation agreement with the teacher (`val_agreement` in the logs,
    for early stopping), and at the end restores the best weights: the start's too when `include_start`."""
    primary = next(i for i, head in enumerate(heads) if head.classifies) if any(h.classifies for h in heads) else 0
    kind = heads[primary].kind
    reference = teacher.val[primary]

    class BestByAgreement(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.best, self.best_weights, self.best_epoch = -np.inf, None, None
            start = _agreement(self.model, x_val, reference, kind, primary)
            record["start"] = start
            if include_start:
                self.best, self.best_weights, self.best_epoch = start, self.model.get_weights(), 0

        def on_epoch_end(self, epoch, logs=None):
            score = _agreement(self.model, x_val, reference, kind, primary)
            if logs is not None:
                logs["val_agreement"] = score
            if epoch + 1 >= start_from_epoch and score > self.best:
                self.best, self.best_weights, self.best_epoch = score, self.model.get_weights(), epoch + 1

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)
            record["best"] = None if self.best_epoch is None else self.best
            record["best_epoch"] = self.best_epoch

    return BestByAgreement()
