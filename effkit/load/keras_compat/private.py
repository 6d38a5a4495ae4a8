"""Every private API effkit uses, in one guarded place: these are what break at the next TensorFlow upgrade.

Each is reached through a function here that says, when it fails, which private name moved; tests/test_private_api.py
names them all and checks each still resolves in the installed versions.
"""

from __future__ import annotations

from typing import Any

from ...errors import StageError

# Keras 3 keeps `keras.ops` calls in a functional config as operations of this module (the bridge translates them).
KERAS3_OPS_MODULE = "keras.src.ops"

# What each function below reaches, by package: the test names these.
PRIVATE_NAMES = {
    "tf_keras": ("tf_keras.src.saving.serialization_lib.SafeModeScope",),
    "tensorflow-model-optimization": (
        "tensorflow_model_optimization.python.core.sparsity.keras.prune_registry.PruneRegistry",
        "tensorflow_model_optimization.python.core.clustering.keras.experimental.cluster.cluster_weights",
    ),
    "tensorflow": ("tensorflow.python.framework.ops.Operation._set_attr",),
    "keras": (KERAS3_OPS_MODULE,),
    "ai-edge-litert": ("ai_edge_litert.interpreter.Interpreter._get_ops_details",),
}


def _moved(name: str, error: BaseException) -> StageError:
    return StageError(f"a private API effkit relies on has moved in this version: {name} ({error})")


def safe_mode_scope(enabled: bool) -> Any:
    """tf_keras' SafeModeScope: the bridge rebuilds an already loaded (already checked) model with it off."""
    try:
        from tf_keras.src.saving.serialization_lib import SafeModeScope
    except ImportError as error:
        raise _moved(PRIVATE_NAMES["tf_keras"][0], error) from error
    return SafeModeScope(enabled)


def prune_registry() -> Any:
    """tfmot's PruneRegistry: which layers' weights tfmot prunes (it has no public way to ask)."""
    try:
        from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry
    except ImportError as error:
        raise _moved(PRIVATE_NAMES["tensorflow-model-optimization"][0], error) from error
    return PruneRegistry


def experimental_cluster_weights() -> Any:
    """tfmot's experimental `cluster_weights`, the one with `preserve_sparsity` and `cluster_per_channel`.

    tfmot 0.8.1 documents it as `tfmot.clustering.keras.experimental.cluster_weights`, but that package's
    `__init__` is empty: the function is only reachable through its private module.
    """
    name = PRIVATE_NAMES["tensorflow-model-optimization"][1]
    try:
        from tensorflow_model_optimization.python.core.clustering.keras.experimental.cluster import cluster_weights
    except ImportError as error:
        raise _moved(name, error) from error
    return cluster_weights


def disable_xla_must_compile(operation: Any) -> None:
    """Clear `_XlaMustCompile` on a traced TensorFlow operation (Keras 3 runs grouped convolutions under XLA, which
    tf2onnx cannot convert); TensorFlow has no public setter for an operation's attributes."""
    from tensorflow.core.framework import attr_value_pb2

    try:
        operation._set_attr("_XlaMustCompile", attr_value_pb2.AttrValue(b=False))
    except AttributeError as error:
        raise _moved(PRIVATE_NAMES["tensorflow"][0], error) from error


def tflite_ops(interpreter: Any) -> list[dict[str, Any]]:
    """The operators of a LiteRT interpreter's graph (`op_name`, `inputs`, `outputs` as tensor indices): the
    interpreter has no public way to tell which tensor feeds which op."""
    try:
        return interpreter._get_ops_details()
    except AttributeError as error:
        raise _moved(PRIVATE_NAMES["ai-edge-litert"][0], error) from error
