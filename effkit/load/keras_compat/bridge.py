"""The Keras 3 -> tf_keras bridge: translate a Keras 3 config, rebuild it in tf_keras, copy the weights.

The caller verifies the rebuild numerically with `max_output_diff` on real data (see docs/pitfalls.md, 'Keras 3
and tf_keras').
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from ...errors import ModelError, first_line
from .gate import KERAS3_ONLY_ACTIVATIONS, REGISTERED_PACKAGE, tf_keras
from .private import KERAS3_OPS_MODULE, safe_mode_scope

log = logging.getLogger("effkit.keras_compat")


def max_output_diff(reference: Any, candidate: Any, x, *, batch_size: int = 256) -> float:
    """Largest absolute difference between two models' outputs on `x` (all outputs, inference mode), output by
    output in the order effkit keeps them (`classifier.output_names`)."""
    import numpy as np

    from ..classifier import output_names, outputs_as_list

    names = output_names(reference)
    worst = 0.0
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        ref = outputs_as_list(reference(chunk, training=False), names)
        cand = outputs_as_list(candidate(chunk, training=False), names)
        if len(ref) != len(cand):
            raise ModelError(f"bridged model has {len(cand)} outputs, the original {len(ref)}")
        for a, b in zip(ref, cand, strict=True):
            worst = max(worst, float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b)))))
    return worst


# --------------------------------------------------------------------------------------------------------------------
# Keras 3 -> tf_keras bridge


def bridge_to_tf_keras(model: Any) -> Any:
    """Rebuild a Keras 3 Sequential or Functional model as tf_keras, with the same weights.

    Raises:
        ModelError: the model is subclassed, or holds a layer or option tf_keras does not have.
    """
    tfk = tf_keras()
    class_name = type(model).__name__
    if class_name not in _MODEL_CLASSES:
        raise ModelError(
            f"cannot rebuild a subclassed Keras 3 model ({class_name}) for pruning; "
            "save a Sequential or Functional model instead"
        )
    translator = _Translator(tfk)
    config = translator.model_config(class_name, model.get_config())
    try:
        model_class = tfk.Sequential if class_name == "Sequential" else tfk.Model
        # The Keras 3 model is already loaded (safe-mode checks happened there); a Lambda it holds was allowed.
        with safe_mode_scope(False):
            rebuilt = model_class.from_config(config)
    except Exception as error:
        raise ModelError(f"cannot rebuild the Keras 3 model in tf_keras: {first_line(error)}") from error
    _copy_weights(model, rebuilt)
    return rebuilt


_MODEL_CLASSES = ("Sequential", "Functional")
# Base-layer keyword arguments every tf_keras layer takes through **kwargs.
_TF_KERAS_BASE_KWARGS = {
    "name",
    "trainable",
    "dtype",
    "dynamic",
    "input_dim",
    "input_shape",
    "batch_input_shape",
    "batch_size",
    "weights",
    "activity_regularizer",
    "autocast",
    "implementation",
    "input_length",
}
# Keras-3-only options whose value here means "what tf_keras does anyway": safe to drop.
_NEUTRAL_KERAS3_OPTIONS = {
    "data_format": "channels_last",
    "optional": False,
    "synchronized": False,
    "renorm": False,
    "quantization_config": None,
    "lora_rank": None,
    "lora_alpha": None,
}


class _Translator:
    """Turns a Keras 3 config into the tf_keras form (see docs/pitfalls.md, 'Keras 3 and tf_keras')."""

    def __init__(self, tfk):
        self.tfk = tfk

    def model_config(self, class_name: str, config: dict) -> dict:
        config = dict(config)
        config.pop("dtype", None)  # a model-level dtype policy; its layers carry their own
        # tf_keras gives a nested model a node of its own when it is built, so calls of it start at node 1.
        nested = {layer["config"]["name"] for layer in config["layers"] if layer["class_name"] in _MODEL_CLASSES}
        config["layers"] = [self.layer(layer, nested) for layer in config["layers"]]
        if class_name == "Functional":
            config["input_layers"] = _as_tensor_list(config["input_layers"])
            config["output_layers"] = _as_tensor_list(config["output_layers"])
        return config

    def layer(self, layer: dict, nested_models: set[str]) -> dict:
        class_name = layer["class_name"]
        config = dict(layer["config"])
        if str(layer.get("module", "")).startswith(KERAS3_OPS_MODULE):
            return _operation(class_name, config, layer.get("inbound_nodes", []), nested_models)
        if class_name in _MODEL_CLASSES:
            translated = {"class_name": class_name, "config": self.model_config(class_name, config)}
        else:
            translated = {"class_name": class_name, "config": self.layer_config(class_name, config)}
        if "name" in layer:
            translated["name"] = layer["name"]
        if "inbound_nodes" in layer:
            translated["inbound_nodes"] = [
                _node(node, layer.get("name", "?"), nested_models) for node in layer["inbound_nodes"]
            ]
        return translated

    def layer_config(self, class_name: str, config: dict) -> dict:
        if class_name == "InputLayer":
            config["batch_input_shape"] = config.pop("batch_shape", config.pop("batch_input_shape", None))
            config.pop("optional", None)
        if class_name == "Lambda":
            return self.lambda_config(config)
        if class_name == "LeakyReLU" and "negative_slope" in config:
            config["alpha"] = config.pop("negative_slope")
        if class_name == "BatchNormalization" and not config.get("renorm"):
            for key in ("renorm", "renorm_clipping", "renorm_momentum"):
                config.pop(key, None)
        layer_class = self._tf_keras_class(class_name, config.get("name"))
        accepted = _accepted_kwargs(layer_class)
        translated = {}
        for key, value in config.items():
            value = self.value(key, value)
            if accepted is not None and key not in accepted:
                if (key in _NEUTRAL_KERAS3_OPTIONS and value == _NEUTRAL_KERAS3_OPTIONS[key]) or value in (None, False):
                    continue
                raise ModelError(
                    f"layer {config.get('name')!r} ({class_name}) uses the Keras 3 option {key}={value!r}, "
                    "which tf_keras does not have"
                )
            translated[key] = value
        return translated

    def lambda_config(self, config: dict) -> dict:
        """Keras 3 stores a lambda's marshalled code under {"class_name": "__lambda__"}; tf_keras wants it bare.

        Reached only when the user opted out of safe mode (`--unsafe-load`) or handed in a model object.
        """
        function = config.get("function")
        if not (isinstance(function, dict) and function.get("class_name") == "__lambda__"):
            raise ModelError(f"Lambda layer {config.get('name')!r} wraps a named function; effkit cannot rebuild it")
        inner = function["config"]
        return {
            "name": config["name"],
            "trainable": config.get("trainable", True),
            "dtype": self.value("dtype", config.get("dtype")),
            "function": (inner["code"], inner.get("defaults"), inner.get("closure")),
            "function_type": "lambda",
            "module": None,
            "output_shape": None,
            "output_shape_type": "raw",
            "output_shape_module": None,
            "arguments": config.get("arguments") or {},
        }

    def value(self, key: str, value: Any) -> Any:
        if key in ("activation", "recurrent_activation") and value in KERAS3_ONLY_ACTIVATIONS:
            return f"{REGISTERED_PACKAGE}>{value}"
        if isinstance(value, dict) and "class_name" in value and "config" in value:
            return self.serialized_object(key, value)
        if isinstance(value, list):
            return [self.value(key, item) for item in value]
        return value

    def serialized_object(self, key: str, value: dict) -> Any:
        class_name = value["class_name"]
        config = value["config"]
        if class_name.endswith("DTypePolicy"):
            name = config["name"] if isinstance(config, dict) else config
            return name if not name.startswith("mixed") else {"class_name": "Policy", "config": {"name": name}}
        if isinstance(config, dict):
            # Initializers gained input_axes/output_axes in Keras 3; tf_keras has neither.
            config = {k: self.value(k, v) for k, v in config.items() if k not in ("input_axes", "output_axes")}
        return {"class_name": class_name, "config": config}

    def _tf_keras_class(self, class_name: str, name: str | None):
        layer_class = getattr(self.tfk.layers, class_name, None)
        if layer_class is None:
            raise ModelError(f"layer {name!r} is a {class_name}, which tf_keras does not have")
        return layer_class


# Keras 3 activations that tf_keras lacks, or defines otherwise under the same name (hard_sigmoid: 0.2x + 0.5 in
# tf_keras, relu6(x + 3) / 6 in Keras 3). tf_keras gets each as a registered function, "effkit>hard_silu", that runs
# Keras 3's own definition on TensorFlow tensors, so the numbers are Keras 3's exactly. Every other Keras 3
# activation (relu, silu, gelu, relu6, leaky_relu, mish, ...) is the same function under the same name in tf_keras,
# except glu, which halves its input and which tf_keras' layers cannot size, and threshold, which needs arguments.
# Keras 3 functional graphs hold `keras.ops` calls as operations (keras.applications' preprocess_input makes
# TrueDivide, Subtract, Add, GetItem, Stack). tf_keras holds TensorFlow calls as TFOpLambda layers, which it rebuilds
# from the op's name alone, so each Keras 3 operation becomes the TensorFlow op its TensorFlow backend runs.
_BINARY_OPS = {  # operation -> TensorFlow op taking (x, y)
    "Add": "math.add",
    "Subtract": "math.subtract",
    "Multiply": "math.multiply",
    "Divide": "math.truediv",
    "TrueDivide": "math.truediv",
    "Maximum": "math.maximum",
    "Minimum": "math.minimum",
    "Power": "math.pow",
}
_COMMUTATIVE_OPS = {"Add", "Multiply", "Maximum", "Minimum"}
_UNARY_OPS = {  # operation -> (TensorFlow op taking x, {Keras 3 config key: TensorFlow keyword})
    "Negative": ("math.negative", {}),
    "Absolute": ("math.abs", {}),
    "Square": ("math.square", {}),
    "Sqrt": ("math.sqrt", {}),
    "Exp": ("math.exp", {}),
    "Log": ("math.log", {}),
    "Mean": ("math.reduce_mean", {"axis": "axis", "keepdims": "keepdims"}),
    "Sum": ("math.reduce_sum", {"axis": "axis", "keepdims": "keepdims"}),
    "Reshape": ("reshape", {"newshape": "shape"}),
    "Transpose": ("transpose", {"axes": "perm"}),
    "Squeeze": ("squeeze", {"axis": "axis"}),
    "ExpandDims": ("expand_dims", {"axis": "axis"}),
    "Relu": ("nn.relu", {}),
    "Relu6": ("nn.relu6", {}),
    "Sigmoid": ("math.sigmoid", {}),
    "Silu": ("nn.silu", {}),
    "Gelu": ("nn.gelu", {"approximate": "approximate"}),
    "Softmax": ("nn.softmax", {"axis": "axis"}),
}
_LIST_OPS = {"Concatenate": ("concat", {"axis": "axis"}), "Stack": ("stack", {"axis": "axis"})}
KERAS3_OPERATIONS = tuple(sorted({*_BINARY_OPS, *_UNARY_OPS, *_LIST_OPS, "GetItem"}))


def _operation(class_name: str, config: dict, nodes: list, nested_models: set[str]) -> dict:
    """A Keras 3 operation layer as a tf_keras TFOpLambda (SlicingOpLambda for indexing) running the same op."""
    name = config.get("name", class_name)
    if class_name not in KERAS3_OPERATIONS:
        raise ModelError(f"operation {name!r} is keras.ops {class_name}, which effkit cannot rebuild in tf_keras")
    renames = (_UNARY_OPS.get(class_name) or _LIST_OPS.get(class_name) or ("", {}))[1]
    unknown = set(config) - {"name", *renames}
    if unknown:
        raise ModelError(f"operation {name!r} ({class_name}) has options {sorted(unknown)} effkit cannot rebuild")
    options = {renames[key]: _plain(value) for key, value in config.items() if key in renames}
    translated = [_operation_node(class_name, name, node, options, nested_models) for node in nodes]
    function = (
        "__operators__.getitem"
        if class_name == "GetItem"
        else _BINARY_OPS.get(class_name) or (_UNARY_OPS.get(class_name) or _LIST_OPS[class_name])[0]
    )
    layer_class = "SlicingOpLambda" if class_name == "GetItem" else "TFOpLambda"
    return {
        "class_name": layer_class,
        "config": {"name": name, "trainable": False, "function": function},
        "name": name,
        "inbound_nodes": translated,
    }


def _operation_node(class_name: str, name: str, node: dict, options: dict, nested_models: set[str]) -> list:
    """One call of an operation in tf_keras' TFOpLambda form: the first tensor, then keyword arguments."""
    args = list(node.get("args", []))
    if node.get("kwargs"):
        raise ModelError(f"operation {name!r} ({class_name}) is called with keyword arguments effkit cannot rebuild")

    def tensor(item) -> list | None:
        is_tensor = isinstance(item, dict) and item.get("class_name") == "__keras_tensor__"
        return _history(item, nested_models) if is_tensor else None

    if class_name in _LIST_OPS:
        if len(args) != 1 or not isinstance(args[0], (list, tuple)) or not all(tensor(t) for t in args[0]):
            raise ModelError(f"operation {name!r} ({class_name}) is called on something other than a tensor list")
        return [[*tensor(t), dict(options)] for t in args[0]]
    if class_name == "GetItem":
        if len(args) != 2 or tensor(args[0]) is None:
            raise ModelError(f"operation {name!r} (GetItem) indexes something other than one tensor")
        rank = len(args[0]["config"]["shape"])
        return [*tensor(args[0]), {"slice_spec": _slice_spec(args[1], name, rank=rank)}]
    if class_name in _BINARY_OPS:
        if len(args) != 2:
            raise ModelError(f"operation {name!r} ({class_name}) takes two operands, got {len(args)}")
        first, second = args
        if tensor(first) is None and class_name in _COMMUTATIVE_OPS:
            first, second = second, first
        if tensor(first) is None:
            raise ModelError(f"operation {name!r} ({class_name}) starts with a constant; effkit cannot rebuild it")
        return [*tensor(first), {"y": tensor(second) or _constant(second, name)}]
    if len(args) != 1 or tensor(args[0]) is None:
        raise ModelError(f"operation {name!r} ({class_name}) takes one tensor, got {len(args)} arguments")
    return [*tensor(args[0]), dict(options)]


