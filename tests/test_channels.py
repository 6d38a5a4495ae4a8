"""Structured pruning's surgery: removing channels reproduces the model with those channels masked to zero, on every
pattern the dependency groups follow, in tf_keras and in Keras 3."""

from __future__ import annotations

import numpy as np
import pytest

from effkit.errors import ModelError
from effkit.load import keras_compat
from effkit.techniques.channels import channel_graph, channel_weights, mask_channels, remove_channels


def _residual(k):
    L = k.layers
    x = inputs = k.Input((8, 8, 3))
    a = L.ReLU(name="relu_a")(L.BatchNormalization(name="bn_a")(L.Conv2D(8, 3, padding="same", name="conv_a")(x)))
    b = L.BatchNormalization(name="bn_b")(L.Conv2D(8, 3, padding="same", name="conv_b")(a))
    y = L.ReLU()(L.Add(name="add")([b, a]))
    return k.Model(inputs, L.Dense(10, activation="softmax", name="head")(L.GlobalAveragePooling2D()(y)))


def _depthwise(k):
    L = k.layers
    x = inputs = k.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="conv_a")(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(x)
    x = L.ReLU()(L.BatchNormalization(name="bn")(x))
    x = L.Conv2D(5, 1, activation="relu", name="conv_b")(x)
    return k.Model(inputs, L.Dense(10, activation="softmax", name="head")(L.GlobalAveragePooling2D()(x)))


def _separable(k):
    L = k.layers
    x = inputs = k.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="conv")(x)
    x = L.SeparableConv2D(7, 3, padding="same", depth_multiplier=2, activation="relu", name="separable")(x)
    return k.Model(inputs, L.Dense(10, activation="softmax", name="head")(L.GlobalMaxPooling2D()(x)))


def _concat(k):
    L = k.layers
    x = inputs = k.Input((8, 8, 3))
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(x)
    b = L.Conv2D(5, 1, activation="relu", name="conv_b")(x)
    x = L.Conv2D(6, 3, activation="relu", name="conv_c")(L.Concatenate(name="concat")([a, b]))
    return k.Model(inputs, L.Dense(10, activation="softmax", name="head")(L.GlobalAveragePooling2D()(x)))


def _flatten(k):
    L = k.layers
    return k.Sequential([
        k.Input((8, 8, 1)),
        L.Conv2D(4, 3, activation="relu", name="conv"),
        L.MaxPooling2D(name="pool"),
        L.Flatten(name="flatten"),
        L.Dense(12, activation="relu", name="hidden"),
        L.Dropout(0.2),
        L.Dense(10, activation="softmax", name="head"),
    ])  # fmt: skip


def _multihead(k):
    L = k.layers
    x = inputs = k.Input((8, 8, 3))
    x = L.GlobalAveragePooling2D()(L.Conv2D(6, 3, activation="relu", name="conv")(x))
    x = L.Dense(8, activation="relu", name="shared")(x)
    heads = [L.Dense(10, activation="softmax", name="category")(x), L.Dense(1, name="value")(x)]
    return k.Model(inputs, heads)


PATTERNS = {
    "residual": (_residual, {"conv_a", "conv_b"}),  # one group, joined by the Add
    "depthwise": (_depthwise, {"conv_a", "conv_b"}),  # the depthwise follows conv_a through its multiplier
    "separable": (_separable, {"conv", "separable"}),
    "concat": (_concat, {"conv_a", "conv_b", "conv_c"}),
    "flatten": (_flatten, {"conv", "hidden"}),
    "multihead": (_multihead, {"conv", "shared"}),
}


def _randomized(model, rng):
    """Weights away from their initial values, and batch-normalization statistics that are not the identity."""
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) if w.ndim else w for w in model.get_weights()])
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma, beta, mean, np.abs(variance) + 0.5])
    return model


