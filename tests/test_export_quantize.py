"""A template test per recipe: every (format, quantization, backend) artifact runs in its runtime and agrees with
Keras within the parity threshold the pipeline applies to its precision."""

from pathlib import Path

import numpy as np
import pytest

from effkit.config import Backend, CompressConfig, Format, OnnxQuantConfig, OrtTypes, ParityConfig, Quant
from effkit.cpu import parse_cpuinfo
from effkit.errors import StageError
from effkit.export.onnx import validate_onnx
from effkit.export.tflite import validate_tflite
from effkit.load.classifier import OutputKind, describe
from effkit.quantize.onnxruntime import ort_types, quantize_onnx
from effkit.quantize.tflite_converter import quantize_tflite
from effkit.recipes import RECIPES, RecipeInputs
from effkit.runtime import open_runner
from effkit.runtime.measure import file_sizes, parity, parity_problem, top1

from .conftest import outputs_of

# Tighter than the pipeline's thresholds where the tiny model allows: what each precision achieves on digits.
# int4 measured: 0.17 (LiteRT) and 0.25 (ONNX) largest difference, 99.4% agreement, 0.18 and 0.20 of float's size.
MAX_ABS_DIFF = {
    Quant.NONE: 1e-4,
    Quant.FLOAT16: 5e-3,
    Quant.DYNAMIC: 5e-2,
    Quant.INT8: 1e-1,
    Quant.INT16X8: 1e-1,
    Quant.INT4: 0.4,
}
MIN_AGREEMENT = {
    Quant.NONE: 100.0,
    Quant.FLOAT16: 99.7,
    Quant.DYNAMIC: 98.0,
    Quant.INT8: 97.0,
    Quant.INT16X8: 99.0,
    Quant.INT4: 98.0,
}
# Raw size relative to the float32 artifact of the same format.
MAX_SIZE_RATIO = {
    Quant.NONE: 1.0,
    Quant.FLOAT16: 0.55,
    Quant.DYNAMIC: 0.35,
    Quant.INT8: 0.45,
    Quant.INT16X8: 0.45,
    Quant.INT4: 0.25,
}


@pytest.fixture(scope="module")
def made(tiny_model, digits, tmp_path_factory):
    """Every registered recipe applied once to the tiny model."""
    folder = tmp_path_factory.mktemp("recipes")
    # with scratch space, as the pipeline gives it: the converter's recipes share one serving SavedModel
    inputs = RecipeInputs(tiny_model, digits.x_train[:100], CompressConfig(), workdir=folder)
    paths = {}
    for recipe in sorted(RECIPES, key=lambda r: r.quantization != Quant.NONE):  # float artifacts first
        path = folder / recipe.file_name("tiny")
        recipe.make(inputs, path)
        paths[recipe] = path
    return paths


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.variant_name("tiny"))
def test_recipe_artifact_runs_and_agrees_with_keras(recipe, made, tiny_model, digits):
    path = made[recipe]
    assert path.exists() and path.suffix == recipe.suffix
    info = describe(tiny_model, digits.x_train[:8], name="tiny")
    reference = outputs_of(tiny_model, digits.x_test)
    (outputs,) = open_runner(path, recipe.format).predict(digits.x_test)
    assert outputs.shape == reference.shape and outputs.dtype == np.float32
    agreement = parity(reference, outputs, info.output_kind)
    assert agreement.max_abs_diff <= MAX_ABS_DIFF[recipe.quantization]
    assert agreement.top1_agreement >= MIN_AGREEMENT[recipe.quantization]
    assert parity_problem(agreement, reference, quantization=recipe.quantization, config=ParityConfig()) is None
    keras_top1 = top1(reference, digits.y_test, info.output_kind)
    assert top1(outputs, digits.y_test, info.output_kind) >= keras_top1 - 0.02


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.variant_name("tiny"))
def test_recipe_artifact_is_smaller_than_its_float_reference(recipe, made):
    float_recipe = next(r for r in RECIPES if r.format == recipe.format and r.quantization == Quant.NONE)
    ratio = file_sizes(made[recipe])[0] / file_sizes(made[float_recipe])[0]
    assert ratio <= MAX_SIZE_RATIO[recipe.quantization]


