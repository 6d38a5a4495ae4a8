"""What kind of classifier a model is: its input, its classes, and what its output means.

Accuracy, parity and the fine-tune loss all depend on whether the output holds probabilities, logits or a single
sigmoid unit; this module decides that once per model and the other stages read it from `ModelInfo`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from .errors import ModelError


class OutputKind(StrEnum):
    PROBABILITIES = "probabilities"  # softmax over N >= 2 classes
    LOGITS = "logits"  # unnormalised scores over N >= 2 classes
    SIGMOID = "sigmoid"  # one unit, probability of class 1
    BINARY_LOGIT = "binary_logit"  # one unit, logit of class 1


@dataclass(frozen=True)
class ModelInfo:
    name: str
    input_shape: tuple[int | None, ...]  # without the batch dimension
    input_dtype: str
    num_classes: int
    output_kind: OutputKind
    params: int

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["output_kind"] = self.output_kind.value
        return data


def describe(model: Any, x_sample: np.ndarray, *, name: str) -> ModelInfo:
    """Inspect a Keras classifier (either generation) and one batch of its outputs.

    Raises:
        ModelError: the model has several inputs, several outputs, or an output that is not (batch, classes).
    """
    if len(model.inputs) != 1:
        raise ModelError(f"model {name!r} has {len(model.inputs)} inputs; effkit handles single-input classifiers")
    if len(model.outputs) != 1:
        raise ModelError(f"model {name!r} has {len(model.outputs)} outputs; effkit handles single-output classifiers")
    input_shape = tuple(model.inputs[0].shape[1:])
    output_shape = tuple(model.outputs[0].shape)
    if len(output_shape) != 2 or not output_shape[1]:
        raise ModelError(
            f"model {name!r} outputs shape {output_shape}; a classifier outputs (batch, classes) or (batch, 1)"
        )
    units = int(output_shape[1])
    outputs = np.asarray(model(x_sample, training=False))
    kind = _kind_from_layer(model) or _kind_from_values(outputs)
    if units == 1:
        kind = OutputKind.SIGMOID if kind in (OutputKind.SIGMOID, OutputKind.PROBABILITIES) else OutputKind.BINARY_LOGIT
    elif kind == OutputKind.SIGMOID:  # multi-label sigmoid outputs: score the largest one as the class
        kind = OutputKind.PROBABILITIES
    dtype = model.inputs[0].dtype
    return ModelInfo(
        name=name,
        input_shape=input_shape,
        input_dtype=getattr(dtype, "name", str(dtype)),
        num_classes=2 if units == 1 else units,
        output_kind=kind,
        params=int(model.count_params()),
    )


def _kind_from_layer(model: Any) -> OutputKind | None:
    layer = model.layers[-1]
    while hasattr(layer, "layers") and layer.layers:  # a nested model as the last layer
        layer = layer.layers[-1]
    if type(layer).__name__ == "Softmax":
        return OutputKind.PROBABILITIES
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    return {"softmax": OutputKind.PROBABILITIES, "sigmoid": OutputKind.SIGMOID, "linear": OutputKind.LOGITS}.get(name)


def _kind_from_values(outputs: np.ndarray) -> OutputKind:
    in_unit_range = bool(np.all(outputs >= 0) and np.all(outputs <= 1))
    if outputs.shape[1] == 1:
        return OutputKind.SIGMOID if in_unit_range else OutputKind.BINARY_LOGIT
    sums_to_one = bool(np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3))
    return OutputKind.PROBABILITIES if in_unit_range and sums_to_one else OutputKind.LOGITS


def predicted_classes(outputs: np.ndarray, kind: OutputKind) -> np.ndarray:
    """Class index per sample."""
    if kind == OutputKind.SIGMOID:
        return (outputs[:, 0] > 0.5).astype(np.int64)
    if kind == OutputKind.BINARY_LOGIT:
        return (outputs[:, 0] > 0.0).astype(np.int64)
    return outputs.argmax(axis=1)


def loss_for(kind: OutputKind, keras: Any) -> Any:
    """The training loss that matches the output, in the given Keras module."""
    losses = keras.losses
    if kind == OutputKind.PROBABILITIES:
        return losses.SparseCategoricalCrossentropy()
    if kind == OutputKind.LOGITS:
        return losses.SparseCategoricalCrossentropy(from_logits=True)
    if kind == OutputKind.SIGMOID:
        return losses.BinaryCrossentropy()
    return losses.BinaryCrossentropy(from_logits=True)
