"""Structured pruning's surgery: whole output channels and units removed, so the model is smaller and dense.

Unstructured sparsity saves nothing where the model runs (XNNPACK, ONNX Runtime and TFLite Micro do not skip
zeros); a model with fewer channels is smaller in raw bytes, needs a smaller arena and runs faster everywhere.

A removal must follow the graph, as torch-pruning's dependency graph (DepGraph, Fang et al. 2023) does. Here the
graph comes from the model's own config, which tf_keras and Keras 3 both write, and every tensor gets a channel
map: for each of its channels, the group and the index it comes from.

- A *producer* (Dense, Conv1D/2D/3D, SeparableConv2D) starts a group of its output channels.
- BatchNormalization, activations, pooling, dropout, padding and cropping pass a map through; DepthwiseConv2D
  repeats each input channel's entry `depth_multiplier` times, so it follows its input.
- The inputs of an elementwise merge (Add, Multiply, Subtract, Average, Maximum, Minimum) share one channel set:
  their groups are joined (residuals, squeeze-and-excite).
- Concatenate joins its inputs' maps by offset; Flatten repeats its input's map once per position, so a Dense
  after it loses the rows of every removed channel at every position.
- A group that reaches a model output keeps every channel (every class unit of every head); so does one that
  reaches a layer the surgery cannot follow (Reshape, a custom layer, a softmax over channels, a nested model...),
  which is recorded as why, and never fails the model.

`remove_channels` rebuilds the model with fewer units and filters (`clone_model` with each layer's config,
the same classes, names and graph) and copies the remaining weights into it. `mask_channels` zeroes the same
channels in a copy instead (their producers' weights and biases, a BatchNormalization's scale and offset, a
depthwise bias), which is what a removal must reproduce: with activations that map 0 to 0, the two models'
outputs agree (the property test checks it on residual, depthwise, separable, concat, flatten and multi-head
graphs). Channel importance and the fine-tune live with the technique that uses this.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelError
from ..load import keras_compat

PRODUCERS = ("Dense", "Conv1D", "Conv2D", "Conv3D", "SeparableConv1D", "SeparableConv2D")
DEPTHWISE = ("DepthwiseConv1D", "DepthwiseConv2D")
PASS_THROUGH = (
    "BatchNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalMaxPooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
    "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D", "Identity",
)  # fmt: skip
MERGES = ("Add", "Multiply", "Subtract", "Average", "Maximum", "Minimum")
CHANNEL_WEIGHTS = {"BatchNormalization", "PReLU"}  # pass-throughs with one value per channel in each weight

Entry = tuple[int, int]  # (group, index in the group)
MODEL_INPUT = "<input>"  # a Sequential model's input, which its config does not name


@dataclass
class ChannelGroup:
    """Channels removed together: the output channels of one producer, or of several joined by a merge."""

    index: int
    size: int
    producers: list[str] = field(default_factory=list)
    frozen: str | None = None  # why these channels must all stay


@dataclass
class ChannelGraph:
    """The model's channel groups and, for each layer, the channel map of its input(s) and of its output."""

    model: Any
    groups: list[ChannelGroup]
    inputs: dict[str, list[list[Entry] | None]]  # per layer, per input: the map (None: opaque)
    outputs: dict[str, list[Entry] | None]

    def prunable(self) -> list[ChannelGroup]:
        return [group for group in self.groups if group.frozen is None]

    def frozen(self) -> dict[str, str]:
        """Producer name: why its channels stay."""
        return {name: group.frozen for group in self.groups if group.frozen for name in group.producers}


