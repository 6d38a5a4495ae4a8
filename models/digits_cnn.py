"""digits_cnn: the embedded default, a small CNN on scikit-learn's 8x8 handwritten digits.

Two 3x3 convolutions and a pooling step, dropout, an L2-regularised Dense layer, softmax over ten digits. Pixel
values (0..16) are rescaled inside the model. About 94k parameters: large enough that pruning and quantization
show real gains, small enough to train in seconds on two cores.
"""

from __future__ import annotations

from typing import Any

from .training import TrainingPlan

DATA = "digits"
OFFLINE_DATA = DATA  # shipped inside scikit-learn: always available
TRAINING = TrainingPlan(epochs=30, batch_size=64, learning_rate=3e-3, decay_rate=0.9, patience=5)


def build(keras: Any, *, input_shape: tuple[int, ...] = (8, 8, 1), num_classes: int = 10) -> Any:
    layers = keras.layers
    l2 = keras.regularizers.L2(1e-4)
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Rescaling(1.0 / 16.0),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(128, activation="relu", kernel_regularizer=l2),
            layers.Dropout(0.3),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="digits_cnn",
    )
