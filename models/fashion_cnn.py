"""fashion_cnn: a small CNN with dropout and image augmentation for Fashion-MNIST.

Two conv/pool blocks, an L2-regularised Dense layer with dropout. Augmentation (horizontal flip, shift, small
rotation) is part of the model, so it acts during training only and is an identity at inference and export.
"""

from __future__ import annotations

from typing import Any

from .training import TrainingPlan

DATA = "fashion_mnist"
OFFLINE_DATA = "digits:28x28x1"
TRAINING = TrainingPlan(epochs=20, batch_size=64, learning_rate=1e-3, decay_rate=0.9, patience=4)


def build(keras: Any, *, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10) -> Any:
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.RandomFlip("horizontal"),
            layers.RandomTranslation(0.1, 0.1),
            layers.RandomRotation(0.05),
            layers.Rescaling(1.0 / 255.0),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(128, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-4)),
            layers.Dropout(0.5),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="fashion_cnn",
    )