def channel_graph(model: Any) -> ChannelGraph:
    """The dependency groups of a tf_keras or Keras 3 Sequential or functional model."""
    order, inbound, output_layers = _topology(model)
    parent: list[int] = []
    groups: list[ChannelGroup] = []

    def find(g: int) -> int:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    def new_group(size: int, producer: str) -> int:
        parent.append(len(groups))
        groups.append(ChannelGroup(len(groups), size, [producer]))
        return len(groups) - 1

    def freeze(entries: list[Entry] | None, why: str) -> None:
        for g in {g for g, _ in entries or ()}:
            root = groups[find(g)]
            root.frozen = root.frozen or why

    def join(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra
            groups[ra].producers += groups[rb].producers
            groups[ra].frozen = groups[ra].frozen or groups[rb].frozen

    outputs: dict[str, list[Entry] | None] = {}
    inputs: dict[str, list[list[Entry] | None]] = {}
    for name in order:
        layer = model.get_layer(name)
        kind = type(layer).__name__
        maps = [outputs.get(source) for source in inbound.get(name, [])]
        inputs[name] = maps
        if kind == "InputLayer" or not inbound.get(name):
            outputs[name] = None  # the model's input: nothing of it is removed
            continue
        if kind in PRODUCERS:
            if len(maps) != 1 or _grouped(layer):
                for m in maps:
                    freeze(m, f"{name} is a grouped or multi-input {kind}")
                outputs[name] = None
                continue
            group = new_group(_units(layer), name)
            outputs[name] = [(group, i) for i in range(_units(layer))]
        elif kind in DEPTHWISE:
            multiplier = int(layer.get_config().get("depth_multiplier", 1))
            outputs[name] = None if maps[0] is None else [e for e in maps[0] for _ in range(multiplier)]
        elif kind in PASS_THROUGH and len(maps) == 1:
            if kind == "BatchNormalization" and _axis(layer) not in (-1, len(layer.input.shape) - 1):
                freeze(maps[0], f"{name} normalizes another axis than the channels")
                outputs[name] = None
            else:
                outputs[name] = maps[0]
        elif kind in MERGES:
            full = [m for m in maps if m is not None and len(m) > 1]
            if any(m is None for m in maps) or len({len(m) for m in full}) > 1:
                for m in maps:
                    freeze(m, f"{name} merges tensors whose channels the surgery cannot align")
                outputs[name] = None
                continue
            first = full[0] if full else None
            for other in full[1:]:
                if [i for _, i in other] != [i for _, i in first] or len({g for g, _ in other}) != 1:
                    freeze(other, f"{name} merges channel sets in different orders")
                    freeze(first, f"{name} merges channel sets in different orders")
                for (ga, _), (gb, _) in zip(first, other, strict=True):
                    join(ga, gb)
            outputs[name] = first
        elif kind == "Concatenate" and _axis(layer) in (-1, len(layer.output.shape) - 1):
            if any(m is None for m in maps):
                for m in maps:
                    freeze(m, f"{name} concatenates a tensor whose channels the surgery does not know")
                outputs[name] = None
            else:
                outputs[name] = [e for m in maps for e in m]
        elif kind == "Flatten" and len(maps) == 1:
            if maps[0] is None:
                outputs[name] = None
            else:
                positions = int(np.prod(layer.input.shape[1:-1])) if len(layer.input.shape) > 2 else 1
                outputs[name] = [e for _ in range(positions) for e in maps[0]]
        else:
            for m in maps:
                freeze(m, f"{name} is a {kind}, which the surgery cannot follow")
            outputs[name] = None
    for name in output_layers:
        freeze(outputs.get(name), f"it reaches the model's output {name}")
    # Every entry names its group's root, so that joined groups share one index space.
    roots = {find(g.index) for g in groups}
    for name, entries in outputs.items():
        if entries is not None:
            outputs[name] = [(find(g), i) for g, i in entries]
    for name, maps in inputs.items():
        inputs[name] = [None if m is None else [(find(g), i) for g, i in m] for m in maps]
    kept_groups = [groups[r] for r in sorted(roots)]
    return ChannelGraph(model, kept_groups, inputs, outputs)


def remove_channels(model: Any, keep: Mapping[int, Sequence[int]], graph: ChannelGraph | None = None) -> Any:
    """A new model with only the `keep[group]` channels of each pruned group (groups not named keep all).

    The layers keep their classes, names and graph; Dense units and convolution filters shrink, and every weight
    is sliced to match. Raises ModelError for a frozen group or an index out of range.
    """
    graph = graph or channel_graph(model)
    kept = _kept_sets(graph, keep)
    keras = keras_compat.keras_module(keras_compat.generation_of(model))
    group_of = {name: graph.outputs[name][0][0] for name in _producers(graph)}
    sizes = {name: len(kept[group]) for name, group in group_of.items() if group in kept}

    def clone(layer):
        config = layer.get_config()
        if layer.name in sizes:
            config["units" if "units" in config else "filters"] = sizes[layer.name]
        return layer.__class__.from_config(config)

    smaller = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        values = [np.asarray(v) for v in layer.get_weights()]
        if values:
            smaller.get_layer(layer.name).set_weights(_sliced(layer, values, graph, kept))
    return smaller


def mask_channels(model: Any, keep: Mapping[int, Sequence[int]], graph: ChannelGraph | None = None) -> Any:
    """A copy of the model whose removed channels are zero wherever they are produced, the same size otherwise."""
    graph = graph or channel_graph(model)
    kept = _kept_sets(graph, keep)
    keras = keras_compat.keras_module(keras_compat.generation_of(model))
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    for layer in model.layers:
        values = [np.array(v) for v in layer.get_weights()]
        entries = graph.outputs.get(layer.name)
        kind = type(layer).__name__
        if not values or entries is None:
            continue
        drop = np.array([g in kept and i not in kept[g] for g, i in entries])
        if not drop.any():
            continue
        if kind in ("SeparableConv1D", "SeparableConv2D"):
            zeroed = values[1:]  # the pointwise kernel and the bias; the depthwise part is per input channel
        elif kind in DEPTHWISE:
            values[0] = values[0].reshape(*values[0].shape[:-2], -1)  # (..., in x multiplier), as its outputs
            zeroed = values
        elif kind in PRODUCERS or kind == "BatchNormalization":  # a zero scale and offset: the channel is 0
            zeroed = values
        else:
            continue
        for value in zeroed:
            value[..., drop] = 0.0
        if kind in DEPTHWISE:
            values[0] = values[0].reshape(layer.get_weights()[0].shape)
        masked.get_layer(layer.name).set_weights(values)
    return masked


def channel_weights(model: Any, graph: ChannelGraph | None = None) -> dict[int, tuple[int, int]]:
    """What one channel of each prunable group carries: `{group: (parameters, multiply-accumulates)}`, counted by
    slicing every weight as `remove_channels` would with one channel of that group gone. A kernel's elements count
    their MACs once per output position (a convolution's spatial positions, a Dense layer's time steps); biases
    and per-channel values count as parameters only. A flash goal spends channels by the first, a latency goal by
    the second."""
    graph = graph or channel_graph(model)
    layers = []
    for layer in model.layers:
        values = [np.asarray(v) for v in layer.get_weights()]
        if not values:
            continue
        touched = {g for m in [*(graph.inputs.get(layer.name) or ()), graph.outputs.get(layer.name)] if m
                   for g, _ in m}  # fmt: skip
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):  # a layer not called in a graph: one position
            shape = ()
        positions = int(np.prod([d for d in shape[1:-1] if d])) if len(shape) > 2 else 1
        layers.append((layer, values, touched, positions))
    weights = {}
    for group in graph.prunable():
        kept = {group.index: set(range(group.size - 1))}
        params = macs = 0
        for layer, values, touched, positions in layers:
            if group.index not in touched:
                continue
            for before, after in zip(values, _sliced(layer, values, graph, kept), strict=True):
                params += before.size - after.size
                macs += (before.size - after.size) * positions if before.ndim >= 2 else 0
        weights[group.index] = (int(params), int(macs))
    return weights