@pytest.mark.parametrize("backend", [Backend.CONVERTER, Backend.LITERT])
@pytest.mark.parametrize("quantization, io_type", [(Quant.INT8, np.int8), (Quant.INT16X8, np.int16)])
def test_static_tflite_has_integer_input_and_output(made, backend, quantization, io_type):
    recipe = next(r for r in RECIPES if (r.format, r.quantization, r.backend) == (Format.TFLITE, quantization, backend))
    runner = open_runner(made[recipe], Format.TFLITE)
    assert runner.input["dtype"] == io_type and runner.output["dtype"] == io_type
    assert runner.input["quantization"][0] > 0


def test_onnx_quantized_graphs_hold_the_expected_operators(made):
    import onnx

    def op_types(quantization):
        recipe = next(r for r in RECIPES if (r.format, r.quantization) == (Format.ONNX, quantization))
        return {node.op_type for node in onnx.load(str(made[recipe])).graph.node}

    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types(Quant.INT8)
    assert "ConvInteger" in op_types(Quant.DYNAMIC) or "MatMulInteger" in op_types(Quant.DYNAMIC)


def test_artifacts_pass_their_format_validators(made):
    for recipe, path in made.items():
        (validate_tflite if recipe.format == Format.TFLITE else validate_onnx)(path)


def test_validators_reject_corrupt_files(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(StageError, match="does not load in LiteRT"):
        validate_tflite(bad)
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"garbage")
    with pytest.raises(StageError, match=r"onnx\.checker"):
        validate_onnx(bad_onnx)


def test_int8_without_calibration_is_an_error(tiny_model, tmp_path):
    with pytest.raises(StageError, match="calibration"):
        quantize_tflite(tiny_model, tmp_path / "x.tflite", quantization=Quant.INT8, calibration=None)
    assert not (tmp_path / "x.tflite").exists()


def test_all_zero_channels_keep_their_bias_in_static_int8(tiny_model, digits, tmp_path):
    """Channels pruned to all-zero weights but with a bias: the LiteRT quantizer gives them a weight scale near 0,
    so their int32 bias would overflow and be clipped. effkit gives them their layer's median scale and quantizes
    the bias again; the converter raises the scale itself. Neither file has a clipped bias."""
    from effkit.load import keras_compat

    model = keras_compat.tf_keras().models.clone_model(tiny_model)
    model.set_weights(tiny_model.get_weights())
    conv = next(layer for layer in model.layers if layer.name.startswith("conv"))
    kernel, bias = conv.get_weights()
    kernel[..., :3] = 0.0  # three output channels pruned away
    bias[:3] = 0.5
    conv.set_weights([kernel, bias])
    inputs = RecipeInputs(model, digits.x_train[:100], CompressConfig())
    params, paths = {}, {}
    for recipe in sorted(RECIPES, key=lambda r: r.quantization != Quant.NONE):
        if recipe.format != Format.TFLITE or recipe.quantization not in (Quant.NONE, Quant.INT8):
            continue
        paths[recipe.backend, recipe.quantization] = path = tmp_path / recipe.file_name("zeroed")
        params[recipe.backend, recipe.quantization] = recipe.make(inputs, path).params
    litert = params[Backend.LITERT, Quant.INT8]
    assert litert["dead_channels_mended"] == 3
    assert "clipped_biases" not in litert and "clipped_biases" not in params[Backend.CONVERTER, Quant.INT8]
    reference = open_runner(paths[Backend.CONVERTER, Quant.NONE], Format.TFLITE).predict(digits.x_test)[0]
    mended = open_runner(paths[Backend.LITERT, Quant.INT8], Format.TFLITE).predict(digits.x_test)[0]
    assert np.mean(reference.argmax(1) == mended.argmax(1)) > 0.97


def test_a_dead_unit_computes_its_bias_after_static_int8(tmp_path):
    """A Dense unit whose weights are all zero outputs its bias alone: -0.3 in float, and within a quantization step
    of it in int8 (clipped, it would be 0)."""
    from effkit.export.tflite import clipped_biases, export_tflite
    from effkit.load import keras_compat
    from effkit.quantize.litert import PLANS, quantize_litert_plan

    keras = keras_compat.tf_keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    kernel, bias = model.layers[-1].get_weights()
    kernel[:, 2], bias[2] = 0.0, -0.3
    model.layers[-1].set_weights([kernel, bias])
    x = np.random.default_rng(0).uniform(0, 1, (64, 6)).astype("float32")
    export_tflite(model, tmp_path / "float.tflite")
    params = quantize_litert_plan(tmp_path / "float.tflite", tmp_path / "int8.tflite", plan=PLANS[Quant.INT8],
                                  calibration=x)  # fmt: skip
    assert params["dead_channels_mended"] == 1 and clipped_biases(tmp_path / "int8.tflite") == 0
    outputs = open_runner(tmp_path / "int8.tflite", Format.TFLITE).predict(x)[0]
    np.testing.assert_allclose(outputs[:, 2], -0.3, atol=0.01)
    live = open_runner(tmp_path / "float.tflite", Format.TFLITE).predict(x)[0][:, :2]
    assert np.abs(outputs[:, :2] - live).max() < 0.05  # the live units are as the quantizer made them