def _constant(value: Any, name: str) -> Any:
    if isinstance(value, dict) and value.get("class_name") in ("__tensor__", "__numpy__"):
        import numpy as np

        return np.asarray(value["config"]["value"], dtype=value["config"]["dtype"])
    if isinstance(value, (int, float)):
        return value
    raise ModelError(f"operation {name!r} has an operand effkit cannot rebuild: {str(value)[:60]}")


def _slice_spec(key: Any, name: str, *, rank: int) -> Any:
    """A Keras 3 serialized index (ellipsis, slices, integers, None) in the form tf_keras' SlicingOpLambda reads.

    An ellipsis is spelled out as full slices: tf_keras cannot save an Ellipsis in a `.keras` file.
    """
    items = list(key) if isinstance(key, (list, tuple)) else [key]
    full = {"start": None, "stop": None, "step": None}
    spec: list = []
    for item in items:
        if isinstance(item, dict) and item.get("class_name") == "__ellipsis__":
            consumed = sum(1 for other in items if other is not None and other is not item)
            spec += [dict(full) for _ in range(rank - consumed)]
        elif isinstance(item, dict) and item.get("class_name") == "__slice__":
            spec.append({field: item["config"].get(field) for field in ("start", "stop", "step")})
        elif item is None or isinstance(item, int):
            spec.append(item)
        else:
            raise ModelError(f"operation {name!r} indexes with {str(item)[:60]}, which effkit cannot rebuild")
    return spec[0] if len(spec) == 1 and not isinstance(key, (list, tuple)) else tuple(spec)