# --------------------------------------------------------------------------------------------------------------------


def _kept_sets(graph: ChannelGraph, keep: Mapping[int, Sequence[int]]) -> dict[int, set[int]]:
    by_index = {group.index: group for group in graph.groups}
    kept = {}
    for index, channels in keep.items():
        group = by_index.get(index)
        if group is None:
            raise ModelError(f"no channel group {index}")
        if group.frozen:
            raise ModelError(f"channel group {index} ({', '.join(group.producers)}) cannot shrink: {group.frozen}")
        chosen = set(int(c) for c in channels)
        if not chosen or min(chosen) < 0 or max(chosen) >= group.size:
            raise ModelError(f"channel group {index} keeps {sorted(chosen)[:4]}..., outside 0..{group.size - 1}")
        kept[index] = chosen
    return kept


def _producers(graph: ChannelGraph) -> list[str]:
    return [name for group in graph.groups for name in group.producers]


def _mask(entries: list[Entry] | None, kept: dict[int, set[int]]) -> np.ndarray | None:
    """Which of a map's channels stay (None: all of them)."""
    if entries is None:
        return None
    mask = np.array([g not in kept or i in kept[g] for g, i in entries])
    return None if mask.all() else mask


def _sliced(layer: Any, values: list[np.ndarray], graph: ChannelGraph, kept: dict[int, set[int]]) -> list[np.ndarray]:
    kind = type(layer).__name__
    maps = graph.inputs.get(layer.name) or [None]
    into = _mask(maps[0], kept) if len(maps) == 1 else None
    out = _mask(graph.outputs.get(layer.name), kept)
    if kind in ("Dense", "Conv1D", "Conv2D", "Conv3D"):
        kernel = values[0]
        if into is not None:
            kernel = kernel[..., into, :]
        if out is not None:
            kernel = kernel[..., out]
        rest = [v[out] if out is not None else v for v in values[1:]]
        return [kernel, *rest]
    if kind in ("SeparableConv1D", "SeparableConv2D"):
        depthwise, pointwise, *bias = values
        if into is not None:
            multiplier = depthwise.shape[-1]
            depthwise = depthwise[..., into, :]
            pointwise = pointwise[..., np.repeat(into, multiplier), :]
        if out is not None:
            pointwise = pointwise[..., out]
            bias = [b[out] for b in bias]
        return [depthwise, pointwise, *bias]
    if kind in DEPTHWISE:
        kernel, *bias = values
        if into is None:
            return values
        multiplier = kernel.shape[-1]
        kernel = kernel[..., into, :]
        bias = [b.reshape(-1, multiplier)[into].reshape(-1) for b in bias]
        return [kernel, *bias]
    if kind in CHANNEL_WEIGHTS and into is not None:
        return [v[..., into] if v.shape and v.shape[-1] == len(into) else v for v in values]
    return values


