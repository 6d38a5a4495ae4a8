"""Shared fixtures: the digits data and tiny real models, trained once per test run.

`make test` runs the suite in two worker processes (pytest-xdist) in random order (pytest-randomly). The costly
session fixtures (trained models, one full compress run) are made once per run by whichever worker asks first, in
a folder both workers see (`shared_folder`), and read from there by the other: every worker then holds the very
same model, loaded from the very same file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from effkit.config import CompressConfig, LatencyConfig, PruneConfig
from effkit.load import keras_compat
from effkit.load.classifier import describe
from effkit.load.data import load_dataset
from effkit.techniques.train import fit

# Enough runs to exercise the protocol, few enough to keep the suite quick. Speed is judged in bench/, not here.
FAST_LATENCY = LatencyConfig(warmup_runs=2, warmup_seconds=0.0, min_runs=10, min_seconds=0.01)
FAST_PRUNE = PruneConfig(epochs=6)


TINY_LAYERS = ("conv2d", "dense", "dense_1")  # the tiny CNN's weighted layers, as the tests name them


def build_tiny_cnn(keras, *, num_classes: int = 10):
    """~17k parameters: trains to >90% on digits in a few seconds, big enough that quantization shows its 4x.

    Every layer is named: Keras numbers unnamed layers across the process (`conv2d_1` once another test has built
    a Conv2D), so the tests' layer names would depend on which tests ran before.
    """
    layers = keras.layers
    conv, hidden, head = TINY_LAYERS
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Rescaling(1.0 / 16.0, name="rescaling"),
            layers.Conv2D(16, 3, padding="same", activation="relu", name=conv),
            layers.MaxPooling2D(name="max_pooling2d"),
            layers.Flatten(name="flatten"),
            layers.Dense(64, activation="relu", name=hidden),
            layers.Dense(num_classes, activation="softmax", name=head),
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


def shared_folder(tmp_path_factory, name: str, make: Callable[[Path], object]) -> Path:
    """A folder made once per test run by `make(folder)`, whichever worker comes first; the others wait for it.

    Under xdist each worker's base temporary folder sits in the run's own folder, which they share; without xdist
    the run's folder is the base itself. Either way nothing outlives the run.
    """
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / "shared" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{folder}.lock"):
        if not (folder / ".made").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".made").touch()
    return folder


@pytest.fixture(scope="session")
def tiny_tf_keras_file(digits, tmp_path_factory) -> Path:
    """The tiny CNN trained in tf_keras, saved as a tf_keras .keras file."""

    def make(folder: Path) -> None:
        keras_compat.save_model(train_tiny(keras_compat.tf_keras(), digits), folder / "tiny_k2.keras")

    return shared_folder(tmp_path_factory, "tiny-tf-keras", make) / "tiny_k2.keras"


@pytest.fixture(scope="session")
def tiny_model(tiny_tf_keras_file):
    """A trained tf_keras CNN."""
    return keras_compat.tf_keras().models.load_model(tiny_tf_keras_file, compile=False)


@pytest.fixture(scope="session")
def tiny_keras3_file(digits, tmp_path_factory) -> Path:
    """The same architecture trained in Keras 3, saved as a Keras 3 .keras file."""

    def make(folder: Path) -> None:
        train_tiny(keras_compat.keras3(), digits).save(folder / "tiny_k3.keras")

    return shared_folder(tmp_path_factory, "tiny-keras3", make) / "tiny_k3.keras"


@pytest.fixture(scope="session")
def tiny_keras3_model(tiny_keras3_file):
    """The same architecture trained in Keras 3."""
    return keras_compat.keras3().models.load_model(tiny_keras3_file, compile=False)


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
    custom_layer_class()  # registered in every worker, so that each can load the file

    def make(folder: Path) -> None:
        keras = keras_compat.keras3()
        keras.utils.set_random_seed(0)
        layers = keras.layers
        model = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                layers.Rescaling(1.0 / 16.0, name="rescaling"),
                layers.Conv2D(8, 3, activation="relu", name="conv2d"),
                custom_layer_class()(name="channel_scale"),
                layers.Flatten(name="flatten"),
                layers.Dense(10, activation="softmax", name="dense"),
            ],
            name="custom_cnn",
        )
        info = describe(model, digits.x_train[:8], name="custom_cnn")
        fit(model, digits, keras=keras, heads=info.heads, epochs=8, learning_rate=3e-3)
        model.save(folder / "custom_cnn.keras")

    return shared_folder(tmp_path_factory, "custom-cnn", make) / "custom_cnn.keras"


@pytest.fixture(scope="session")
def tiny_info(tiny_model, digits):
    return describe(tiny_model, digits.x_train[:8], name="tiny")


@pytest.fixture(scope="session")
def tiny_pruned80(tiny_model, digits, tiny_info, tmp_path_factory):
    """The tiny model pruned to 80% by tfmot: what clustering and QAT start from."""
    import dataclasses
    import pickle

    from effkit.techniques.prune import prune

    def make(folder: Path) -> None:
        result = prune(tiny_model, digits, info=tiny_info, sparsity=0.8, config=FAST_PRUNE)
        keras_compat.save_model(result.model, folder / "pruned80.keras")
        (folder / "result.pickle").write_bytes(pickle.dumps(dataclasses.replace(result, model=None)))

    folder = shared_folder(tmp_path_factory, "tiny-pruned80", make)
    model = keras_compat.tf_keras().models.load_model(folder / "pruned80.keras", compile=False)
    return dataclasses.replace(pickle.loads((folder / "result.pickle").read_bytes()), model=model)


@pytest.fixture(scope="session")
def fast_config() -> CompressConfig:
    return CompressConfig(sparsities=(0.5, 0.8), prune=FAST_PRUNE, latency=FAST_LATENCY)


@pytest.fixture(scope="session")
def compressed(tiny_model, digits, fast_config, tmp_path_factory):
    """One full compress run on the tiny model, shared by the pipeline and bundle tests: (the report compress
    returned, its folder). The returned record travels between workers pickled, not through its report.json, so
    that a test can still compare the two."""
    import pickle

    from effkit.pipeline import compress

    def make(folder: Path) -> None:
        report = compress(tiny_model, digits, config=fast_config, out_dir=folder / "out", name="tiny_cnn")
        (folder / "returned.pickle").write_bytes(pickle.dumps(report))

    folder = shared_folder(tmp_path_factory, "compress", make)
    return pickle.loads((folder / "returned.pickle").read_bytes()), folder / "out"


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


def ctrl_c_when(line: str, *args: str, timeout: float = 240) -> tuple[int, str]:
    """`python -m effkit ARGS` in a real process, sent SIGINT (Ctrl-C) once a line of its stderr contains `line`:
    (its exit code, its whole stderr)."""
    import signal
    import time

    process = subprocess.Popen(
        [sys.executable, "-m", "effkit", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        # A shell's background jobs start with SIGINT ignored, and Python then keeps ignoring it; a user's terminal
        # delivers Ctrl-C normally, which is what this restores.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline, seen = time.monotonic() + timeout, []
    for said in process.stderr:
        seen.append(said)
        if line in said or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=timeout)
    return process.returncode, "".join(seen) + rest
