"""fashion_mlp: the lecture's first classifier, Flatten -> Dense 128 relu -> Dense 10, for Fashion-MNIST.

Pixels (0..255) are rescaled inside the model; the Dense layer gets L2 and dropout, as the lecture recommends
against overfitting.
"""

from __future__ import annotations

from typing import Any

from .training import TrainingPlan

DATA = "fashion_mnist"
OFFLINE_DATA = "digits:28x28x1"  # real images of the same shape when Fashion-MNIST is not cached
TRAINING = TrainingPlan(epochs=20, batch_size=64, learning_rate=1e-3, decay_rate=0.9, patience=4)


def build(keras: Any, *, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10) -> Any:
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Rescaling(1.0 / 255.0),
            layers.Flatten(),
            layers.Dense(128, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-4)),
            layers.Dropout(0.2),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="fashion_mlp",
    )