def _units(layer: Any) -> int:
    config = layer.get_config()
    return int(config.get("units") or config.get("filters"))


def _grouped(layer: Any) -> bool:
    return int(layer.get_config().get("groups", 1) or 1) != 1


def _axis(layer: Any) -> int:
    axis = layer.get_config().get("axis", -1)
    if isinstance(axis, (list, tuple)):
        axis = axis[0] if len(axis) == 1 else None
    return axis


def _topology(model: Any) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """Layer names in graph order, each layer's input layers, and the layers that make the model's outputs."""
    config = model.get_config()
    entries = config.get("layers", [])
    if not any("inbound_nodes" in entry for entry in entries):  # Sequential
        names = [layer.name for layer in model.layers]
        inbound = {b: [a] for a, b in itertools.pairwise([MODEL_INPUT, *names])}
        return names, inbound, names[-1:]
    order, inbound = [], {}
    for entry in entries:
        name = entry.get("name") or entry["config"]["name"]
        order.append(name)
        sources = []
        for node in entry.get("inbound_nodes", []):
            sources += [ref[0] for ref in _references(node)]
        inbound[name] = sources
        if len(entry.get("inbound_nodes", [])) > 1:
            raise ModelError(f"layer {name} is shared (called {len(entry['inbound_nodes'])} times)")
    outputs = [ref[0] for ref in _references(config.get("output_layers", []))]
    return order, inbound, outputs


def _references(node: Any) -> list[list]:
    """[layer, node, tensor] references in a node of either Keras generation's config."""
    if isinstance(node, dict):
        if node.get("class_name") == "__keras_tensor__":
            return [node["config"]["keras_history"]]
        return [ref for value in node.values() for ref in _references(value)]
    if isinstance(node, (list, tuple)):
        if len(node) >= 3 and isinstance(node[0], str) and isinstance(node[1], int):
            return [list(node[:3])]
        return [ref for value in node for ref in _references(value)]
    return []
