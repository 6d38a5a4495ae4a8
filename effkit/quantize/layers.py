"""Which Keras layer a converted op or node came from, read from the names TensorFlow gave its tensors.

No framework imports: both the LiteRT and the ONNX Runtime quantizers use it, on names they read themselves.

TensorFlow names a layer's tensors `<model>/<layer>/<op>`; a nested model adds a level
(`model/mobilenetv2_1.00_96/block_1_expand/Conv2D`), the TFLite converter joins the names of fused ops with ';'
(`digits_cnn/dense_1/MatMul;digits_cnn/dense_1/BiasAdd`) and tf2onnx keeps the paths in its node names. Keras 3,
traced by TensorFlow, makes each name scope unique again: layer `dense` appears as `dense_1` and layer `dense_1` as
`dense_1_2`. Given the model's layer names, `keras_names` maps such scopes back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# The TensorFlow ops a weighted layer computes with (tf_keras and Keras 3 spellings). In a fused name, the part
# that holds one of them names the layer that owns the weights: a folded batch norm or a fused activation names
# its own layer in another part.
KERNEL_OPS = frozenset(
    {
        "Conv2D",
        "convolution",
        "depthwise",
        "MatMul",
        "BatchMatMulV2",
        "Tensordot",
        "BiasAdd",
        "conv2d_transpose",
        "conv_transpose",
        "Conv2DBackpropInput",
        "einsum",
        "Einsum",
        "embedding_lookup",
        "GatherV2",
        "separable_conv2d",  # a SeparableConv2D's pointwise convolution: `layer/separable_conv2d1`
    }
)
# Name scopes a kernel op sits inside (`dense/Tensordot/MatMul`, Keras 3's `dense/einsum/Einsum`, a separable
# convolution's `sep/separable_conv2d/depthwise`, for its depthwise op only): not layers. One level at most, so
# that a layer named like the scope (the first SeparableConv2D is `separable_conv2d`) still names itself.
KERNEL_SCOPES = frozenset({"Tensordot", "einsum", "separable_conv2d"})
_NUMBERED = re.compile(r"^(.*?)(?:__\d+|_\d+|\d+)$")  # MatMul1, Conv2D__3, MatMul_Q4 is not numbered
_UNIQUIFIED = re.compile(r"^(.+)_\d+$")


def _op_name(component: str) -> str:
    """`MatMul1` -> `MatMul`: the converter and tf2onnx number repeated names."""
    match = _NUMBERED.match(component)
    return match.group(1) if match and match.group(1) else component


def scope_layer(name: str) -> str:
    """The layer's path component in a tensor or node name, as the file spells it.

    The part of a fused name that holds a kernel op is read first, one that ends in it before one that merely
    passes through it (`conv2d/BiasAdd/ReadVariableOp`); its layer is the component before that op. So a layer
    named like an op (`dw/depthwise/Relu;dw/depthwise/depthwise`) still reads right. A name without a kernel op
    gives the component before its last one.
    """
    parts = [part.split("/") for part in name.split(";") if "/" in part]
    for anywhere in (False, True):
        for components in parts:
            last = len(components) - 1
            for position in range(last, 0, -1) if anywhere else (last,):
                op = _op_name(components[position])
                if op in KERNEL_OPS:
                    scope = components[position - 1]
                    if position > 1 and scope in KERNEL_SCOPES and (scope != "separable_conv2d" or op == "depthwise"):
                        position -= 1
                    return components[position - 1]
    if not parts:
        return name.split(";")[0]
    return parts[0][-2]


def path_components(name: str) -> set[str]:
    """Every component of a name that a layer could be (all but the last of each ';'-separated path)."""
    return {component for part in name.split(";") for component in part.split("/")[:-1] if component}


def keras_names(components: Iterable[str], keras_layers: Iterable[str] | None) -> dict[str, str]:
    """Each scope component -> the Keras layer name it stands for.

    Without `keras_layers`, a component stands for itself. With them: when some component is not a layer name but
    is one once its `_<n>` suffix goes (Keras 3 traced by TensorFlow), every component loses that suffix; otherwise
    the names are the layers' own (tf_keras). A component that matches no layer stands for itself.
    """
    components = set(components)
    if keras_layers is None:
        return {component: component for component in components}
    layers = set(keras_layers)

    def stripped(component: str) -> str:
        match = _UNIQUIFIED.match(component)
        return match.group(1) if match else component

    uniquified = any(c not in layers and stripped(c) in layers for c in components)
    names = {}
    for component in components:
        name = stripped(component) if uniquified else component
        names[component] = name if name in layers else component
    return names


def scope_regex(components: Iterable[str]) -> str:
    """A regex that finds these layer components in a LiteRT op scope (its output tensor names joined by ';') and
    nothing else: `dense_1` matches `model/dense_1/MatMul` but not `model/dense_10/MatMul`."""
    alternatives = "|".join(re.escape(component) for component in sorted(set(components)))
    return rf"(^|[/;])({alternatives})/"
