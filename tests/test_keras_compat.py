"""Loading every model file kind, and the Keras 3 -> tf_keras bridge, checked numerically."""

import zipfile

import numpy as np
import pytest

from effkit.errors import InputError, ModelError
from effkit.load import keras_compat

from .conftest import outputs_of


def test_keras3_file_is_bridged_to_tf_keras_with_equal_outputs(tiny_keras3_file, digits):
    loaded = keras_compat.load_model(tiny_keras3_file)
    assert loaded.generation == 3
    assert keras_compat.is_tf_keras_model(loaded.model)
    assert not keras_compat.is_tf_keras_model(loaded.original)
    assert keras_compat.max_output_diff(loaded.original, loaded.model, digits.x_test) <= 1e-5


def test_tf_keras_files_load_without_a_bridge(tiny_model, tiny_tf_keras_file, tmp_path, digits):
    loaded = keras_compat.load_model(tiny_tf_keras_file)
    assert loaded.generation == 2 and loaded.original is loaded.model
    np.testing.assert_allclose(
        outputs_of(loaded.model, digits.x_test), outputs_of(tiny_model, digits.x_test), atol=1e-6
    )

    h5 = tmp_path / "tiny.h5"
    tiny_model.save(h5)
    assert keras_compat.load_model(h5).generation == 2

    saved_model = tmp_path / "saved_model"
    tiny_model.save(saved_model, save_format="tf")
    np.testing.assert_allclose(
        outputs_of(keras_compat.load_model(saved_model).model, digits.x_test[:16]),
        outputs_of(tiny_model, digits.x_test[:16]),
        atol=1e-6,
    )


def _keras3_functional():
    keras = keras_compat.keras3()
    layers = keras.layers
    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(
        inner_in, layers.BatchNormalization()(layers.DepthwiseConv2D(3, padding="same")(inner_in)), name="inner"
    )
    inputs = keras.Input((8, 8, 1), name="image")
    x = layers.Rescaling(1 / 16)(inputs)
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = layers.Add()([x, inner(x, training=False)])
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))


def _keras3_text():
    keras = keras_compat.keras3()
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((20,), dtype="int32"),
            layers.Embedding(50, 8),
            layers.GlobalAveragePooling1D(),
            layers.Dense(8, activation="relu"),
            layers.Dense(1, activation="sigmoid"),
        ]
    )


def _keras3_augmented():
    keras = keras_compat.keras3()
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.RandomFlip("horizontal"),
            layers.RandomRotation(0.1),
            layers.RandomTranslation(0.1, 0.1),
            layers.Conv2D(4, 3, kernel_regularizer="l2"),
            layers.BatchNormalization(),
            layers.Flatten(),
            layers.Dense(10),
        ]
    )


def _keras3_functional_augmented():
    """Keras 3 stores training=True with each random layer's node in a Functional model (not in a Sequential)."""
    keras = keras_compat.keras3()
    layers = keras.layers
    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(inner_in, layers.BatchNormalization()(inner_in), name="inner")
    inputs = keras.Input((8, 8, 1))
    x = layers.RandomTranslation(0.2, 0.2)(inputs)
    x = layers.RandomRotation(0.1)(x)
    x = layers.Conv2D(4, 3, padding="same")(x)
    x = inner(x)
    return keras.Model(inputs, layers.Dense(10)(layers.Flatten()(x)))


@pytest.mark.parametrize(
    "build, x",
    [
        (_keras3_functional, np.random.default_rng(0).uniform(0, 16, (32, 8, 8, 1)).astype("float32")),
        (_keras3_text, np.random.default_rng(0).integers(0, 50, (32, 20)).astype("int32")),
        (_keras3_augmented, np.random.default_rng(0).uniform(0, 1, (32, 8, 8, 1)).astype("float32")),
        (_keras3_functional_augmented, np.random.default_rng(0).uniform(0, 1, (32, 8, 8, 1)).astype("float32")),
    ],
    ids=["functional-nested-residual", "embedding-sigmoid", "augmentation-bn", "functional-augmentation"],
)
def test_keras3_architectures_bridge_faithfully(build, x, tmp_path):
    model = build()
    # Non-trivial BatchNormalization statistics, so a weight that is not copied shows in the outputs.
    for variable in model.weights:
        if "moving" in variable.path:
            variable.assign(np.random.default_rng(1).uniform(0.5, 2.0, variable.shape).astype("float32"))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras_compat.load_model(path)
    assert keras_compat.is_tf_keras_model(loaded.model)
    assert keras_compat.max_output_diff(model, loaded.model, x) <= 1e-4


