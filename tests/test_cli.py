"""The effkit command as a user meets it: a subprocess, real files, exit codes and stderr.

Bad input is covered case by case in test_robustness.py."""

import subprocess
import sys

import pytest

from .conftest import run_effkit, snapshot


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


@pytest.mark.slow
def test_compress_end_to_end_writes_only_into_out(workdir):
    before = snapshot(workdir)
    result = run_effkit(
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
    assert "- mcu (TFLite Micro, full integer): `" in result.stdout and "TFLM arena KiB" in result.stdout
    from effkit.cpu import fingerprint

    assert f"Measured on {fingerprint().describe()}." in result.stdout  # figures name the CPU they come from
    assert "Traceback" not in result.stderr
    assert "training" not in result.stderr and "prune 50% epoch 2/2" in result.stderr
    after = snapshot(workdir)
    new = {p for p in after if p not in before}
    assert all(p.parts[0] == "run1" for p in new)
    assert {before[p] == after[p] for p in before} == {True}  # the input model is byte-identical
    assert {"run1/report.json", "run1/report.md", "run1/artifacts/pruned50-tflite-int8.tflite"} <= {str(p) for p in new}


def test_cluster_and_qat_options_reach_the_config():
    from effkit.cli import _compress_config, _parser

    config = _compress_config(_parser().parse_args(["compress", "--sparsity", "0.8", "--clusters", "16,8", "--qat"]))
    assert config.sparsities == (0.8,) and config.clusters == (16, 8) and config.qat is True
    default = _compress_config(_parser().parse_args(["compress"]))
    assert default.clusters == () and default.qat is False


def test_a_bad_cluster_count_is_one_line_and_exit_2(capsys):
    from effkit.cli import main

    assert main(["compress", "--clusters", "16,2", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error == "effkit: error: cluster count 2 is outside [3, 256]\n"
