"""The import gate: TensorFlow, tf_keras, Keras 3 and tfmot, always through the functions here.

`TF_USE_LEGACY_KERAS=1` must be set before TensorFlow is imported, so importing this module (which importing
`effkit` does) sets it; every other effkit module gets TensorFlow and Keras through these functions.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ...errors import ModelError

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING lines drown effkit's progress

KERAS_2 = 2
KERAS_3 = 3
BRIDGE_TOLERANCE = 1e-4  # max abs output difference allowed between a Keras 3 model and its tf_keras rebuild

log = logging.getLogger(__name__)


def tensorflow():
    """TensorFlow, imported with tf_keras as its Keras and with its own logging quieted."""
    import sys

    if "tensorflow" not in sys.modules:
        from ...console import silenced

        # TensorFlow's C++ start-up lines (oneDNN, CUDA probing) bypass TF_CPP_MIN_LOG_LEVEL; device discovery
        # is forced here, inside the silence, so that its "failed call to cuInit" is not printed later.
        with silenced():
            import tensorflow

            tensorflow.config.list_physical_devices()
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl ships with TensorFlow; tolerate its absence anyway
        pass
    return tf


def tf_keras():
    """Keras 2 (tf_keras): what tfmot, the TFLite converter and effkit's pipeline work with."""
    tensorflow()
    import tf_keras

    register_keras3_activations(tf_keras)
    return tf_keras


def keras3():
    """Keras 3, for loading and saving users' Keras 3 files."""
    tensorflow()
    import keras

    return keras


def keras_module(generation: int):
    """`keras3()` or `tf_keras()` by generation number (3 or 2)."""
    if generation == KERAS_3:
        return keras3()
    if generation == KERAS_2:
        return tf_keras()
    raise ModelError(f"unknown Keras generation {generation}; known: 2 (tf_keras), 3 (keras)")


def tfmot():
    """tensorflow-model-optimization, which only accepts tf_keras models."""
    tf_keras()
    import tensorflow_model_optimization

    return tensorflow_model_optimization


def is_tf_keras_model(model: Any) -> bool:
    return type(model).__module__.startswith("tf_keras")


def tf_variables(model: Any) -> list:
    """A model's weights as TensorFlow variables, for tracking in a tf.Module: Keras 3 wraps each one."""
    if is_tf_keras_model(model):
        return list(model.weights)
    return [variable.value for variable in model.weights]


def generation_of(model: Any) -> int:
    """2 for a tf_keras model, 3 for a Keras 3 model."""
    if is_tf_keras_model(model):
        return KERAS_2
    if type(model).__module__.startswith("keras"):
        return KERAS_3
    raise ModelError(f"expected a Keras model, got {type(model).__name__}")


KERAS3_ONLY_ACTIVATIONS = (
    "celu",
    "hard_shrink",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "hard_tanh",
    "log_sigmoid",
    "soft_shrink",
    "sparse_plus",
    "sparse_sigmoid",
    "sparsemax",
    "squareplus",
    "tanh_shrink",
)
REGISTERED_PACKAGE = "effkit"


def register_keras3_activations(tfk) -> None:
    """Make the Keras-3-only activations known to tf_keras (the bridge uses them; saved pruned models name them)."""
    for name in KERAS3_ONLY_ACTIVATIONS:
        if tfk.saving.get_registered_object(f"{REGISTERED_PACKAGE}>{name}") is None:
            tfk.saving.register_keras_serializable(package=REGISTERED_PACKAGE, name=name)(_keras3_activation(name))


def _keras3_activation(name: str):
    def activation(x):
        return keras3().activations.get(name)(x)

    activation.__name__ = name
    return activation
