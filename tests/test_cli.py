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


@pytest.fixture(scope="module")
def cli_run(workdir):
    """`effkit compress model.keras --out run1 ...` in a real process: (the finished process, the folder's files
    before it ran)."""
    before = snapshot(workdir)
    args = ["model.keras", "--out", "run1", "--sparsity", "0.5", "--quant", "int8", "--formats", "tflite"]
    return run_effkit("compress", *args, "--prune-epochs", "2", cwd=workdir), before


@pytest.mark.slow
def test_compress_end_to_end_writes_only_into_out(cli_run, workdir):
    result, before = cli_run
    assert result.returncode == 0, result.stderr
    assert "| ★ |" in result.stdout and "Recommended:" in result.stdout
    assert "pruned50-tflite-int8" in result.stdout
    assert "- mcu (TFLite Micro, full integer): `" in result.stdout and "TFLM arena KiB" in result.stdout
    from effkit.cpu import fingerprint

    assert f"Measured on {fingerprint().describe()}." in result.stdout  # figures name the CPU they come from
    assert "Traceback" not in result.stderr
    assert "training" not in result.stderr and "prune 50% epoch 2/2" in result.stderr
    after = snapshot(workdir)
    new = {p for p in after if p not in before and p.parts[0] != "dist"}  # dist/: the bundle tests' own output
    assert all(p.parts[0] == "run1" for p in new)
    assert {before[p] == after[p] for p in before} == {True}  # the input model is byte-identical
    assert {"run1/report.json", "run1/report.md", "run1/artifacts/pruned50-tflite-int8.tflite"} <= {str(p) for p in new}


@pytest.mark.slow
def test_bundle_and_verify_from_the_command_line(cli_run, workdir, tmp_path):
    """The README's Deploy commands as a user types them; the source model's file is named and hashed."""
    import hashlib
    import json
    import shutil

    assert cli_run[0].returncode == 0, cli_run[0].stderr
    made = run_effkit("bundle", "run1", "--target", "mobile", "--out", "dist/digits", cwd=workdir)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("dist/digits: ") and " for mobile, model.tflite " in made.stdout
    manifest = json.loads((workdir / "dist" / "digits" / "manifest.json").read_text())
    source = manifest["provenance"]["source_model"]
    assert source["file"] == "model.keras"
    assert source["sha256"] == hashlib.sha256((workdir / "model.keras").read_bytes()).hexdigest()
    checked = run_effkit("verify", "dist/digits", cwd=workdir)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr  # LiteRT's INFO line stays quiet
    assert checked.stdout.startswith("dist/digits: ok: 256 golden samples, top-1 agreement 100.00%")

    # A damaged golden file (not a zip at all, or a zip cut short): one line naming it, exit 2, as for any bad input
    for damage in (b"not a zip file", b"PK\x03\x04" + bytes(40)):
        copied = shutil.copytree(workdir / "dist" / "digits", tmp_path / f"damaged-{len(damage)}")
        (copied / "golden.npz").write_bytes(damage)
        done = run_effkit("verify", str(copied), cwd=workdir)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.splitlines()) == 1 and "golden.npz" in done.stderr, done.stderr
        assert done.stderr.startswith("effkit: error: ") and "Traceback" not in done.stderr


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


def test_effkit_runs_without_ray_and_says_so_when_asked_for_it(monkeypatch):
    """Here, not in test_ray.py, which is skipped as a whole where Ray is not installed: exactly where this
    must hold."""
    from effkit.errors import ConfigError
    from effkit.suites.executors import InProcess
    from effkit.suites.run import executor_for

    code = "import sys, effkit, effkit.cli, effkit.suites, effkit.suites.executors; print('ray' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "False"
    assert isinstance(executor_for(None), InProcess)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    monkeypatch.delitem(sys.modules, "effkit.suites.ray", raising=False)
    with pytest.raises(ConfigError, match=r"pip install 'effkit\[ray\]'"):
        executor_for("local")


@pytest.mark.parametrize(("given", "seconds"), [("10m", 600.0), ("300s", 300.0), ("1.5h", 5400.0), ("90", 90.0)])
def test_budget_durations_reach_the_search_config(given, seconds):
    from effkit.cli import _compress_config, _parser

    config = _compress_config(_parser().parse_args(["compress", "--search", "size", "--budget", given]))
    assert config.search.budget_seconds == seconds and config.search.goal == "size"


@pytest.mark.parametrize(("given", "message"), [("10x", "is not a duration"), ("0m", "must be positive")])
def test_a_bad_budget_is_one_line_and_exit_2(given, message, capsys):
    from effkit.cli import main

    assert main(["compress", "--search", "size", "--budget", given, "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_the_devices_limits_parse_from_the_command_line():
    from effkit.cli import _compress_config, _parser

    args = ["compress", "--max-latency-ms", "0.01", "--max-flash", "64KiB", "--max-arena", "16k"]
    limits = _compress_config(_parser().parse_args(args)).limits
    assert (limits.latency_ms, limits.flash_bytes, limits.arena_bytes) == (0.01, 65536, 16384)
    assert _compress_config(_parser().parse_args(["compress"])).limits.flash_bytes is None


def test_the_mcu_target_brings_a_microcontrollers_limits_and_needs_a_search():
    from effkit.cli import _compress_config, _parser
    from effkit.errors import ConfigError

    config = _compress_config(_parser().parse_args(["compress", "--search", "flash", "--target", "mcu"]))
    assert config.search.target == "mcu" and config.limits.flash_bytes == 1024**2
    assert config.limits.arena_bytes == 256 * 1024
    given = _compress_config(_parser().parse_args(["compress", "--search", "flash", "--target", "mcu",
                                                   "--max-arena", "16KiB"]))  # fmt: skip
    assert given.limits.arena_bytes == 16384 and given.limits.flash_bytes == 1024**2
    with pytest.raises(ConfigError, match="--target restricts a search"):
        _compress_config(_parser().parse_args(["compress", "--target", "mcu"]))
