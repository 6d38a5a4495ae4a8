"""What kind of classifier a model is: its input, its heads, and what each head's output means.

Accuracy, parity and the fine-tune loss all depend on whether an output holds probabilities, logits, a single
sigmoid unit or a regression value; this module decides that once per model and the other stages read it from
`ModelInfo`. A single-output classifier has one head; a multi-output model (a shared base with classification and
regression heads) has several, in the model's own output order. The first classification head is the primary one:
its top-1 is the variant's `top1`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from ..errors import ModelError


class OutputKind(StrEnum):
    PROBABILITIES = "probabilities"  # softmax over N >= 2 classes
    LOGITS = "logits"  # unnormalised scores over N >= 2 classes
    SIGMOID = "sigmoid"  # one unit, probability of class 1
    BINARY_LOGIT = "binary_logit"  # one unit, logit of class 1
    REGRESSION = "regression"  # one or more real values (only beside a classification head)


@dataclass(frozen=True)
class Head:
    name: str
    kind: OutputKind
    units: int

    @property
    def classifies(self) -> bool:
        return self.kind != OutputKind.REGRESSION

    @property
    def num_classes(self) -> int:
        return 2 if self.units == 1 else self.units

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "kind": self.kind.value, "units": self.units}
        if self.classifies:
            data["classes"] = self.num_classes
        return data


@dataclass(frozen=True)
class ModelInput:
    """What the model alone says about its input and outputs, decided once before the data is fitted to it."""

    shape: tuple[int | None, ...]  # without the batch dimension
    dtype: str
    output_names: tuple[str, ...]  # in the order effkit keeps outputs everywhere
    vocabulary: int | None  # the first Embedding's input size: token ids must lie below it

    @property
    def integer(self) -> bool:
        return bool(np.issubdtype(np.dtype(self.dtype), np.integer))

    @property
    def sequence_length(self) -> int | None:
        """The token-sequence length of an integer 1-D input (data is padded or cut to it), else None."""
        return int(self.shape[0]) if self.integer and len(self.shape) == 1 and self.shape[0] else None


def model_input(model: Any, *, name: str = "model") -> ModelInput:
    """The model's input shape and dtype, output names and vocabulary.

    Raises:
        ModelError: the model has several inputs (effkit handles single-input classifiers).
    """
    if len(model.inputs) != 1:
        raise ModelError(f"model {name!r} has {len(model.inputs)} inputs; effkit handles single-input models")
    tensor = model.inputs[0]
    return ModelInput(
        shape=tuple(tensor.shape[1:]),
        dtype=getattr(tensor.dtype, "name", str(tensor.dtype)),
        output_names=tuple(output_names(model)),
        vocabulary=vocabulary(model),
    )


@dataclass(frozen=True)
class ModelInfo:
    name: str
    input_shape: tuple[int | None, ...]  # without the batch dimension
    input_dtype: str
    heads: tuple[Head, ...]
    params: int

    @property
    def primary(self) -> Head:
        return next(head for head in self.heads if head.classifies)

    @property
    def output_kind(self) -> OutputKind:
        return self.primary.kind

    @property
    def num_classes(self) -> int:
        return self.primary.num_classes

    @property
    def output_names(self) -> list[str]:
        """The heads' names, in the model's output order."""
        return [head.name for head in self.heads]

    def primary_output(self, outputs: list[np.ndarray]) -> np.ndarray:
        """The primary head's array among a model's outputs (in `output_names` order)."""
        return outputs[self.heads.index(self.primary)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "input_dtype": self.input_dtype,
            "num_classes": self.num_classes,
            "output_kind": self.output_kind.value,
            "heads": [head.to_dict() for head in self.heads],
            "params": self.params,
        }


def output_names(model: Any) -> list[str]:
    """The model's outputs in the order effkit keeps them everywhere (Keras' own `output_names`)."""
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(model.outputs):  # Keras 3 models built without named outputs
        names = [tensor.name.split("/")[0].split(":")[0] for tensor in model.outputs]
    return names


def outputs_as_list(outputs: Any, names: list[str]) -> list[np.ndarray]:
    """A model call's result (a tensor, list or dict) as arrays in `names` order."""
    if isinstance(outputs, dict):
        return [np.asarray(outputs[name]) for name in names]
    if isinstance(outputs, (list, tuple)):
        return [np.asarray(output) for output in outputs]
    return [np.asarray(outputs)]


def describe(model: Any, x_sample: np.ndarray, *, name: str, labels: dict[str, np.ndarray] | None = None) -> ModelInfo:
    """Inspect a Keras model (either generation) and one batch of its outputs.

    Args:
        model: the model.
        x_sample: a few input samples.
        name: the model's name in messages and the report.
        labels: training labels per head, when known: a single-unit linear head whose labels are not whole
            numbers is a regression head, otherwise a binary classifier emitting a logit.

    Raises:
        ModelError: several inputs, an output that is not (batch, units), or no classification head at all.
    """
    facts = model_input(model, name=name)
    names = list(facts.output_names)
    outputs = outputs_as_list(model(x_sample, training=False), names)
    heads = []
    for head_name, tensor, values in zip(names, model.outputs, outputs, strict=True):
        shape = tuple(tensor.shape)
        if len(shape) != 2 or not shape[1]:
            raise ModelError(
                f"model {name!r} output {head_name!r} has shape {shape}; a classifier outputs (batch, classes) "
                "or (batch, 1)"
            )
        units = int(shape[1])
        kind = _kind_from_layer(model, head_name, len(names)) or _kind_from_values(values)
        head_labels = None if labels is None else labels.get(head_name)
        if kind == OutputKind.LOGITS and units == 1:
            kind = OutputKind.REGRESSION if _regression_targets(head_labels, units) else OutputKind.BINARY_LOGIT
        elif units == 1 and kind == OutputKind.PROBABILITIES:  # a one-unit softmax is constant; treat as sigmoid
            kind = OutputKind.SIGMOID
        elif units > 1 and kind == OutputKind.SIGMOID:  # multi-label sigmoid: score the largest as the class
            kind = OutputKind.PROBABILITIES
        elif units > 1 and kind == OutputKind.LOGITS and len(names) > 1 and _regression_targets(head_labels, units):
            kind = OutputKind.REGRESSION
        heads.append(Head(head_name, kind, units))
    if not any(head.classifies for head in heads):
        raise ModelError(f"model {name!r} has no classification output; effkit measures classifiers")
    return ModelInfo(
        name=name,
        input_shape=facts.shape,
        input_dtype=facts.dtype,
        heads=tuple(heads),
        params=int(model.count_params()),
    )


