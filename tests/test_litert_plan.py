"""Per-layer mixed precision: LiteRT layer plans (int8, int4, float per Keras layer), the same decisions for ONNX
Runtime, and what XNNPACK really runs. Everything is read back from the written files, on the tiny digits CNN."""

from pathlib import Path

import numpy as np
import pytest

from effkit.config import Format, OnnxQuantConfig, Precision, Quant
from effkit.errors import ConfigError
from effkit.export.onnx import export_onnx
from effkit.export.tflite import export_tflite
from effkit.export.tflite_graph import read_graph
from effkit.load import keras_compat
from effkit.quantize.layers import keras_names, scope_layer, scope_regex
from effkit.quantize.litert import LayerPlan, QuantizableOp, quantizable_layers, quantize_litert_plan
from effkit.quantize.onnxruntime import onnx_nodes_for_layers, quantize_onnx
from effkit.runtime import open_runner
from effkit.runtime.delegation import xnnpack_coverage

WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def weighted_layers(model) -> list[str]:
    """The tiny model's layers with kernels, by name (Keras numbers them in session order)."""
    return [layer.name for layer in model.layers if layer.get_weights()]


@pytest.fixture(scope="module")
def float_tflite(tiny_model, tmp_path_factory) -> Path:
    return export_tflite(tiny_model, tmp_path_factory.mktemp("plan") / "tiny.tflite")


@pytest.fixture(scope="module")
def plans(tiny_model):
    conv, dense, _ = weighted_layers(tiny_model)
    return {
        "int8": LayerPlan(),
        "int4": LayerPlan(weights=Precision.INT4),
        "int4-b32": LayerPlan(weights=Precision.INT4, blockwise=32),
        "int4-dense-float": LayerPlan(weights=Precision.INT4, layers=((dense, Precision.FLOAT),)),
        "int4-conv-int8": LayerPlan(weights=Precision.INT4, layers=((conv, Precision.INT8),)),
        "static-int8": LayerPlan(activations="int8"),
        "static-int8-octav": LayerPlan(activations="int8", weight_algorithm="octav"),
        "static-int4-dense-float": LayerPlan(
            weights=Precision.INT4, activations="int8", layers=((dense, Precision.FLOAT),)
        ),
    }


@pytest.fixture(scope="module")
def made(plans, float_tflite, digits):
    """Every plan applied once: {name: (path, step params)}."""
    results = {}
    for name, plan in plans.items():
        path = float_tflite.with_name(f"tiny-{name}.tflite")
        results[name] = path, quantize_litert_plan(float_tflite, path, plan=plan, calibration=digits.x_train[:100])
    return results


def weights_by_layer(path: Path) -> dict[str, tuple[str, int, int]]:
    """{layer: (tensor type, elements, bytes in the file)} of each weighted op's kernel, from the flatbuffer."""
    graph = read_graph(path)
    found = {}
    for op in graph.ops:
        weight = graph.weight(op)
        if op.op in WEIGHTED and weight is not None:
            found[scope_layer(graph.scope(op))] = (weight.type, weight.elements, weight.data_bytes)
    return found


def test_quantizable_layers_are_the_models_weighted_layers(float_tflite, tiny_model):
    ops = quantizable_layers(float_tflite)
    assert [op.layer for op in ops] == weighted_layers(tiny_model)
    assert [op.op for op in ops] == ["CONV_2D", "FULLY_CONNECTED", "FULLY_CONNECTED"]
    kernels = [layer.get_weights()[0].size for layer in tiny_model.layers if layer.get_weights()]
    assert [op.weights for op in ops] == kernels
    assert all(op.supports_int4 for op in ops)


def test_int4_weights_are_4_bit_and_half_the_int8_bytes(made):
    int4, int8 = weights_by_layer(made["int4"][0]), weights_by_layer(made["int8"][0])
    assert {kind for kind, _, _ in int4.values()} == {"INT4"}
    assert {kind for kind, _, _ in int8.values()} == {"INT8"}
    for layer, (_, elements, size) in int4.items():
        assert size == (elements + 1) // 2  # two weights a byte
        assert int8[layer][2] == elements
    # The file: 21.4 KB at int8, 12.8 KB at int4 for this model (the rest is graph and float biases).
    assert made["int4"][0].stat().st_size < 0.65 * made["int8"][0].stat().st_size
    assert [op["precision"] for op in made["int4"][1]["ops"]] == ["int4"] * 3


