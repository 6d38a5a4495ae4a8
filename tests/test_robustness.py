"""Bad input, unsafe files, partial failure, interruption, overwriting and determinism (issue #6)."""

from __future__ import annotations

import json
import signal
import zipfile

import numpy as np
import pytest

from effkit.cli import main
from effkit.config import CompressConfig, Format, Quant
from effkit.console import silenced
from effkit.errors import InputError
from effkit.load import keras_compat
from effkit.pipeline import compress
from effkit.types import Report, Status

from .conftest import FAST_LATENCY, ctrl_c_when, run_effkit, snapshot
from .test_pipeline import _not_a_flatbuffer, _replace_recipe


def _npz(path, *, n_train=40, shape=(8, 8, 1), y_shift=0, nan=False, empty_test=False):
    rng = np.random.default_rng(0)
    x_train = rng.uniform(0, 16, (n_train, *shape)).astype("float32")
    if nan:
        x_train[0, 0] = np.nan
    x_test = rng.uniform(0, 16, (0 if empty_test else 20, *shape)).astype("float32")
    np.savez(
        path,
        x_train=x_train,
        y_train=(np.arange(n_train) % 10) + y_shift,
        x_test=x_test,
        y_test=(np.arange(len(x_test)) % 10) + y_shift,
    )
    return path.name


def _zip(path, files):
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path.name


def _non_classifier(path):
    tfk = keras_compat.tf_keras()
    model = tfk.Sequential([tfk.Input((8, 8, 1)), tfk.layers.Conv2D(4, 3, padding="same")])
    keras_compat.save_model(model, path)
    return path.name


def _lambda_model(path):
    keras = keras_compat.keras3()
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Lambda(lambda t: t / 16.0),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.save(path)
    return path.name


def _lambda_tf_keras(path):
    """A tf_keras model with a Lambda layer, saved as a SavedModel folder (test_keras_compat covers .h5)."""
    tfk = keras_compat.tf_keras()
    model = tfk.Sequential(
        [tfk.Input((8, 8, 1)), tfk.layers.Lambda(lambda t: t / 16.0), tfk.layers.Flatten(), tfk.layers.Dense(10)]
    )
    with silenced():
        model.save(path)
    return path.name


PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)

