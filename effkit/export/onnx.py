"""Keras -> float32 .onnx with tf2onnx, through a traced tf.function (works for both Keras generations)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from ..errors import StageError, first_line
from ..files import atomic_output
from ..load import keras_compat
from ..load.classifier import output_names

OPSET = 17  # tf2onnx 1.17 supports opsets up to 18
INPUT_NAME = "input"


def export_onnx(model: Any, path: Path, *, opset: int = OPSET) -> Path:
    """Float32 .onnx of a Keras model with a dynamic batch dimension; checked with onnx.checker."""
    tf = keras_compat.tensorflow()
    import onnx
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    tf2onnx.logging.set_level(logging.ERROR)
    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), model.inputs[0].dtype, name=INPUT_NAME)
    function = tf.function(lambda inputs: model(inputs, training=False))
    try:
        constants = _prepare_trace(function, spec)
        model_proto, _ = tf2onnx.convert.from_function(
            function, input_signature=[spec], opset=opset, custom_op_handlers={"Erfc": (_erfc, [])}
        )
    except Exception as error:  # tf2onnx raises anything from KeyError to ValueError on unsupported ops
        raise StageError(f"tf2onnx conversion failed: {first_line(error)}") from error
    _fold_constants(model_proto.graph, constants)
    # tf2onnx names the graph after the traced function, whose name carries a per-process counter; a fixed text
    # keeps the same model's .onnx byte-identical from run to run.
    model_proto.graph.doc_string = f"{model.name}, converted from Keras by tf2onnx"
    _shared_constants(model_proto.graph)
    _canonical_names(model_proto.graph)
    _name_dynamic_dims(model_proto.graph)
    _name_outputs(model_proto.graph, output_names(model))
    with atomic_output(path) as temporary:
        onnx.save(model_proto, str(temporary))
        validate_onnx(temporary)
    return Path(path)


def _prepare_trace(function, spec) -> dict:
    """Trace the model once, as tf2onnx will convert it (the same concrete function), and fix two things in it.

    Keras 3 runs a grouped convolution (ConvNeXt's depthwise blocks) as a nested function marked for XLA, which
    TensorFlow's CPU kernels need and which TFLite inlines; tf2onnx would leave it as an unsupported
    StatefulPartitionedCall. Unmarked, the freezing step inlines it into plain ops.

    Returns the tensors the model captures by value, by their placeholder's name: a Normalization layer's mean and
    variance are such tensors in both Keras generations. tf2onnx freezes captured variables but turns these into
    graph inputs, which a runtime would then ask the caller to feed; `_fold_constants` puts them back.
    """
    tf = keras_compat.tensorflow()
    graph = function.get_concrete_function(spec).graph  # tf2onnx converts this same trace
    for operation in graph.get_operations():
        if operation.node_def.attr["_XlaMustCompile"].b:
            keras_compat.private.disable_xla_must_compile(operation)
    return {
        internal.name: external.numpy()
        for external, internal in zip(graph.external_captures, graph.internal_captures, strict=True)
        if external.dtype != tf.resource
    }


def _erfc(ctx, node, name, args):
    """tf2onnx has no Erfc, which exact gelu uses (0.5·x·erfc(-x/√2)) in both Keras generations: 1 - Erf(x)."""
    import numpy as np
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=name)
    one = ctx.make_const(utils.make_name(f"{name}/one"), np.array(1, dtype=dtype))
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])
    node.type = "Sub"
    return node


def _fold_constants(graph, constants: dict) -> None:
    """Turn captured constants that tf2onnx left as graph inputs into initializers; then the graph's inputs must be
    exactly the model's."""
    from onnx import numpy_helper

    for value in list(graph.input):
        if value.name in constants:
            graph.initializer.append(numpy_helper.from_array(constants[value.name], value.name))
            graph.input.remove(value)
    names = [value.name for value in graph.input]
    if names != [INPUT_NAME]:
        raise StageError(f"the ONNX graph has inputs {names}; expected only the model's input {INPUT_NAME!r}")


# Numbers that depend on what the process did before, not on the model: tf2onnx's `__<n>` suffixes (a
# process-wide counter) and TensorFlow's numeric path segments such as `embedding_lookup/2049:0` (object ids).
_GENERATED = re.compile(r"__(\d+)")
_TF_IDS = re.compile(r"(?<=/)(\d+)(?=[:/]|$)")


def _shared_constants(graph) -> None:
    """Name each constant that several nodes share after its first consumer, and order the constants by first use.

    tf2onnx merges identical constants (a ReLU6's bounds, say) into one, named after whichever it met first, and that
    order follows Python's string hashing, which differs from process to process: the same model then gave .onnx
    files that differ in a few names (transfer_mobilenet, sequential against Ray). Node order does not vary."""
    first_use: dict[str, str] = {}
    uses: dict[str, int] = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            uses[name] = uses.get(name, 0) + 1
            first_use.setdefault(name, f"{node.name}/shared_{slot}")
    outputs = {value.name for value in graph.output}
    renamed = {
        init.name: first_use[init.name]
        for init in graph.initializer
        if uses.get(init.name, 0) > 1 and init.name not in outputs
    }
    for init in graph.initializer:
        init.name = renamed.get(init.name, init.name)
    position: dict[str, int] = {}
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        for name in node.input:
            position.setdefault(name, len(position))
    graph.initializer.sort(key=lambda init: (position.get(init.name, len(position)), init.name))


def _canonical_names(graph) -> None:
    """Renumber process-dependent numbers in tensor and node names by first appearance in the graph, so the same
    model gives the same file in any process (one-to-one mappings, so distinct names stay distinct)."""
    suffixes: dict[str, str] = {}
    ids: dict[str, str] = {}

    def canonical(name: str) -> str:
        name = _GENERATED.sub(lambda m: "__" + suffixes.setdefault(m.group(1), str(len(suffixes) + 1)), name)
        return _TF_IDS.sub(lambda m: ids.setdefault(m.group(1), str(len(ids) + 1)), name)

    def walk(g) -> None:
        for value in (*g.input, *g.initializer, *g.output, *g.value_info):
            value.name = canonical(value.name)
        for node in g.node:
            node.name = canonical(node.name)
            node.input[:] = [canonical(name) for name in node.input]
            node.output[:] = [canonical(name) for name in node.output]
            for attribute in node.attribute:
                for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                    walk(subgraph)
        for value in (*g.input, *g.output, *g.value_info):
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param:
                    dim.dim_param = canonical(dim.dim_param)

    walk(graph)


def _name_outputs(graph, names: list[str]) -> None:
    """Call the graph's outputs after the Keras model's outputs (tf2onnx calls them Identity:0, Identity_1:0...),
    so that runtimes and users find each head by name."""
    existing = {name for node in graph.node for name in (*node.input, *node.output)}
    renamed = {output.name: name for output, name in zip(graph.output, names, strict=True) if output.name != name}
    if len(set(names)) != len(names) or existing & set(renamed.values()):
        return  # a clash with an inner tensor's name: keep tf2onnx's names
    for output in graph.output:
        output.name = renamed.get(output.name, output.name)
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]


def _name_dynamic_dims(graph) -> None:
    """tf2onnx calls unknown dimensions unk__<counter>; call the leading one of inputs and outputs `batch`, and
    number the rest by first appearance, so the file does not depend on what the process converted before."""
    renamed: dict[str, str] = {}
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            renamed.setdefault(dims[0].dim_param, "batch")
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = renamed.setdefault(dim.dim_param, f"dim_{len(renamed)}")


def validate_onnx(path: Path) -> None:
    """onnx.checker on the written file."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as error:
        raise StageError(f"{Path(path).name} fails onnx.checker: {first_line(error)}") from error