def test_a_float_override_leaves_exactly_that_layer_float(made, tiny_model):
    conv, dense, head = weighted_layers(tiny_model)
    for name, others in (("int4-dense-float", "INT4"), ("static-int4-dense-float", "INT4")):
        path, params = made[name]
        kinds = {layer: kind for layer, (kind, _, _) in weights_by_layer(path).items()}
        assert kinds == {conv: others, dense: "FLOAT32", head: others}
        assert {op["layer"]: op["precision"] for op in params["ops"]} == {conv: "int4", dense: "float", head: "int4"}
        # The override comes after the general entries: the quantizer takes the last matching one.
        entries = params["recipe_entries"]
        assert entries[0]["regex"] == ".*" and entries[-1] == {
            "regex": scope_regex([dense]),
            "operation": "*",
            "algorithm": "no_quantize",
        }
    static = read_graph(made["static-int4-dense-float"][0])
    assert {"QUANTIZE", "DEQUANTIZE"} <= {op.op for op in static.ops}  # the float layer sits between converters


def test_an_int8_override_wins_over_the_int4_default(made, tiny_model):
    conv, dense, head = weighted_layers(tiny_model)
    kinds = {layer: kind for layer, (kind, _, _) in weights_by_layer(made["int4-conv-int8"][0]).items()}
    assert kinds == {conv: "INT8", dense: "INT4", head: "INT4"}


def test_blockwise_int4_applies_to_fully_connected_only(made):
    entries = made["int4-b32"][1]["recipe_entries"]
    granularity = {entry["operation"]: entry.get("granularity") for entry in entries if entry.get("weight_bits") == 4}
    assert granularity == {"CONV_2D": "channelwise", "FULLY_CONNECTED": "blockwise_32"}
    assert {kind for kind, _, _ in weights_by_layer(made["int4-b32"][0]).values()} == {"INT4"}


def test_every_plan_runs_in_litert_and_agrees_with_float(made, float_tflite, digits):
    (reference,) = open_runner(float_tflite, Format.TFLITE).predict(digits.x_test)
    for name, (path, _) in made.items():
        (outputs,) = open_runner(path, Format.TFLITE).predict(digits.x_test)
        agreement = 100.0 * np.mean(outputs.argmax(1) == reference.argmax(1))
        # Measured: 99.7% at int8, 99.2-99.4% for the int4 plans, 100% static int8 (359 test samples).
        assert agreement >= 98.0, f"{name}: {agreement:.1f}% top-1 agreement with float"