def _regression_targets(labels: np.ndarray | None, units: int) -> bool:
    """Whether a linear head's labels are values to regress rather than classes: fractions, several values per
    sample, or whole numbers a classifier of `units` outputs could not emit (an age of 42 for one unit)."""
    if labels is None:
        return False
    labels = np.asarray(labels)
    if labels.ndim > 1 or not np.all(labels == np.round(labels)):
        return True
    classes = 2 if units == 1 else units
    return bool(labels.min() < 0 or labels.max() >= classes)


def _kind_from_layer(model: Any, head_name: str, heads: int) -> OutputKind | None:
    try:
        layer = model.get_layer(head_name)
    except ValueError:
        layer = model.layers[-1] if heads == 1 else None
    while layer is not None and getattr(layer, "layers", None):  # a nested model as the output layer
        layer = layer.layers[-1]
    if layer is None:
        return None
    if type(layer).__name__ == "Softmax":
        return OutputKind.PROBABILITIES
    activation = getattr(getattr(layer, "activation", None), "__name__", None)
    return {"softmax": OutputKind.PROBABILITIES, "sigmoid": OutputKind.SIGMOID, "linear": OutputKind.LOGITS}.get(
        activation
    )


def _kind_from_values(outputs: np.ndarray) -> OutputKind:
    in_unit_range = bool(np.all(outputs >= 0) and np.all(outputs <= 1))
    if outputs.shape[1] == 1:
        return OutputKind.SIGMOID if in_unit_range else OutputKind.LOGITS
    sums_to_one = bool(np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3))
    return OutputKind.PROBABILITIES if in_unit_range and sums_to_one else OutputKind.LOGITS


def vocabulary(model: Any) -> int | None:
    """The input size of the model's first Embedding layer (token ids must lie below it), or None."""
    for layer in model.layers:
        if type(layer).__name__ == "Embedding":
            return int(layer.input_dim)
        if getattr(layer, "layers", None):
            inner = vocabulary(layer)
            if inner is not None:
                return inner
    return None


def predicted_classes(outputs: np.ndarray, kind: OutputKind) -> np.ndarray:
    """Class index per sample."""
    if kind == OutputKind.SIGMOID:
        return (outputs[:, 0] > 0.5).astype(np.int64)
    if kind == OutputKind.BINARY_LOGIT:
        return (outputs[:, 0] > 0.0).astype(np.int64)
    if kind == OutputKind.REGRESSION:
        raise ValueError("a regression head predicts values, not classes")
    return outputs.argmax(axis=1)


def own_labels(heads: tuple[Head, ...], outputs: list[np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
    """A model's own predictions as labels, for data that came without any (`heads` from `describe` without
    labels, `outputs` in their order): each classification head's top-1 class, and each regression head's values.

    Without labels nothing says whether a one-unit linear output is a binary logit or a value to regress. Alone,
    it is the classifier's logit; beside other heads (an age beside a class), it is taken as a value. Its values are
    then not whole numbers, so `describe` given these labels decides the same.
    """
    labels = {}
    for head, values in zip(heads, outputs, strict=True):
        as_value = head.kind == OutputKind.REGRESSION or (head.kind == OutputKind.BINARY_LOGIT and len(heads) > 1)
        if as_value:
            labels[head.name] = values[:, 0].astype(np.float32) if values.shape[1] == 1 else values.astype(np.float32)
        else:
            labels[head.name] = predicted_classes(values, head.kind)
    if all(labels[head.name].dtype.kind == "f" for head in heads):
        raise ModelError(
            "without labels, none of the model's outputs can be read as classes (one-unit linear outputs beside "
            "each other are taken as values): give labels"
        )
    return labels if len(heads) > 1 else labels[heads[0].name]


def loss_for(kind: OutputKind, keras: Any) -> Any:
    """The training loss that matches an output, in the given Keras module."""
    losses = keras.losses
    if kind == OutputKind.PROBABILITIES:
        return losses.SparseCategoricalCrossentropy()
    if kind == OutputKind.LOGITS:
        return losses.SparseCategoricalCrossentropy(from_logits=True)
    if kind == OutputKind.SIGMOID:
        return losses.BinaryCrossentropy()
    if kind == OutputKind.BINARY_LOGIT:
        return losses.BinaryCrossentropy(from_logits=True)
    return losses.MeanSquaredError()


def metric_for(kind: OutputKind) -> str:
    return "mae" if kind == OutputKind.REGRESSION else "accuracy"