def _outputs(model, x):
    out = model(x, training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


@pytest.mark.parametrize("generation", [keras_compat.KERAS_2, keras_compat.KERAS_3], ids=["tf_keras", "keras3"])
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_removing_channels_matches_masking_them(pattern, generation):
    keras = keras_compat.keras_module(generation)
    build, producers = PATTERNS[pattern]
    rng = np.random.default_rng(7)
    model = _randomized(build(keras), rng)
    graph = channel_graph(model)
    groups = graph.prunable()
    assert {name for group in groups for name in group.producers} == producers
    keep = {g.index: sorted(rng.choice(g.size, size=max(1, g.size // 2), replace=False)) for g in groups}
    x = rng.normal(size=(4, *model.input_shape[1:])).astype(np.float32)
    expected = _outputs(mask_channels(model, keep, graph), x)
    smaller = remove_channels(model, keep, graph)
    got = _outputs(smaller, x)
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.shape == theirs.shape
        np.testing.assert_allclose(mine, theirs, atol=1e-5, rtol=1e-5)
    assert smaller.count_params() < model.count_params()
    # The masked channels were doing something: the unmasked model computes something else.
    assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(_outputs(model, x), expected, strict=True))
    for name in producers:
        layer = smaller.get_layer(name)
        units = layer.get_config().get("units") or layer.get_config().get("filters")
        group = next(g for g in groups if name in g.producers)
        assert units == len(keep[group.index])


def test_every_head_keeps_every_unit_and_the_reason_is_recorded():
    keras = keras_compat.tf_keras()
    graph = channel_graph(_multihead(keras))
    frozen = graph.frozen()
    assert set(frozen) == {"category", "value"}
    assert "output" in frozen["category"]
    head = next(g for g in graph.groups if "category" in g.producers)
    with pytest.raises(ModelError, match="cannot shrink"):
        remove_channels(graph.model, {head.index: [0, 1]}, graph)


def test_a_layer_the_surgery_cannot_follow_keeps_its_inputs_channels():
    keras = keras_compat.tf_keras()
    L = keras.layers
    x = inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, activation="relu", name="conv")(x)
    x = L.Reshape((36, 6), name="reshape")(x)
    x = L.Conv1D(4, 3, activation="relu", name="conv1d")(x)
    model = keras.Model(inputs, L.Dense(3, activation="softmax", name="head")(L.GlobalAveragePooling1D()(x)))
    graph = channel_graph(model)
    assert "Reshape" in graph.frozen()["conv"]
    assert [g.producers for g in graph.prunable()] == [["conv1d"]]  # after the reshape, pruning goes on
    group = graph.prunable()[0]
    smaller = remove_channels(model, {group.index: [0, 2]}, graph)
    assert smaller.get_layer("conv1d").get_config()["filters"] == 2


@pytest.mark.parametrize("generation", [keras_compat.KERAS_2, keras_compat.KERAS_3], ids=["tf_keras", "keras3"])
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_what_a_channel_carries_is_what_removing_it_saves(pattern, generation):
    """`channel_weights`'s parameters per channel are the rebuilt model's: Keras counts them on the model with one
    channel of that group removed, on every pattern."""
    model = PATTERNS[pattern][0](keras_compat.keras_module(generation))
    graph = channel_graph(model)
    carried = channel_weights(model, graph)
    for group in graph.prunable():
        smaller = remove_channels(model, {group.index: range(group.size - 1)}, graph)
        assert carried[group.index][0] == model.count_params() - smaller.count_params(), group.producers


def test_a_channel_before_a_flatten_carries_its_every_position():
    """The flatten pattern by hand: conv (3x3, 1 -> 4) at 6x6 positions, pooled to 3x3, flattened into hidden (12
    units). One conv channel: 9 kernel weights + 1 bias + 9 positions x 12 rows of hidden; its MACs: 9 x 36
    positions + 108. One hidden unit: 36 inputs + 1 bias + 10 weights of the head."""
    model = _flatten(keras_compat.tf_keras())
    graph = channel_graph(model)
    carried = {tuple(g.producers): carried for g in graph.prunable() for carried in [channel_weights(model)[g.index]]}
    assert carried[("conv",)] == (9 + 1 + 9 * 12, 9 * 36 + 9 * 12)
    assert carried[("hidden",)] == (36 + 1 + 10, 36 + 10)