def weight_scales(path: Path) -> dict[str, np.ndarray]:
    """{layer: per-channel weight scales} of each weighted op, from the flatbuffer."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    graph, ops = model.subgraphs[0], read_graph(path)
    return {
        scope_layer(ops.scope(op)): np.asarray(graph.tensors[ops.weight(op).index].quantization.scale)
        for op in ops.ops
        if op.op in WEIGHTED and ops.weight(op) is not None
    }


def test_octav_clips_the_weights_of_the_ops_with_weights_only(made):
    """OCTAV chooses each channel's clip: never wider than its full range (min-max's), narrower where an outlier
    weight would widen the step for the rest; the recipe gives it to the weighted ops and min-max to the others."""
    path, params = made["static-int8-octav"]
    plain, clipped = weight_scales(made["static-int8"][0]), weight_scales(path)
    assert plain.keys() == clipped.keys() and len(plain) == 3
    for layer in plain:
        assert np.all(clipped[layer] <= plain[layer] * (1 + 1e-6)), layer
    assert any(np.any(clipped[layer] < plain[layer] * 0.999) for layer in plain)
    algorithms = {(e["operation"], e["algorithm"]) for e in params["recipe_entries"]}
    assert ("*", "min_max_uniform_quantize") in algorithms
    assert {op for op, algorithm in algorithms if algorithm == "OCTAV"} == {"CONV_2D", "FULLY_CONNECTED"}
    assert params["plan"]["weight_algorithm"] == "octav" and "weight_algorithm" not in made["static-int8"][1]["plan"]


def depthwise_tflite(folder: Path) -> Path:
    keras = keras_compat.tf_keras()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(8, 3, padding="same", activation="relu", name="stem"),
            layers.DepthwiseConv2D(3, padding="same", activation="relu", name="depthwise"),
            layers.Flatten(),
            layers.Dense(10, activation="softmax", name="head"),
        ],
        name="dw",
    )
    return export_tflite(model, folder / "dw.tflite")


def test_int4_on_an_op_without_int4_is_recorded_as_int8(tmp_path, digits):
    source = depthwise_tflite(tmp_path)
    ops = {op.layer: op for op in quantizable_layers(source)}
    assert ops["depthwise"] == QuantizableOp("depthwise", "DEPTHWISE_CONV_2D", 72, False, "depthwise")
    assert ops["stem"].supports_int4 and ops["head"].supports_int4
    path = tmp_path / "dw-int4.tflite"
    params = quantize_litert_plan(source, path, plan=LayerPlan(weights=Precision.INT4), calibration=digits.x_train[:10])
    by_layer = {op["layer"]: op for op in params["ops"]}
    assert by_layer["depthwise"]["precision"] == "int8" and by_layer["depthwise"]["requested"] == "int4"
    assert "no int4 DEPTHWISE_CONV_2D" in by_layer["depthwise"]["note"]
    assert by_layer["stem"]["precision"] == by_layer["head"]["precision"] == "int4"
    assert "requested" not in by_layer["head"]
    assert weights_by_layer(path)["depthwise"][0] == "INT8"
    open_runner(path, Format.TFLITE).predict(digits.x_test[:8])


def test_a_plan_naming_an_unknown_layer_fails_and_lists_the_layers(float_tflite, tmp_path, digits, tiny_model):
    plan = LayerPlan(layers=(("no_such_layer", Precision.FLOAT),))
    with pytest.raises(ConfigError, match="no_such_layer") as error:
        quantize_litert_plan(float_tflite, tmp_path / "x.tflite", plan=plan, calibration=digits.x_train[:10])
    assert weighted_layers(tiny_model)[1] in str(error.value)
    assert not (tmp_path / "x.tflite").exists()


@pytest.mark.parametrize(
    "plan, message",
    [
        (LayerPlan(activations="int4"), "unknown activations"),
        (LayerPlan(blockwise=128), "blockwise"),
        (LayerPlan(layers=(("a", Precision.FLOAT), ("a", Precision.INT8))), "more than once"),
        (LayerPlan(weight_algorithm="gptq"), "unknown weight algorithm"),
    ],
)
def test_invalid_plans_are_refused(plan, message):
    with pytest.raises(ConfigError, match=message):
        plan.validate()


def test_plans_round_trip_through_dicts():
    plan = LayerPlan(weights="int4", activations="int16", layers=(("dense", "float"), ("conv", "int8")), blockwise=64)
    assert plan.weights is Precision.INT4 and plan.layers == (("dense", Precision.FLOAT), ("conv", Precision.INT8))
    data = plan.to_dict()
    assert data == {"weights": "int4", "activations": "int16", "layers": {"dense": "float", "conv": "int8"},
                    "blockwise": 64}  # fmt: skip
    assert LayerPlan.from_dict(data) == plan
    octav = LayerPlan(activations="int8", weight_algorithm="octav")
    assert LayerPlan.from_dict(octav.to_dict()) == octav
    with pytest.raises(ConfigError, match="unknown layer plan keys"):
        LayerPlan.from_dict({"weight": "int4"})


def test_keras3_scope_names_map_back_to_keras_layer_names():
    """What TensorFlow named the tiny CNN's tensors when Keras 3 traced it, and the layers they belong to."""
    scopes = ["tiny_cnn_1/conv2d_1/Relu;tiny_cnn_1/conv2d_1/convolution1;", "tiny_cnn_1/dense_1/MatMul;",
              "tiny_cnn_1/dense_1_2/MatMul1;", "tiny_cnn_1/flatten_1/Reshape;"]  # fmt: skip
    components = [scope_layer(scope) for scope in scopes]
    assert components == ["conv2d_1", "dense_1", "dense_1_2", "flatten_1"]
    keras3 = ["rescaling", "conv2d", "max_pooling2d", "flatten", "dense", "dense_1"]
    assert keras_names(components, keras3) == {
        "conv2d_1": "conv2d",
        "dense_1": "dense",
        "dense_1_2": "dense_1",
        "flatten_1": "flatten",
    }
    tf_keras = ["conv2d", "conv2d_1", "dense", "dense_1"]  # the same names, as tf_keras spells them: no renaming
    assert keras_names(["conv2d", "conv2d_1", "dense", "dense_1"], tf_keras) == {n: n for n in tf_keras}
    # A fused name: the part holding the kernel op names the layer, not the folded batch norm or the activation.
    fused = "m/net/block_1_relu/Relu6;m/net/block_1_BN/batchnorm/mul_1;m/net/block_1_depthwise/depthwise;1;"
    assert scope_layer(fused) == "block_1_depthwise"
    assert scope_layer("digits_cnn/conv2d/Relu;digits_cnn/conv2d/BiasAdd/ReadVariableOp2") == "conv2d"
    assert scope_layer("m/dense/Tensordot/MatMul;m/dense/BiasAdd") == "dense"
    assert scope_layer("dw/depthwise/Relu;dw/depthwise/depthwise;") == "depthwise"  # a layer named like its op
    # A SeparableConv2D is two ops, its depthwise inside the `separable_conv2d` scope and its pointwise named so;
    # both belong to the layer, and the first such layer is itself named `separable_conv2d`.
    assert scope_layer("m/separable_conv2d_1/separable_conv2d/depthwise1;") == "separable_conv2d_1"
    assert scope_layer("m/separable_conv2d/separable_conv2d/depthwise1;") == "separable_conv2d"
    pointwise = "m/activation_2/Relu;m/batch_normalization_3/FusedBatchNormV3;m/separable_conv2d_1/separable_conv2d1"
    assert scope_layer(pointwise) == "separable_conv2d_1"
    assert scope_layer("m/separable_conv2d/separable_conv2d1") == "separable_conv2d"


