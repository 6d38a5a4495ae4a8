"""transfer_mobilenet: MobileNetV2 (alpha 0.35) with a new classification head: the lecture's transfer learning.

With ImageNet weights (used when Keras has them cached), the base is first a frozen feature extractor while the
head trains, then its top blocks are fine-tuned at a lower learning rate, batch normalization kept in inference
mode. Without them (no network here), a frozen random base would teach nothing, so the whole network trains from
scratch, with batch-normalization momentum 0.9 (at Keras' 0.999 a short run evaluates at chance, docs/pitfalls.md).

Augmentation (shift, small rotation; no flip, which would turn digits and text into other classes) is part of the
model, active in training only. On digits at 96x96 from scratch it is what makes the model worth quantizing:
without it, train accuracy reached 100% by epoch 9 while test top-1 stayed at 91%, and int8 agreed with the model on
only 94% of the test split; with it, 20 epochs reach 97.8% and int8 agrees on 97.8-98.3%.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from typing import Any

from .training import TrainingPlan, train

DATA = "digits:96x96x3"  # an image folder (--data path/) is the usual real input
OFFLINE_DATA = DATA
TRAINING = TrainingPlan(epochs=40, batch_size=32, learning_rate=1e-3, decay_rate=0.95, patience=6)
FINE_TUNE = TrainingPlan(epochs=6, batch_size=32, learning_rate=1e-4, decay_rate=0.9, patience=3)
FINE_TUNE_FROM = "block_13_expand"  # layers from here on are fine-tuned in the second phase
ALPHA = 0.35

log = logging.getLogger("effkit")


@functools.cache
def imagenet_weights(keras: Any, input_shape: tuple[int, ...]) -> str | None:
    """'imagenet' when Keras can load those weights here (from its cache), else None; said in the log."""
    from effkit.console import silenced

    if input_shape[2] != 3 or input_shape[0] != input_shape[1] or input_shape[0] not in (96, 128, 160, 192, 224):
        log.info(
            "transfer_mobilenet: no ImageNet weights exist for input %s; training from random weights", input_shape
        )
        return None
    try:
        with silenced():
            keras.applications.MobileNetV2(input_shape=input_shape, alpha=ALPHA, include_top=False, weights="imagenet")
    except Exception:
        log.info("transfer_mobilenet: ImageNet weights are not cached and cannot be downloaded; using weights=None")
        return None
    log.info("transfer_mobilenet: using cached ImageNet weights")
    return "imagenet"


def build(keras: Any, *, input_shape: tuple[int, ...] = (96, 96, 3), num_classes: int = 10) -> Any:
    layers = keras.layers
    weights = imagenet_weights(keras, tuple(input_shape))
    base = keras.applications.MobileNetV2(input_shape=input_shape, alpha=ALPHA, include_top=False, weights=weights)
    inputs = keras.Input(input_shape)
    x = layers.RandomTranslation(0.1, 0.1)(inputs)
    x = layers.RandomRotation(0.05)(x)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(x)  # MobileNetV2 expects [-1, 1]
    if weights:
        base.trainable = False
        x = base(x, training=False)  # batch normalization stays in inference mode, also when fine-tuning
    else:
        for layer in base.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = 0.9
        x = base(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="transfer_mobilenet")


def fit(model: Any, dataset, *, keras: Any, label: str, epochs: int | None = None):
    """Feature extraction, then fine-tuning of the top blocks (or one from-scratch phase without weights).

    `epochs` overrides each phase's epochs.
    """
    first = TRAINING if epochs is None else replace(TRAINING, epochs=epochs)
    second = FINE_TUNE if epochs is None else replace(FINE_TUNE, epochs=epochs)
    result = train(model, dataset, keras=keras, plan=first, label=f"{label} head" if _frozen(model) else label)
    if not _frozen(model):
        return result
    base = _base(model)
    base.trainable = True
    trainable = False
    for layer in base.layers:
        trainable = trainable or layer.name == FINE_TUNE_FROM
        layer.trainable = trainable and not isinstance(layer, keras.layers.BatchNormalization)
    log.info("%s: fine-tuning MobileNetV2 from %s at learning rate %g", label, FINE_TUNE_FROM, FINE_TUNE.learning_rate)
    return train(model, dataset, keras=keras, plan=second, label=f"{label} fine-tune")


def _base(model: Any) -> Any:
    return next(layer for layer in model.layers if hasattr(layer, "layers") and layer.layers)


def _frozen(model: Any) -> bool:
    return not _base(model).trainable