def test_in_memory_keras3_model_is_adopted(tiny_keras3_model, digits):
    adopted = keras_compat.adopt(tiny_keras3_model)
    assert adopted.generation == 3 and keras_compat.is_tf_keras_model(adopted.model)
    assert keras_compat.max_output_diff(tiny_keras3_model, adopted.model, digits.x_test[:64]) <= 1e-5


def test_subclassed_keras3_model_is_refused():
    keras = keras_compat.keras3()

    class Custom(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ModelError, match="subclassed"):
        keras_compat.bridge_to_tf_keras(Custom())


def test_a_keras3_model_the_bridge_cannot_rebuild_is_kept_with_the_reason(keras3_custom_layer_file):
    loaded = keras_compat.load_model(keras3_custom_layer_file)
    assert loaded.generation == 3 and not loaded.bridged
    assert loaded.model is loaded.original and not keras_compat.is_tf_keras_model(loaded.model)
    assert loaded.bridge_error == "layer 'channel_scale' is a ChannelScale, which tf_keras does not have"
    adopted = keras_compat.adopt(loaded.original)
    assert adopted.model is loaded.original and adopted.bridge_error == loaded.bridge_error


def test_bad_model_files_give_model_errors(tmp_path, tiny_keras3_file):
    with pytest.raises(InputError, match="model not found"):
        keras_compat.load_model(tmp_path / "missing.keras")
    empty = tmp_path / "empty.keras"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="is empty"):
        keras_compat.load_model(empty)
    text = tmp_path / "notes.keras"
    text.write_text("hello")
    with pytest.raises(ModelError, match="not a Keras model file"):
        keras_compat.load_model(text)
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(tiny_keras3_file.read_bytes()[:2000])
    with pytest.raises(ModelError, match="truncated or corrupt"):
        keras_compat.load_model(truncated)
    other_zip = tmp_path / "photos.keras"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("a.txt", "x")
    with pytest.raises(ModelError, match=r"no config\.json"):
        keras_compat.load_model(other_zip)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ModelError, match=r"without saved_model\.pb"):
        keras_compat.load_model(folder)


def test_lambda_layers_are_refused_unless_unsafe_load(tmp_path):
    keras = keras_compat.keras3()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(2)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ModelError, match=r"Lambda.*--unsafe-load"):
        keras_compat.load_model(path)

    tfk = keras_compat.tf_keras()
    legacy = tfk.Sequential([tfk.Input((4,)), tfk.layers.Lambda(lambda t: t * 2), tfk.layers.Dense(2)])
    h5 = tmp_path / "lambda.h5"
    legacy.save(h5)
    with pytest.raises(ModelError, match="Lambda"):
        keras_compat.load_model(h5)
    assert keras_compat.load_model(h5, safe_mode=False).model is not None


@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_keras3_model"], ids=["tf_keras", "keras3"])
def test_save_model_drops_optimizer_state_and_leaves_the_model_compiled(fixture, request, tmp_path, digits):
    import io

    import h5py

    keras = keras_compat.tf_keras() if fixture == "tiny_model" else keras_compat.keras3()
    trained = request.getfixturevalue(fixture)
    model = keras.models.clone_model(trained)  # a model as a user's training leaves it: compiled, with Adam's state
    model.set_weights(trained.get_weights())
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(digits.x_train[:64], digits.y_train[:64], epochs=1, verbose=0)
    optimizer = model.optimizer
    assert optimizer.variables  # the state that must not reach the file
    path = keras_compat.save_model(model, tmp_path / "m.keras")
    assert model.optimizer is optimizer  # the caller's model keeps its optimizer
    with zipfile.ZipFile(path) as archive:
        stored: list[str] = []
        h5py.File(io.BytesIO(archive.read("model.weights.h5"))).visit(stored.append)
    assert stored and not [name for name in stored if name.startswith("optimizer/")]
    reloaded = keras_compat.load_model(path)
    assert keras_compat.max_output_diff(model, reloaded.model, digits.x_test[:64]) <= 1e-5
    assert not list(tmp_path.glob(".*partial*"))