CPU_SAMPLES = Path(__file__).parent / "data" / "cpuinfo"


def _cpu(sample: str):
    arch = "aarch64" if sample.startswith("arm") else "x86_64"
    return parse_cpuinfo((CPU_SAMPLES / sample).read_text(), arch=arch)


@pytest.mark.parametrize(
    "sample, expected",
    [
        ("amd_epyc_avx2.txt", OrtTypes.U8U8),  # vpmaddubsw: U8S8 saturates
        ("intel_xeon_skylake_avx512.txt", OrtTypes.U8U8),  # AVX-512 without VNNI saturates the same way
        ("amd_epyc_avx512_vnni.txt", OrtTypes.U8S8),
        ("intel_core_alderlake_avx_vnni.txt", OrtTypes.U8S8),
        ("intel_xeon_sapphire_rapids_amx.txt", OrtTypes.U8S8),
        ("arm_graviton2_neoverse_n1.txt", OrtTypes.U8S8),
        ("arm_raspberry_pi4_cortex_a72.txt", OrtTypes.U8S8),
    ],
)
def test_onnx_types_follow_the_cpu_unless_the_user_chose(sample, expected):
    cpu = _cpu(sample)
    types, why = ort_types(OnnxQuantConfig(), cpu)
    assert types == expected and cpu.isa_class in why
    assert ort_types(OnnxQuantConfig(types=OrtTypes.S8S8), cpu) == (OrtTypes.S8S8, "chosen by the user")


@pytest.mark.parametrize("quantization", [Quant.INT8, Quant.DYNAMIC])
def test_onnx_quantized_for_an_avx2_cpu_has_uint8_weights_and_says_why(made, digits, tmp_path, quantization):
    import onnx
    from onnx import numpy_helper

    float_onnx = next(path for recipe, path in made.items() if (recipe.format, recipe.quantization) == ("onnx", "none"))
    weight_types = {}
    for sample in ("amd_epyc_avx2.txt", "amd_epyc_avx512_vnni.txt"):
        path = tmp_path / f"{sample}.onnx"
        params = quantize_onnx(
            float_onnx, path, quantization=quantization, calibration=digits.x_train[:50], config=OnnxQuantConfig(),
            cpu=_cpu(sample),
        )  # fmt: skip
        assert params["isa_class"] == _cpu(sample).isa_class
        graph = onnx.load(str(path)).graph
        kernels = [numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith(("_quantized", "_Q"))]
        kernels = [k for k in kernels if k.ndim >= 2]  # conv and dense kernels, not zero points
        assert kernels, "no quantized kernels found"
        weight_types[sample] = {k.dtype for k in kernels}
        (outputs,) = open_runner(path, Format.ONNX).predict(digits.x_test)
        (reference,) = open_runner(float_onnx, Format.ONNX).predict(digits.x_test)
        assert parity(reference, outputs, OutputKind.PROBABILITIES).top1_agreement >= 97.0
        assert params["types"] == ("u8u8" if "avx2" in sample else "u8s8")
    assert weight_types == {"amd_epyc_avx2.txt": {np.dtype(np.uint8)}, "amd_epyc_avx512_vnni.txt": {np.dtype(np.int8)}}


