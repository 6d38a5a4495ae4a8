"""imdb_text: the lecture's text classifier, Embedding(10000, 16) -> GlobalAveragePooling1D -> Dense 16 -> Dense 1.

Reviews are integer token sequences padded to 256 (0 is padding); the output is one sigmoid unit, the probability
of a positive review (accuracy at 0.5). The input stays integer through every export: int8 TFLite keeps int32
token ids, and so does ONNX.
"""

from __future__ import annotations

from typing import Any

from .training import TrainingPlan

DATA = "imdb"
OFFLINE_DATA = "synthetic_text"  # token sequences of the same shape with a learnable sentiment
VOCABULARY = 10_000
LENGTH = 256
TRAINING = TrainingPlan(epochs=20, batch_size=64, learning_rate=5e-3, decay_rate=0.9, patience=3)


def build(keras: Any, *, input_shape: tuple[int, ...] = (LENGTH,), num_classes: int = 2) -> Any:
    if num_classes != 2:
        from effkit.errors import ConfigError

        raise ConfigError(f"imdb_text is a binary classifier; the data has {num_classes} classes")
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape, dtype="int32"),
            layers.Embedding(VOCABULARY, 16),
            layers.GlobalAveragePooling1D(),
            layers.Dense(16, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-4)),
            layers.Dense(1, activation="sigmoid"),
        ],
        name="imdb_text",
    )