def test_keras3_tflite_ops_are_named_by_their_keras_layers(tiny_keras3_model, tmp_path):
    from effkit.export.tflite import serving_saved_model

    source = export_tflite(serving_saved_model(tiny_keras3_model, tmp_path / "serving"), tmp_path / "k3.tflite")
    names = [layer.name for layer in tiny_keras3_model.layers]
    ops = quantizable_layers(source, keras_layers=names)
    assert [op.layer for op in ops] == weighted_layers(tiny_keras3_model)
    assert [op.scope for op in ops] != [op.layer for op in ops]  # TensorFlow renamed the scopes


@pytest.fixture(scope="module")
def float_onnx(tiny_model, tmp_path_factory) -> Path:
    return export_onnx(tiny_model, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def float_kernel_nodes(path: Path) -> set[str]:
    """The nodes that compute with a float32 kernel: their weight input (the second) is a float initializer, not a
    DequantizeLinear output or an int4 block."""
    import onnx

    graph = onnx.load(str(path)).graph
    floats = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    kinds = {"MatMul", "Gemm", "Conv", "MatMulNBits"}
    return {node.name for node in graph.node if node.op_type in kinds and node.input[1] in floats}


@pytest.mark.parametrize("quantization", [Quant.INT8, Quant.INT4])
def test_onnx_nodes_to_exclude_keep_the_layer_float(quantization, float_onnx, tiny_model, digits, tmp_path):
    conv, dense, head = weighted_layers(tiny_model)
    excluded = onnx_nodes_for_layers(float_onnx, [dense])
    assert excluded and all(f"/{dense}/" in name for name in excluded)
    path = tmp_path / f"tiny-{quantization}.onnx"
    config = OnnxQuantConfig()
    params = quantize_onnx(float_onnx, path, quantization=quantization, calibration=digits.x_train[:50], config=config,
                           nodes_to_exclude=excluded)  # fmt: skip
    assert params["nodes_to_exclude"]
    float_nodes = float_kernel_nodes(path)
    # Only the excluded layer keeps float kernels (and, for int4, the convolution ORT cannot make int4).
    assert any(f"/{dense}/" in name for name in float_nodes)
    assert not any(f"/{head}/" in name for name in float_nodes)
    assert all(f"/{dense}/" in name or f"/{conv}/" in name for name in float_nodes)
    if quantization == Quant.INT8:
        assert not any(f"/{conv}/" in name for name in float_nodes)
    (outputs,) = open_runner(path, Format.ONNX).predict(digits.x_test)
    (reference,) = open_runner(float_onnx, Format.ONNX).predict(digits.x_test)
    assert np.mean(outputs.argmax(1) == reference.argmax(1)) >= 0.98


def test_onnx_nodes_for_an_unknown_layer_is_an_error(float_onnx):
    with pytest.raises(ConfigError, match="no_such_layer"):
        onnx_nodes_for_layers(float_onnx, ["no_such_layer"])


def test_xnnpack_takes_every_op_of_the_float_file(float_tflite):
    coverage = xnnpack_coverage(float_tflite)
    assert coverage["fallback"] == {} and coverage["partitions"] == 1 and coverage["notes"] == []
    assert coverage["delegated"] == {op: n for op, n in _op_counts(float_tflite).items()}


def test_xnnpack_leaves_int4_convolutions_to_builtin_kernels(made, float_tflite):
    """Measured on this LiteRT: XNNPACK takes int4 FULLY_CONNECTED but not int4 CONV_2D."""
    path = made["int4"][0]
    coverage = xnnpack_coverage(path)
    assert coverage["fallback"] == {"CONV_2D": 1}
    assert coverage["delegated"]["FULLY_CONNECTED"] == 2
    assert coverage["int4_weights"] == {"delegated": 2, "fallback": 1}
    assert any("int4 CONV_2D" in note for note in coverage["notes"])
    counts = _op_counts(path)
    assert {op: coverage["delegated"].get(op, 0) + coverage["fallback"].get(op, 0) for op in counts} == counts
    # With the default delegate switched off, the interpreter has no DELEGATE node at all: what was replaced above
    # was XNNPACK's doing.
    assert "DELEGATE" not in _node_names(path, default_delegates=False)
    assert "DELEGATE" in _node_names(path, default_delegates=True)
    assert xnnpack_coverage(made["int8"][0])["fallback"] == {}


def test_xnnpack_notes_tensors_densified_at_load(tiny_model, tmp_path):
    from effkit.export.tflite import convert, converter_for

    model = keras_compat.tf_keras().models.clone_model(tiny_model)
    model.set_weights(tiny_model.get_weights())
    for layer in model.layers:
        if layer.get_weights():
            kernel, bias = layer.get_weights()
            kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.9)] = 0.0
            layer.set_weights([kernel, bias])
    converter = converter_for(model)
    converter.optimizations = [keras_compat.tensorflow().lite.Optimize.EXPERIMENTAL_SPARSITY]
    path = convert(converter, tmp_path / "sparse.tflite")
    coverage = xnnpack_coverage(path)
    assert coverage["densified"] == _op_counts(path)["DENSIFY"] >= 1
    assert any("DENSIFY" in note for note in coverage["notes"])


def _op_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in read_graph(path).ops:
        counts[op.op] = counts.get(op.op, 0) + 1
    return counts


def _node_names(path: Path, *, default_delegates: bool) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if default_delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    return [node["op_name"] for node in interpreter._get_ops_details()]