@pytest.mark.parametrize("generation", ["keras3", "bridged"])
def test_onnx_folds_normalization_constants_and_takes_only_the_models_input(generation, tmp_path):
    """Normalization's mean and variance are tensors captured by value; tf2onnx made them graph inputs (issue #15)."""
    import onnx

    from effkit.export.onnx import INPUT_NAME, export_onnx
    from effkit.load import keras_compat

    keras = keras_compat.keras3()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    inputs = keras.Input((6, 6, 3))
    adapted = keras.layers.Normalization()
    adapted.adapt(rng.normal(3.0, 2.0, (16, 6, 6, 3)).astype("float32"))
    x = keras.layers.Normalization(mean=[1.0, 2.0, 3.0], variance=[4.0, 5.0, 6.0])(inputs)
    x = keras.layers.Conv2D(4, 3)(adapted(x))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    if generation == "bridged":
        model = keras_compat.bridge_to_tf_keras(model)
    path = export_onnx(model, tmp_path / "normalized.onnx")
    graph = onnx.load(str(path)).graph
    assert [value.name for value in graph.input] == [INPUT_NAME]
    sample = rng.normal(2.0, 3.0, (32, 6, 6, 3)).astype("float32")
    (outputs,) = open_runner(path, Format.ONNX).predict(sample)
    reference = outputs_of(model, sample)
    assert np.std(reference) > 0.1
    np.testing.assert_allclose(outputs, reference, atol=1e-4)


def test_onnx_converts_grouped_convolutions_and_exact_gelu_from_keras3(tmp_path):
    """Keras 3 runs a grouped convolution as a nested XLA function and exact gelu with Erfc (ConvNeXt has both);
    tf2onnx supports neither as such."""
    import onnx

    from effkit.export.onnx import export_onnx
    from effkit.load import keras_compat

    keras = keras_compat.keras3()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", groups=4)(inputs)
    x = keras.layers.Activation("gelu")(keras.layers.Dense(8)(x))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    path = export_onnx(model, tmp_path / "grouped_gelu.onnx")
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Erf" in ops and "Conv" in ops and not ops & {"StatefulPartitionedCall", "PartitionedCall", "Erfc"}
    sample = np.random.default_rng(0).normal(0.0, 2.0, (32, 6, 6, 4)).astype("float32")
    (outputs,) = open_runner(path, Format.ONNX).predict(sample)
    np.testing.assert_allclose(outputs, outputs_of(model, sample), atol=1e-5)


RELU6_EXPORT = """
import sys
from pathlib import Path

from effkit import keras_compat
from effkit.export.onnx import export_onnx

keras = keras_compat.tf_keras()
keras.utils.set_random_seed(0)
layers = keras.layers
x = keras.Input((8, 8, 1), name="image")
h = layers.Conv2D(4, 3, padding="same", name="conv")(x)
for i in range(6):  # named: Keras numbers unnamed layers across the process, and names reach the file
    h = layers.DepthwiseConv2D(3, padding="same", name=f"depthwise_{i}")(layers.ReLU(6.0, name=f"relu6_{i}")(h))
h = layers.GlobalAveragePooling2D(name="pool")(h)
export_onnx(keras.Model(x, layers.Dense(10, activation="softmax", name="head")(h), name="relu6s"), Path(sys.argv[1]))
"""


@pytest.mark.slow
def test_the_same_model_gives_the_same_onnx_bytes_whatever_the_processs_string_hashing(tmp_path):
    """tf2onnx merges identical constants (six ReLU6 bounds here) and names the one it keeps after whichever it met
    first, in an order that follows Python's string hashing: without effkit's renaming, each PYTHONHASHSEED gave
    another file (seen: transfer_mobilenet's .onnx, sequential against Ray). This process (its own random hash seed)
    and another one with a fixed seed write the same bytes, and the merged constants are named after their first
    consumer and ordered by first use, which is what makes the file independent of the hashing."""
    import os
    import subprocess
    import sys

    import onnx

    here, there = tmp_path / "relu6s-here.onnx", tmp_path / "relu6s-there.onnx"
    exec(compile(RELU6_EXPORT.replace("Path(sys.argv[1])", "Path(path)"), "relu6s", "exec"), {"path": here})
    seed = "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"
    env = {**os.environ, "PYTHONHASHSEED": seed}
    subprocess.run([sys.executable, "-c", RELU6_EXPORT, str(there)], env=env, check=True, capture_output=True)
    files = [here.read_bytes(), there.read_bytes()]
    assert files[0] == files[1]

    graph = onnx.load_from_string(files[0]).graph
    consumers: dict[str, list[tuple[str, int]]] = {}
    order: list[str] = []
    for node in graph.node:
        for slot, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node.name, slot))
            if name not in order:
                order.append(name)
    shared = [init.name for init in graph.initializer if len(consumers.get(init.name, ())) > 1]
    assert len(shared) >= 2  # ReLU6's 0 and 6, each used six times
    for name in shared:
        node, slot = consumers[name][0]
        assert name == f"{node}/shared_{slot}"
    used = [init.name for init in graph.initializer if init.name in consumers]
    assert used == sorted(used, key=order.index)