def _plain(value: Any) -> Any:
    """Tuples as lists, as tf_keras writes them in a config."""
    return [_plain(item) for item in value] if isinstance(value, (list, tuple)) else value


def _accepted_kwargs(layer_class) -> set[str] | None:
    """Keyword arguments a tf_keras layer class accepts, or None when its signature cannot tell."""
    try:
        parameters = inspect.signature(layer_class.__init__).parameters
    except (TypeError, ValueError):
        return None
    names = {name for name, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    if any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
        names |= _TF_KERAS_BASE_KWARGS
    return names - {"self"}


def _as_tensor_list(refs: list) -> list:
    """Keras 3 writes a single model input/output as ["name", 0, 0]; tf_keras wants [["name", 0, 0]]."""
    if refs and isinstance(refs[0], str):
        return [refs]
    return refs


def _node(node: dict, layer_name: str, nested_models: set[str]) -> list:
    """One call of a layer: Keras 3 `{"args": [...], "kwargs": {...}}` -> tf_keras `[[layer, node, tensor, kwargs]]`."""
    # Keras 3 lets the training flag of the model's call override the one stored with a node (it stores
    # training=True for every random augmentation layer); tf_keras lets the stored one win, which would augment at
    # inference. Dropping it gives tf_keras Keras 3's behaviour under predict (False) and fit (True).
    kwargs = {
        key: value for key, value in node.get("kwargs", {}).items() if key != "training" and not _holds_tensor(value)
    }
    if any(_holds_tensor(value) for value in node.get("kwargs", {}).values()):
        raise ModelError(f"layer {layer_name!r} is called with a tensor keyword argument, which effkit cannot rebuild")
    tensors = [_history(item, nested_models) for item in _flatten(node.get("args", []))]
    if not tensors:
        raise ModelError(f"layer {layer_name!r} has a call without input tensors, which effkit cannot rebuild")
    return [[*history, kwargs] for history in tensors]


def _holds_tensor(value: Any) -> bool:
    return any(isinstance(item, dict) and item.get("class_name") == "__keras_tensor__" for item in _flatten([value]))


def _flatten(items: Any):
    if isinstance(items, (list, tuple)):
        for item in items:
            yield from _flatten(item)
    elif isinstance(items, dict) and items.get("class_name") != "__keras_tensor__":
        for item in items.values():
            yield from _flatten(item)
    elif isinstance(items, dict):
        yield items


def _history(tensor: dict, nested_models: set[str]) -> list:
    layer, node_index, tensor_index = tensor["config"]["keras_history"]
    return [layer, node_index + (layer in nested_models), tensor_index]


def _copy_weights(source: Any, target: Any) -> None:
    """Copy weights layer by layer, matched by name, descending into nested models."""
    target_layers = {layer.name: layer for layer in target.layers}
    for layer in source.layers:
        twin = target_layers.get(layer.name)
        if twin is None:
            raise ModelError(f"layer {layer.name!r} was lost while rebuilding the model in tf_keras")
        if hasattr(layer, "layers") and hasattr(twin, "layers"):
            _copy_weights(layer, twin)
            continue
        values = [variable.numpy() for variable in layer.weights]
        if len(values) == len(twin.weights):
            try:
                twin.set_weights(values)
                continue
            except ValueError:
                pass
        _copy_weights_by_name(layer, twin)


def _copy_weights_by_name(layer: Any, twin: Any) -> None:
    """Fallback when a layer keeps different variables in the two generations (e.g. Normalization's count)."""
    by_name = {_short_name(variable): variable for variable in layer.weights}
    for variable in twin.weights:
        match = by_name.get(_short_name(variable))
        if match is None:
            continue
        if tuple(match.shape) != tuple(variable.shape):
            raise ModelError(f"layer {layer.name!r}: weight {_short_name(variable)} has another shape in tf_keras")
        variable.assign(match.numpy())
    missing = set(by_name) - {_short_name(v) for v in twin.weights}
    if missing:
        raise ModelError(f"layer {layer.name!r}: weights {sorted(missing)} have no place in the tf_keras layer")


def _short_name(variable: Any) -> str:
    name = getattr(variable, "path", None) or variable.name
    return name.split("/")[-1].split(":")[0]