# case -> (arguments after `compress`, made inside the work folder; text the one error line must contain)
BAD_INPUTS = {
    "missing model": (lambda d: ["missing.keras"], "model not found"),
    "empty model file": (lambda d: [(d / "empty.keras").write_bytes(b"") or "empty.keras"], "is empty"),
    "truncated model": (
        lambda d: [(d / "cut.keras").write_bytes((d / "model.keras").read_bytes()[:3000]) and "cut.keras"],
        "truncated or corrupt",
    ),
    "text file": (lambda d: [(d / "notes.txt").write_text("hello") and "notes.txt"], "not a Keras model file"),
    "image file": (lambda d: [(d / "photo.png").write_bytes(PNG) and "photo.png"], "not a Keras model file"),
    "zip of something else": (lambda d: [_zip(d / "photos.keras", {"a.jpg": "x"})], "no config.json"),
    "corrupt keras config": (lambda d: [_zip(d / "bad.keras", {"config.json": "{not json"})], "corrupt config.json"),
    "keras config of no model": (
        lambda d: [
            _zip(
                d / "odd.keras",
                {
                    "config.json": json.dumps({"class_name": "Nope", "config": {}}),
                    "metadata.json": json.dumps({"keras_version": "3.15.1"}),
                },
            )
        ],
        "cannot load model",
    ),
    "output is not a classifier's": (lambda d: [_non_classifier(d / "seg.keras")], "a classifier outputs"),
    "lambda layer": (lambda d: [_lambda_model(d / "lambda.keras")], "--unsafe-load"),
    "lambda layer in a SavedModel folder": (lambda d: [_lambda_tf_keras(d / "lambda_savedmodel")], "--unsafe-load"),
    "data shape mismatch": (
        lambda d: ["model.keras", "--data", _npz(d / "big.npz", shape=(28, 28, 1))],
        "but the model expects (8, 8, 1)",
    ),
    "labels outside classes": (
        lambda d: ["model.keras", "--data", _npz(d / "shifted.npz", y_shift=3)],
        "outside the model's 10 classes",
    ),
    "nan in data": (lambda d: ["model.keras", "--data", _npz(d / "nan.npz", nan=True)], "NaN or Inf"),
    "empty test split": (lambda d: ["model.keras", "--data", _npz(d / "empty.npz", empty_test=True)], "no samples"),
    "too few samples": (lambda d: ["model.keras", "--data", _npz(d / "few.npz", n_train=6)], "needs at least 10"),
    "missing data file": (lambda d: ["model.keras", "--data", "nothere.npz"], "data file not found"),
    "unknown quantization": (lambda d: ["model.keras", "--quant", "int3"], "unknown quantization 'int3'; known:"),
    "unknown format": (lambda d: ["model.keras", "--formats", "coreml"], "unknown format 'coreml'; known:"),
    "unknown backend": (lambda d: ["model.keras", "--tflite-backend", "tvm"], "known: converter, litert, both"),
    "unknown calibration": (lambda d: ["model.keras", "--onnx-calibration", "kl"], "known: minmax, entropy"),
    "sparsity out of range": (lambda d: ["model.keras", "--sparsity", "1.5"], "outside [0, 1)"),
    "sparsity not a number": (lambda d: ["model.keras", "--sparsity", "lots"], "not a number"),
    "out is a file": (lambda d: ["model.keras", "--out", (d / "taken").write_text("x") and "taken"], "is a file"),
    "default model on text data": (
        lambda d: ["--data", "synthetic_text"],
        "digits_cnn cannot take synthetic_text",
    ),
    "npy instead of npz": (
        lambda d: ["model.keras", "--data", (np.save(d / "x.npy", np.zeros(3)) or "x.npy")],
        "not an .npz archive",
    ),
    "csv instead of npz": (
        lambda d: ["model.keras", "--data", (d / "x.csv").write_text("1,2\n") and "x.csv"],
        "not an .npz archive",
    ),
    "out under a file": (
        lambda d: ["model.keras", "--out", (d / "plain").write_text("x") and "plain/run"],
        "which is a file",
    ),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_tf_keras_file):
    folder = tmp_path_factory.mktemp("bad-input")
    (folder / "model.keras").write_bytes(tiny_tf_keras_file.read_bytes())
    return folder


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(case, workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    make_args, message = BAD_INPUTS[case]
    args = make_args(workdir)
    if "--out" not in args:
        args += ["--out", "out"]
    before = snapshot(workdir)
    code = main(["compress", *args])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("effkit: error: "), captured.err
    assert message in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert snapshot(workdir) == before  # inputs byte-identical, nothing written
    assert not (workdir / "out").exists()


@pytest.mark.parametrize("case", ["missing model", "labels outside classes"])
def test_bad_input_in_a_real_process(case, workdir):
    make_args, message = BAD_INPUTS[case]
    args = [*make_args(workdir), "--out", "out"]
    result = run_effkit("compress", *args, cwd=workdir, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and message in result.stderr
    assert not (workdir / "out").exists()


def test_a_lambda_model_loads_with_unsafe_load(tmp_path, digits):
    path = tmp_path / "lambda.keras"
    _lambda_model(path)
    loaded = keras_compat.load_model(path, safe_mode=False)
    assert keras_compat.max_output_diff(loaded.original, loaded.model, digits.x_test[:32]) <= 1e-6
    config = CompressConfig(sparsities=(), quantizations=(Quant.NONE,), latency=FAST_LATENCY)
    report = compress(path, digits, config=config, out_dir=tmp_path / "out", safe_mode=False)
    assert [v.name for v in report.variants] == ["baseline-keras", "baseline-tflite-none", "baseline-onnx-none"]
    assert all(v.status == Status.OK for v in report.variants)


def test_existing_results_are_kept_unless_overwrite(tiny_model, digits, tmp_path):
    config = CompressConfig(sparsities=(), quantizations=(Quant.NONE,), formats=(Format.TFLITE,), latency=FAST_LATENCY)
    out = tmp_path / "out"
    compress(tiny_model, digits, config=config, out_dir=out)
    (out / "notes.txt").write_text("mine")
    mine = out / "artifacts" / "mine.tflite"
    mine.write_bytes(b"a file the report does not name")
    before = snapshot(out)
    with pytest.raises(InputError, match=r"already holds effkit results.*--overwrite"):
        compress(tiny_model, digits, config=config, out_dir=out)
    assert snapshot(out) == before
    smaller = CompressConfig(sparsities=(), quantizations=(Quant.NONE,), formats=(Format.ONNX,), latency=FAST_LATENCY)
    compress(tiny_model, digits, config=smaller, out_dir=out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and mine.read_bytes().startswith(b"a file")  # never touched
    assert not (out / "artifacts" / "baseline-tflite-none.tflite").exists()  # the earlier run's own artifact is gone
    assert (out / "artifacts" / "baseline-onnx-none.onnx").exists()
    assert Report.from_json((out / "report.json").read_text()).complete


def test_a_non_empty_folder_without_a_report_is_refused(tiny_model, digits, tmp_path):
    out = tmp_path / "project"
    (out / "artifacts").mkdir(parents=True)
    (out / "artifacts" / "precious.bin").write_bytes(b"keep me")
    (out / "report.md").write_text("my own notes")
    before = snapshot(out)
    with pytest.raises(InputError, match="not empty and holds no effkit report"):
        compress(tiny_model, digits, config=CompressConfig(sparsities=()), out_dir=out)
    assert snapshot(out) == before


def test_a_forced_failure_reports_every_other_variant_and_exits_3(tiny_tf_keras_file, tmp_path, monkeypatch, capsys):
    _replace_recipe(monkeypatch, Format.TFLITE, Quant.FLOAT16, _not_a_flatbuffer)
    out = tmp_path / "out"
    args = ["compress", str(tiny_tf_keras_file), "--out", str(out), "--sparsity", "", "--formats", "tflite", "--quiet"]
    assert main(args) == 3
    assert "effkit: baseline-tflite-float16 failed: LiteRT cannot load" in capsys.readouterr().err
    report = Report.from_json((out / "report.json").read_text())
    assert [v.name for v in report.variants if v.status != Status.OK] == ["baseline-tflite-float16"]
    assert len(report.variants) == 7 and report.complete


def _incomplete_but_whole(out):
    """What an interrupted run leaves: a report marked incomplete with what was finished, whole files only."""
    report = Report.from_json((out / "report.json").read_text())
    assert report.complete is False
    assert "Incomplete" in (out / "report.md").read_text()
    assert 2 <= len(report.variants) < 20
    assert not [p for p in out.rglob("*") if ".partial-" in p.name]
    from effkit.export.onnx import validate_onnx
    from effkit.export.tflite import validate_tflite

    for artifact in (out / "artifacts").iterdir():  # whatever exists is a whole, loadable file
        {".tflite": validate_tflite, ".onnx": validate_onnx}.get(artifact.suffix, lambda p: keras_compat.load_model(p))(
            artifact
        )


def test_sigterm_leaves_complete_files_and_an_incomplete_report(tiny_tf_keras_file, tmp_path, capsys):
    """SIGTERM (what a CI runner or `kill` sends) to this very process, once a few variants are measured: the
    command's handler turns it into the same orderly stop as Ctrl-C (test below, in a process of its own)."""
    import logging
    import os

    class Terminate(logging.Filter):  # a filter: the command replaces the logger's handlers, not its filters
        def filter(self, record):
            if "baseline-tflite-dynamic " in record.getMessage():
                os.kill(os.getpid(), signal.SIGTERM)
            return True

    out = tmp_path / "out"
    logger = logging.getLogger("effkit")
    trigger = Terminate()
    logger.addFilter(trigger)
    args = ["compress", str(tiny_tf_keras_file), "--out", str(out), "--sparsity", "0.5", "--prune-epochs", "2"]
    previous = signal.getsignal(signal.SIGTERM)
    try:
        code = main(args)
    finally:
        logger.removeFilter(trigger)
        signal.signal(signal.SIGTERM, previous)
    assert code == 130
    _incomplete_but_whole(out)


@pytest.mark.slow
def test_ctrl_c_leaves_complete_files_and_an_incomplete_report(tiny_tf_keras_file, tmp_path):
    out = tmp_path / "out"
    args = ["compress", str(tiny_tf_keras_file), "--out", str(out), "--sparsity", "0.5", "--prune-epochs", "2"]
    code, stderr = ctrl_c_when("baseline-tflite-dynamic ", *args)  # a few variants measured, then Ctrl-C
    assert code == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    _incomplete_but_whole(out)


@pytest.mark.slow
def test_same_seed_same_accuracies_and_identical_artifacts(compressed, tiny_model, digits, fast_config, tmp_path):
    """A second run with the settings of the shared one (same model, data and seed): the same accuracies and
    byte-identical .tflite and .onnx files."""
    first, first_out = compressed
    second = compress(tiny_model, digits, config=fast_config, out_dir=tmp_path / "b", name="tiny_cnn")
    assert [(v.name, v.top1, v.sparsity) for v in first.variants] == [
        (v.name, v.top1, v.sparsity) for v in second.variants
    ]
    compared = 0
    for variant in first.variants:
        if variant.format in ("tflite", "onnx"):
            a, b = first_out / variant.path, tmp_path / "b" / variant.path
            assert a.read_bytes() == b.read_bytes(), variant.name
            compared += 1
    assert compared == 27  # (6 TFLite + 3 ONNX) for the baseline, pruned50 and pruned80
