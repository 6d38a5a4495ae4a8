"""The one place that chooses between Keras 3 and tf_keras (Keras 2), and bridges models between them.

Three parts: `gate` is the import gate (TensorFlow, tf_keras, Keras 3, tfmot, always through the functions
below); `files` loads and saves model files of either generation; `bridge` rebuilds Keras 3 models in tf_keras.
Imports of private APIs, which are what breaks at the next TensorFlow upgrade, sit in `private`.

tensorflow-model-optimization works only with tf_keras, while users increasingly bring Keras 3 `.keras` files.
effkit therefore runs its pipeline on tf_keras models and rebuilds Keras 3 models as tf_keras ones here: the Keras 3
config is translated (see `_Translator`), the model rebuilt by tf_keras and the weights copied layer by layer. The
caller verifies the bridge numerically with `max_output_diff` on real data.

`TF_USE_LEGACY_KERAS=1` must be set before TensorFlow is imported, so importing this module sets it; every other
effkit module gets TensorFlow and Keras through the functions below.
"""

from __future__ import annotations

from .bridge import KERAS3_OPERATIONS, bridge_to_tf_keras, max_output_diff
from .files import LoadedModel, adopt, load_model, save_model, saved_generation
from .gate import (
    BRIDGE_TOLERANCE,
    KERAS3_ONLY_ACTIVATIONS,
    KERAS_2,
    KERAS_3,
    generation_of,
    is_tf_keras_model,
    keras3,
    keras_module,
    tensorflow,
    tf_keras,
    tf_variables,
    tfmot,
)

__all__ = [
    "BRIDGE_TOLERANCE",
    "KERAS3_ONLY_ACTIVATIONS",
    "KERAS3_OPERATIONS",
    "KERAS_2",
    "KERAS_3",
    "LoadedModel",
    "adopt",
    "bridge_to_tf_keras",
    "generation_of",
    "is_tf_keras_model",
    "keras3",
    "keras_module",
    "load_model",
    "max_output_diff",
    "save_model",
    "saved_generation",
    "tensorflow",
    "tf_keras",
    "tf_variables",
    "tfmot",
]
