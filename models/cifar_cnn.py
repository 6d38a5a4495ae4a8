"""cifar_cnn: a small CNN for CIFAR-10 and CIFAR-100 (the classes follow the data).

Two blocks of two 3x3 convolutions with batch normalization, pooling and dropout, then global average pooling
and an L2-regularised Dense layer. Flip and shift augmentation act during training only.
"""

from __future__ import annotations

from typing import Any

from .training import TrainingPlan

DATA = "cifar10"
OFFLINE_DATA = "digits:32x32x3"
TRAINING = TrainingPlan(epochs=30, batch_size=64, learning_rate=2e-3, decay_rate=0.92, patience=5)


def build(keras: Any, *, input_shape: tuple[int, ...] = (32, 32, 3), num_classes: int = 10) -> Any:
    layers = keras.layers

    def block(filters: int) -> list:
        return [
            layers.Conv2D(filters, 3, padding="same", use_bias=False),
            layers.BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.Conv2D(filters, 3, padding="same", use_bias=False),
            layers.BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Dropout(0.2),
        ]

    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.RandomFlip("horizontal"),
            layers.RandomTranslation(0.1, 0.1),
            layers.Rescaling(1.0 / 255.0),
            *block(32),
            *block(64),
            layers.GlobalAveragePooling2D(),
            layers.Dense(128, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-4)),
            layers.Dropout(0.3),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="cifar_cnn",
    )