# Every Keras 3 activation usable by name: the Keras-3-only ones, translated, and those tf_keras has under the same
# name, which must also mean the same function there. Not translated: glu (it halves its input, which tf_keras'
# layers cannot size) and threshold (it needs arguments).
SAME_NAME_ACTIVATIONS = (
    "elu",
    "exponential",
    "gelu",
    "leaky_relu",
    "linear",
    "log_softmax",
    "mish",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "softsign",
    "swish",
    "tanh",
)


def test_every_keras3_activation_has_a_translation_under_test():
    from keras.src.activations import ALL_OBJECTS_DICT

    covered = {*keras_compat.KERAS3_ONLY_ACTIVATIONS, *SAME_NAME_ACTIVATIONS, "glu", "threshold"}
    assert set(ALL_OBJECTS_DICT) == covered


def _bridged_outputs(model, x):
    bridged = keras_compat.bridge_to_tf_keras(model)
    assert keras_compat.is_tf_keras_model(bridged)
    return np.asarray(model(x, training=False)), np.asarray(bridged(x, training=False)), bridged


@pytest.mark.parametrize("name", [*keras_compat.KERAS3_ONLY_ACTIVATIONS, *SAME_NAME_ACTIVATIONS])
def test_keras3_activations_bridge_exactly(name):
    keras = keras_compat.keras3()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation=name, kernel_initializer=keras.initializers.RandomNormal(0, 0.5))(inputs)
    x = keras.layers.Dense(8, kernel_initializer=keras.initializers.RandomNormal(0, 0.1))(x)
    x = keras.layers.Activation(name)(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    sample = np.random.default_rng(0).normal(0, 1.5, (64, 6)).astype("float32")
    expected, got, _ = _bridged_outputs(model, sample)
    assert np.all(np.isfinite(expected))
    assert np.max(np.abs(expected - got)) <= 1e-6 * max(1.0, float(np.max(np.abs(expected))))
    assert np.std(expected) > 0.01  # the activation let something through


def test_hard_sigmoid_means_keras3s_definition_in_the_bridge():
    """tf_keras' own hard_sigmoid (0.2x + 0.5) differs from Keras 3's (relu6(x + 3) / 6) by up to 0.083."""
    keras = keras_compat.keras3()
    model = keras.Sequential([keras.Input((1,)), keras.layers.Activation("hard_sigmoid")])
    x = np.array([[-3.0], [-2.0], [1.0], [2.5], [3.0]], dtype="float32")
    expected, got, _ = _bridged_outputs(model, x)
    np.testing.assert_allclose(expected[:, 0], [0.0, 1 / 6, 4 / 6, 5.5 / 6, 1.0], atol=1e-6)
    np.testing.assert_allclose(got, expected, atol=1e-7)


def test_leaky_relu_layer_keeps_its_slope():
    keras = keras_compat.keras3()
    model = keras.Sequential([keras.Input((3,)), keras.layers.LeakyReLU(negative_slope=0.05)])
    x = np.array([[-10.0, 0.0, 4.0]], dtype="float32")
    expected, got, _ = _bridged_outputs(model, x)
    np.testing.assert_allclose(got, [[-0.5, 0.0, 4.0]], atol=1e-6)
    np.testing.assert_allclose(got, expected, atol=0)


def _operation_cases():
    """keras.ops calls, as keras.applications' preprocess_input and users write them, one per operation."""
    from keras import ops

    bias = np.array([-103.939, -116.779, -123.68], dtype="float32")
    return {
        "Add": lambda x: ops.add(2.0, ops.add(x, bias)),  # a constant first (commutative) and an array constant
        "Subtract": lambda x: ops.subtract(ops.true_divide(x, 127.5), 1.0),
        "Multiply": lambda x: ops.multiply(x, ops.sqrt(ops.abs(x))),
        "Divide": lambda x: ops.divide(x, ops.add(ops.abs(x), 1.0)),
        "TrueDivide": lambda x: ops.true_divide(x, np.array([0.229, 0.224, 0.225], dtype="float32")),
        "Maximum": lambda x: ops.maximum(x, 0.5),
        "Minimum": lambda x: ops.minimum(6.0, x),
        "Power": lambda x: ops.power(ops.abs(x), 1.5),
        "Negative": lambda x: -x,
        "Absolute": lambda x: ops.absolute(x),
        "Square": lambda x: ops.square(x),
        "Sqrt": lambda x: ops.sqrt(ops.abs(x)),
        "Exp": lambda x: ops.exp(x / 10.0),
        "Log": lambda x: ops.log(ops.abs(x) + 1.0),
        "Mean": lambda x: ops.mean(x, axis=[1, 2], keepdims=True),
        "Sum": lambda x: ops.sum(x, axis=-1),
        "Reshape": lambda x: ops.reshape(x, (-1, 16, 3)),
        "Transpose": lambda x: ops.transpose(x, (0, 2, 1, 3)),
        "Squeeze": lambda x: ops.squeeze(ops.mean(x, axis=1, keepdims=True), axis=1),
        "ExpandDims": lambda x: ops.expand_dims(x, 1),
        "Relu": lambda x: ops.relu(x),
        "Relu6": lambda x: ops.relu6(x * 3.0),
        "Sigmoid": lambda x: ops.sigmoid(x),
        "Silu": lambda x: ops.silu(x),
        "Gelu": lambda x: ops.concatenate([ops.gelu(x, approximate=True), ops.gelu(x, approximate=False)], axis=-1),
        "Softmax": lambda x: ops.softmax(x, axis=-1),
        "Concatenate": lambda x: ops.concatenate([x, x * 2.0], axis=1),
        "Stack": lambda x: ops.stack([x[..., 2], x[..., 1], x[..., 0]], axis=-1),
        "GetItem": lambda x: x[..., ::-1][:, 1:3, :, 0:2],
    }


def test_every_translated_operation_is_under_test():
    assert set(_operation_cases()) == set(keras_compat.KERAS3_OPERATIONS)


@pytest.mark.parametrize("operation", keras_compat.KERAS3_OPERATIONS)
def test_keras3_operations_bridge_to_the_same_tensorflow_op(operation):
    keras = keras_compat.keras3()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(3, 1)(inputs)
    x = _operation_cases()[operation](x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    classes = {layer["class_name"] for layer in model.get_config()["layers"]}
    assert operation in classes
    sample = np.random.default_rng(0).normal(0, 3, (32, 4, 4, 3)).astype("float32")
    expected, got, bridged = _bridged_outputs(model, sample)
    assert np.max(np.abs(expected - got)) <= 1e-5 * max(1.0, float(np.max(np.abs(expected))))
    assert {type(layer).__name__ for layer in bridged.layers} & {"TFOpLambda", "SlicingOpLambda"}


def test_a_translated_model_saves_and_reloads_in_tf_keras(tmp_path):
    """What the pipeline does with a pruned model: save it as a deliverable, which must load again."""
    keras = keras_compat.keras3()
    apps = keras.applications
    inputs = keras.Input((32, 32, 3))
    base = apps.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, classes=4, alpha=0.75, include_preprocessing=False
    )
    # Both kinds of preprocess_input: true_divide/subtract (mobilenet_v2) and get_item/stack/add of an array (resnet)
    preprocessed = apps.resnet.preprocess_input(apps.mobilenet_v2.preprocess_input(inputs))
    model = keras.Model(inputs, base(preprocessed))
    sample = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    expected, got, bridged = _bridged_outputs(model, sample)
    assert np.max(np.abs(expected - got)) <= 1e-4
    path = keras_compat.save_model(bridged, tmp_path / "bridged.keras")
    reloaded = keras_compat.load_model(path)
    assert reloaded.generation == 2
    np.testing.assert_allclose(np.asarray(reloaded.model(sample, training=False)), got, atol=1e-6)


def test_operations_effkit_cannot_rebuild_are_named():
    keras = keras_compat.keras3()
    from keras import ops

    inputs = keras.Input((4,))
    with pytest.raises(ModelError, match=r"operation 'subtract\w*' \(Subtract\) starts with a constant"):
        keras_compat.bridge_to_tf_keras(keras.Model(inputs, ops.subtract(1.0, inputs)))
    with pytest.raises(ModelError, match=r"operation 'cumsum\w*' is keras.ops Cumsum"):
        keras_compat.bridge_to_tf_keras(keras.Model(inputs, ops.cumsum(inputs, axis=-1)))
