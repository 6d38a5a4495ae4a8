"""The keras.applications zoo as a test bed (issue #15).

Every family in the installed Keras under ~30M parameters, built in Keras 3 with `weights=None` at the smallest
input it accepts and with its own `preprocess_input` inside the graph, must bridge to tf_keras with parity (so tfmot
can prune it) and export to float TFLite and ONNX that reproduce it and take only the model's input. A family the
bridge cannot rebuild must be pruned in Keras 3 itself instead. Random weights and inputs suffice; about 8 minutes for
the zoo on 2 cores, so it runs with `pytest -m zoo`.
"""

import numpy as np
import pytest

from effkit.config import CompressConfig, Format, PruneConfig, Quant
from effkit.load import keras_compat
from effkit.load.data import Dataset
from effkit.recipes import RECIPES, RecipeInputs
from effkit.runtime import open_runner

# (module in keras.applications, its smallest member, the smallest input side it accepts)
FAMILIES = (
    ("convnext", "ConvNeXtTiny", 32),
    ("densenet", "DenseNet121", 32),
    ("efficientnet", "EfficientNetB0", 32),
    ("efficientnet_v2", "EfficientNetV2B0", 32),
    ("inception_v3", "InceptionV3", 75),
    ("mobilenet", "MobileNet", 32),
    ("mobilenet_v2", "MobileNetV2", 32),
    ("mobilenet_v3", "MobileNetV3Small", 32),
    ("mobilenet_v3", "MobileNetV3Large", 32),
    ("nasnet", "NASNetMobile", 32),
    ("resnet", "ResNet50", 32),
    ("resnet_v2", "ResNet50V2", 32),
    ("xception", "Xception", 71),
)
# Over the ~30M-parameter limit at their smallest, with 10 classes.
TOO_LARGE = {"inception_resnet_v2": "InceptionResNetV2, 54.4M", "vgg16": "VGG16, 33.6M", "vgg19": "VGG19, 38.9M"}
# Families the bridge cannot rebuild: exported and quantized from the Keras 3 model, and pruned in Keras 3 itself.
NOT_BRIDGED = {"ConvNeXtTiny": "ConvNeXt's LayerScale layer has no tf_keras twin"}
RELATIVE_TOLERANCE = 1e-5  # of the largest logit; random networks' logits reach the hundreds


def test_the_zoo_covers_every_family_in_the_installed_keras():
    apps = keras_compat.keras3().applications
    families = {name for name in dir(apps) if name[0].islower() and not name.startswith("_")}
    families -= {"imagenet_utils", "resnet50"}  # helpers, and an alias of resnet
    assert families == {module for module, _, _ in FAMILIES} | set(TOO_LARGE)


def _build(module: str, member: str, side: int):
    keras = keras_compat.keras3()
    apps = keras.applications
    keras.utils.set_random_seed(0)
    shape = (side, side, 3)
    base = getattr(apps, member)(input_shape=shape, weights=None, classes=10, classifier_activation=None)
    inputs = keras.Input(shape)
    model = keras.Model(inputs, base(getattr(apps, module).preprocess_input(inputs)), name=member.lower())
    # Batch-normalization statistics that are not the identity, so a weight the bridge fails to copy shows.
    rng = np.random.default_rng(1)
    for variable in model.weights:
        if variable.path.endswith("moving_variance"):
            variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype("float32"))
        elif variable.path.endswith("moving_mean"):
            variable.assign(rng.normal(0.0, 0.1, variable.shape).astype("float32"))
    return model


def _zoo(not_yet: dict[str, str]):
    return [
        pytest.param(*family, id=family[1], marks=pytest.mark.xfail(reason=not_yet[family[1]], strict=True))
        if family[1] in not_yet
        else pytest.param(*family, id=family[1])
        for family in FAMILIES
    ]


def _inputs(side: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (8, side, side, 3)).astype("float32")


def _tolerance(reference: np.ndarray) -> float:
    return RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(reference))))


@pytest.mark.zoo
@pytest.mark.parametrize("module, member, side", _zoo(NOT_BRIDGED))
def test_application_bridges_to_tf_keras_with_parity(module, member, side):
    """The path to tfmot pruning."""
    model = _build(module, member, side)
    assert model.count_params() < 30e6
    x = _inputs(side)
    loaded = keras_compat.adopt(model)
    assert loaded.bridge_error is None
    assert keras_compat.max_output_diff(model, loaded.model, x) <= _tolerance(np.asarray(model(x, training=False)))


@pytest.mark.zoo
@pytest.mark.parametrize("module, member, side", _zoo({}))
def test_application_exports_to_float_tflite_and_onnx(module, member, side, tmp_path):
    """From the model the pipeline exports: the bridge when there is one, else the Keras 3 model itself."""
    import onnx

    model = _build(module, member, side)
    x = _inputs(side)
    reference = np.asarray(model(x, training=False))
    loaded = keras_compat.adopt(model)
    inputs = RecipeInputs(loaded.model, x, CompressConfig(), workdir=tmp_path)
    for recipe in (r for r in RECIPES if r.quantization == Quant.NONE):
        path = tmp_path / recipe.file_name(member)
        recipe.produce(inputs, path)
        (outputs,) = open_runner(path, recipe.format).predict(x)
        assert np.max(np.abs(outputs - reference)) <= 10 * _tolerance(reference), recipe.format
    graph = onnx.load(str(tmp_path / f"{member}-onnx-none.onnx")).graph
    assert [value.name for value in graph.input] == ["input"]


@pytest.mark.zoo
@pytest.mark.parametrize("module, member, side", [f for f in FAMILIES if f[1] in NOT_BRIDGED], ids=sorted(NOT_BRIDGED))
def test_application_the_bridge_cannot_rebuild_is_pruned_in_keras3(module, member, side, tmp_path):
    """The path to pruning without tfmot; two fine-tune steps on random data, about a minute."""
    from effkit.export.tflite import export_tflite
    from effkit.load.classifier import describe
    from effkit.techniques.prune_native import prune_keras3

    model = _build(module, member, side)
    assert keras_compat.adopt(model).bridge_error is not None
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (96, side, side, 3)).astype("float32")
    y = rng.integers(0, 10, 96)
    dataset = Dataset("random", x[:64], y[:64], x[64:80], y[64:80], x[80:], y[80:])
    before = [w.copy() for w in model.get_weights()]
    info = describe(model, x[:8], name=member)
    result = prune_keras3(model, dataset, info=info, sparsity=0.5, config=PruneConfig(epochs=1, batch_size=32))
    assert result.step_params()["path"] == "keras3" and len(result.pruned_layers) > 20
    assert result.sparsity == pytest.approx(0.5, abs=0.01)
    assert all(value == pytest.approx(0.5, abs=0.01) for value in result.layer_sparsity.values())
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    reference = np.asarray(result.model(x[80:], training=False))
    (outputs,) = open_runner(export_tflite(result.model, tmp_path / "pruned.tflite"), Format.TFLITE).predict(x[80:])
    assert np.max(np.abs(outputs - reference)) <= 10 * _tolerance(reference)
