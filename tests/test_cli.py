"""The effkit command as a user meets it: a subprocess, real files, exit codes and stderr."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "effkit", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_help_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from effkit.cli import main\n"
        "for argv in (['--help'], ['compress', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('tensorflow', 'tf_keras', 'keras', 'onnxruntime', 'tf2onnx') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
    assert "--sparsity" in result.stdout and "--max-accuracy-drop" in result.stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_tf_keras_file):
    folder = tmp_path_factory.mktemp("cli")
    model = folder / "model.keras"
    model.write_bytes(tiny_tf_keras_file.read_bytes())
    return folder


def _snapshot(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def test_compress_end_to_end_writes_only_into_out(workdir):
    before = _snapshot(workdir)
    result = run(
        "compress",
        "model.keras",
        "--out",
        "run1",
        "--sparsity",
        "0.5",
        "--quant",
        "int8",
        "--formats",
        "tflite,onnx",
        "--prune-epochs",
        "2",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    assert "| ★ |" in result.stdout and "Recommended:" in result.stdout
    assert "pruned50-tflite-int8" in result.stdout
    assert "Traceback" not in result.stderr
    assert "training" not in result.stderr and "prune 50% epoch 2/2" in result.stderr
    after = _snapshot(workdir)
    new = {p for p in after if p not in before}
    assert all(p.parts[0] == "run1" for p in new)
    assert {before[p] == after[p] for p in before} == {True}  # the input model is byte-identical
    assert {"run1/report.json", "run1/report.md", "run1/artifacts/pruned50-tflite-int8.tflite"} <= {str(p) for p in new}


def _npz(path, *, y_shift=0, drop=None):
    rng = np.random.default_rng(0)
    arrays = dict(
        x_train=rng.uniform(0, 16, (40, 8, 8, 1)).astype("float32"),
        y_train=(np.arange(40) % 10) + y_shift,
        x_test=rng.uniform(0, 16, (20, 8, 8, 1)).astype("float32"),
        y_test=(np.arange(20) % 10) + y_shift,
    )
    if drop:
        del arrays[drop]
    np.savez(path, **arrays)
    return path.name


BAD_INPUTS = {
    "missing model": (lambda d: ["missing.keras"], "model not found: missing.keras"),
    "text as model": (lambda d: [(d / "notes.txt").write_text("hi") and "notes.txt"], "not a Keras model file"),
    "npz without y_test": (
        lambda d: ["model.keras", "--data", _npz(d / "nolabels.npz", drop="y_test")],
        "lacks y_test",
    ),
    "labels outside classes": (
        lambda d: ["model.keras", "--data", _npz(d / "shifted.npz", y_shift=3)],
        "outside the model's 10 classes",
    ),
    "unknown quantization": (lambda d: ["model.keras", "--quant", "int3"], "unknown quantization 'int3'; known:"),
    "sparsity out of range": (lambda d: ["model.keras", "--sparsity", "1.5"], "outside [0, 1)"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_gives_one_line_and_exit_code_2(case, workdir):
    make_args, message = BAD_INPUTS[case]
    args = make_args(workdir)
    before = _snapshot(workdir)
    result = run("compress", *args, "--out", "bad-out", cwd=workdir)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("effkit: error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert _snapshot(workdir) == before
    assert not (workdir / "bad-out").exists()
