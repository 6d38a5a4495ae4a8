"""Shared fixtures: the digits data and tiny real models, trained once per session."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from effkit import keras_compat
from effkit.classifier import describe
from effkit.config import CompressConfig, LatencyConfig, PruneConfig
from effkit.data import load_dataset
from effkit.train import fit

# Enough runs to exercise the protocol, few enough to keep the suite quick. Speed is judged in bench/, not here.
FAST_LATENCY = LatencyConfig(warmup_runs=2, warmup_seconds=0.0, min_runs=10, min_seconds=0.01)
FAST_PRUNE = PruneConfig(epochs=6)


def build_tiny_cnn(keras, *, num_classes: int = 10):
    """~17k parameters: trains to >90% on digits in a few seconds, big enough that quantization shows its 4x."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Rescaling(1.0 / 16.0),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="tiny_cnn",
    )


def train_tiny(keras, dataset, *, epochs: int = 15, seed: int = 0):
    keras.utils.set_random_seed(seed)
    model = build_tiny_cnn(keras)
    info = describe(model, dataset.x_train[:8], name="tiny_cnn")
    fit(model, dataset, keras=keras, heads=info.heads, epochs=epochs, learning_rate=3e-3)
    return model


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def tiny_model(digits):
    """A trained tf_keras CNN."""
    return train_tiny(keras_compat.tf_keras(), digits)


@pytest.fixture(scope="session")
def tiny_keras3_model(digits):
    """The same architecture trained in Keras 3."""
    return train_tiny(keras_compat.keras3(), digits)


@pytest.fixture(scope="session")
def tiny_keras3_file(tiny_keras3_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("k3") / "tiny_k3.keras"
    tiny_keras3_model.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_tf_keras_file(tiny_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("k2") / "tiny_k2.keras"
    keras_compat.save_model(tiny_model, path)
    return path


def custom_layer_class():
    """A Keras 3 layer of the user's own (registered, so Keras 3 loads it), which tf_keras cannot rebuild."""
    keras = keras_compat.keras3()
    registered = keras.saving.get_registered_object("effkit_tests>ChannelScale")
    if registered is not None:
        return registered

    @keras.saving.register_keras_serializable(package="effkit_tests")
    class ChannelScale(keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

        def call(self, inputs):
            return inputs * self.scale

    return ChannelScale


@pytest.fixture(scope="session")
def keras3_custom_layer_file(digits, tmp_path_factory) -> Path:
    """A small Keras 3 CNN, trained on digits, whose one piece tf_keras lacks is a custom layer."""
    keras = keras_compat.keras3()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Rescaling(1.0 / 16.0),
            layers.Conv2D(8, 3, activation="relu"),
            custom_layer_class()(name="channel_scale"),
            layers.Flatten(),
            layers.Dense(10, activation="softmax"),
        ],
        name="custom_cnn",
    )
    info = describe(model, digits.x_train[:8], name="custom_cnn")
    fit(model, digits, keras=keras, heads=info.heads, epochs=8, learning_rate=3e-3)
    path = tmp_path_factory.mktemp("custom") / "custom_cnn.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_info(tiny_model, digits):
    return describe(tiny_model, digits.x_train[:8], name="tiny")


@pytest.fixture(scope="session")
def tiny_pruned80(tiny_model, digits, tiny_info):
    """The tiny model pruned to 80% by tfmot: what clustering and QAT start from."""
    from effkit.prune import prune

    return prune(tiny_model, digits, info=tiny_info, sparsity=0.8, config=FAST_PRUNE)


@pytest.fixture(scope="session")
def fast_config() -> CompressConfig:
    return CompressConfig(sparsities=(0.5, 0.8), prune=FAST_PRUNE, latency=FAST_LATENCY)


@pytest.fixture(scope="session")
def compressed(tiny_model, digits, fast_config, tmp_path_factory):
    """One full compress run on the tiny model, shared by the pipeline tests."""
    from effkit.pipeline import compress

    out = tmp_path_factory.mktemp("compress")
    report = compress(tiny_model, digits, config=fast_config, out_dir=out, name="tiny_cnn")
    return report, out


def outputs_of(model, x) -> np.ndarray:
    return np.asarray(model(x, training=False))


def snapshot(folder: Path) -> dict[Path, str]:
    """Every file below `folder` and its SHA-256: to prove a run left its inputs byte-identical."""
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def run_effkit(*args, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    """`python -m effkit ARGS` in a real process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "effkit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
