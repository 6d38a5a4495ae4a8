"""multihead: a shared convolutional base with three heads of different kinds, like the lecture's face model
(age regression, sex binary, race 6-way).

Heads: `category` (N-way softmax), `flag` (binary sigmoid) and `value` (linear regression). The losses are
weighted so that no head drowns the others. Offline stand-in: digits, where category is the digit, flag is
"digit >= 5" and value is digit / 9.
"""

from __future__ import annotations

from typing import Any

from .training import TrainingPlan

DATA = "digits_multihead:28x28x1"
OFFLINE_DATA = DATA
TRAINING = TrainingPlan(epochs=25, batch_size=32, learning_rate=2e-3, decay_rate=0.9, patience=5)
LOSS_WEIGHTS = {"category": 1.0, "flag": 0.5, "value": 2.0}


def build(keras: Any, *, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10) -> Any:
    layers = keras.layers
    inputs = keras.Input(input_shape, name="image")
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-4))(x)
    shared = layers.Dropout(0.3)(x)
    outputs = [
        layers.Dense(num_classes, activation="softmax", name="category")(shared),
        layers.Dense(1, activation="sigmoid", name="flag")(shared),
        layers.Dense(1, name="value")(shared),
    ]
    return keras.Model(inputs, outputs, name="multihead")
