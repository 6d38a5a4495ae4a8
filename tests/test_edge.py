"""effkit bundle and effkit.edge: what a device gets, and that it runs there without TensorFlow.

The runtime-only check builds a real virtual environment holding only effkit/edge, numpy, ai-edge-litert and
onnxruntime with what they need (linked from this environment: no download), where `import tensorflow` fails.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import subprocess
import venv
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pytest

from effkit.edge import BundleError, load, read_manifest, verify
from effkit.errors import InputError
from effkit.runtime import open_runner
from effkit.ship.bundle import BundleRefused, make_bundle, read_embedded

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("numpy", "ai-edge-litert", "onnxruntime")


@pytest.fixture(scope="module")
def mobile(compressed, tmp_path_factory):
    _, run = compressed
    return make_bundle(run, target="mobile", out=tmp_path_factory.mktemp("b") / "digits")


@pytest.fixture(scope="module")
def onnx_bundle(compressed, tmp_path_factory):
    report, run = compressed
    name = next(v.name for v in report.variants if v.format == "onnx" and v.quantization == "int8" and v.ok)
    return make_bundle(run, target="mobile", variant=name, out=tmp_path_factory.mktemp("b") / "onnx")


@pytest.fixture(scope="module")
def mcu(compressed, tmp_path_factory):
    _, run = compressed
    return make_bundle(run, target="mcu", out=tmp_path_factory.mktemp("b") / "mcu", labels=list("0123456789"))


def test_the_mcu_bundle_is_full_integer_with_c_sources_that_compile(mcu, compressed, tmp_path):
    report, _ = compressed
    chosen = report.variant(mcu.variant)
    assert chosen.format == "tflite" and chosen.micro["runs"] and chosen.micro["full_integer"]
    assert mcu.variant == report.recommended_by_target["mcu"]
    manifest = read_manifest(mcu.path)
    micro = manifest["micro"]
    assert micro["arena_bytes_measured"] == chosen.micro["arena_bytes"] > 0
    # the README's margin: the measured arena times 1.25, rounded up to TFLite Micro's 16-byte alignment
    assert micro["arena_bytes"] == math.ceil(micro["arena_bytes_measured"] * 1.25 / 16) * 16
    assert micro["top1_agreement_with_litert"] >= 0.99
    assert manifest["input"]["tensor"]["dtype"] == "int8" and "scale" in manifest["outputs"][0]["tensor"]
    assert read_embedded(mcu.path / "model.tflite") is None  # flash is scarce: the header carries the metadata
    source = mcu.path / micro["source"]
    header = (mcu.path / micro["header"]).read_text()
    assert f"= {micro['arena_bytes']}," in header and all(f"resolver.{op}();" in header for op in micro["ops"])
    assert f"_model_data_len = {manifest['artifact']['size_bytes']};" in source.read_text()
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    done = subprocess.run(
        [compiler, "-std=c11", "-c", "-Wall", "-Werror", str(source), "-o", str(tmp_path / "model.o")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert verify(mcu.path).ok


def test_mcu_refuses_dynamic_range_and_onnx(compressed, tmp_path):
    report, run = compressed
    dynamic = next(v.name for v in report.variants if v.quantization == "dynamic" and v.format == "tflite" and v.ok)
    with pytest.raises(BundleRefused, match="hybrid"):
        make_bundle(run, target="mcu", variant=dynamic, out=tmp_path / "d")
    onnx = next(v.name for v in report.variants if v.format == "onnx" and v.ok)
    with pytest.raises(BundleRefused, match=r"TFLite Micro runs \.tflite files only"):
        make_bundle(run, target="mcu", variant=onnx, out=tmp_path / "o")
    assert not (tmp_path / "d").exists() and not (tmp_path / "o").exists()


def test_the_mobile_bundle_holds_what_a_device_needs(mobile, compressed):
    report, _ = compressed
    manifest = read_manifest(mobile.path)
    assert mobile.variant == report.recommended  # the report's pick, within its accuracy budget
    assert sorted(p.name for p in mobile.path.iterdir()) == ["golden.npz", "manifest.json", "model.tflite"]
    assert manifest["input"]["shape"] == [None, 8, 8, 1] and manifest["input"]["dtype"] == "float32"
    assert manifest["input"]["value_range"] == [0.0, 16.0]  # the raw digits the model was measured on
    (output,) = manifest["outputs"]
    assert output["kind"] == "probabilities" and output["labels"] == [str(i) for i in range(10)]
    assert manifest["measured"]["top1"] == report.variant(mobile.variant).top1
    assert manifest["measured"]["cpu"]["isa_class"] == report.environment["fingerprint"]["isa_class"]
    artifact = mobile.path / "model.tflite"
    assert manifest["artifact"]["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    # compressed from a model in memory: there is no file to hash (test_cli bundles one made from a file)
    assert manifest["provenance"]["source_model"] == {"name": "tiny_cnn", "file": None, "sha256": None}
    assert manifest["provenance"]["steps"] == [step.to_dict() for step in report.variant(mobile.variant).steps]
    assert manifest["golden"]["samples"] == min(256, report.data["test"])


def test_metadata_inside_the_file_leaves_it_running_as_measured(mobile, compressed):
    report, run = compressed
    embedded = read_embedded(mobile.path / "model.tflite")
    assert embedded["variant"] == mobile.variant and embedded["labels"][3] == "3"
    original = run / report.variant(mobile.variant).path
    x = np.load(mobile.path / "golden.npz")["x"]
    ours = open_runner(mobile.path / "model.tflite", "tflite").predict(x)[0]
    theirs = open_runner(original, "tflite").predict(x)[0]
    np.testing.assert_array_equal(ours, theirs)


def test_bundling_twice_writes_the_same_artifact(mobile, compressed, tmp_path):
    again = make_bundle(compressed[1], target="mobile", out=tmp_path / "again")
    assert (again.path / "model.tflite").read_bytes() == (mobile.path / "model.tflite").read_bytes()


def test_onnx_bundle_carries_its_metadata_and_verifies(onnx_bundle):
    embedded = read_embedded(onnx_bundle.path / "model.onnx")
    assert embedded["variant"] == onnx_bundle.variant
    assert verify(onnx_bundle.path).ok


@pytest.mark.parametrize(("types", "caveat"), [("u8s8", True), ("u8u8", False), ("s8s8", False)])
def test_an_onnx_u8s8_bundle_says_it_needs_an_int8_dot_product(types, caveat, compressed, tmp_path):
    """Whatever CPU made the run: its ONNX int8 steps are rewritten to each type, and only U8S8 (which saturates on
    AVX2-only x86) carries the portability caveat."""
    report, run = compressed
    copied = shutil.copytree(run, tmp_path / "run")
    data = json.loads((copied / "report.json").read_text())
    for variant in data["variants"]:
        for step in variant["steps"]:
            if step.get("format") == "onnx" and "types" in step:
                step["types"] = types
    (copied / "report.json").write_text(json.dumps(data))
    name = next(v.name for v in report.variants if v.format == "onnx" and v.quantization == "int8" and v.ok)
    portability = read_manifest(make_bundle(copied, target="mobile", variant=name, out=tmp_path / "b").path)[
        "portability"
    ]
    if caveat:
        (note,) = portability
        assert "U8S8" in note and "VNNI" in note and "--onnx-types u8u8" in note
    else:
        assert portability == []


def test_the_loader_classifies_raw_inputs(mobile, mcu, compressed):
    clf = load(mobile.path)
    with np.load(mobile.path / "golden.npz") as golden:
        x, labels = golden["x"], golden["labels"]
    ranked = clf.classify(x[0], top=3)
    assert len(ranked) == 3 and ranked[0][1] >= ranked[1][1] >= ranked[2][1]
    # the scores sum to 1 within the output's own rounding: half a quantization step per class for an int8 file
    # (the mobile pick's kind depends on this CPU's timings; the mcu bundle is always full integer)
    for bundle in (clf, load(mcu.path)):
        step = bundle.outputs[0]["tensor"].get("scale", 0.0)
        assert abs(sum(score for _, score in bundle.classify(x[0], top=10)) - 1.0) <= 10 * step / 2 + 1e-4
    assert load(mcu.path).outputs[0]["tensor"]["scale"] > 0
    predicted = np.array([int(row[0][0]) for row in clf.classify(x, top=1)])
    assert np.mean(predicted == labels) > 0.9
    assert clf.predict(x[:5]).shape == (5, 10) and clf.predict(x[0]).shape == (10,)
    with pytest.raises(BundleError, match="does not fit"):
        clf.predict(np.zeros((2, 7, 7, 1)))


def test_verify_fails_when_the_runtime_computes_differently(mobile, tmp_path):
    copy = shutil.copytree(mobile.path, tmp_path / "copy")
    with np.load(copy / "golden.npz") as golden:
        data = dict(golden)
    data["y0"] = np.roll(data["y0"], 1, axis=1)  # as if the device's kernels got other answers
    np.savez(copy / "golden.npz", **data)
    verdict = verify(copy)
    assert not verdict.ok and "top-1 agreement" in verdict.reason and "\n" not in verdict.line()


def test_bundle_refuses_what_it_cannot_ship(compressed, tmp_path, mobile):
    _, run = compressed
    with pytest.raises(BundleRefused, match="is a keras model"):
        make_bundle(run, target="mobile", variant="baseline-keras", out=tmp_path / "k")
    with pytest.raises(InputError, match="no variant named"):
        make_bundle(run, target="mobile", variant="nope", out=tmp_path / "n")
    with pytest.raises(InputError, match=r"holds no report\.json"):
        make_bundle(tmp_path, target="mobile", out=tmp_path / "x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="holds no bundle"):
        make_bundle(run, target="mobile", out=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(InputError, match="--overwrite"):
        make_bundle(run, target="mobile", out=mobile.path)
    assert not list(tmp_path.glob(".*partial*"))


def _site_packages(env: Path) -> Path:
    return next((env / "lib").glob("python3*/site-packages"))


def _runtime_only_env(where: Path) -> Path:
    """A virtual environment with effkit/edge and the runtimes' distributions linked in, and nothing else."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(where)
    site = _site_packages(where)
    seen: set[str] = set()
    todo = list(RUNTIMES)
    while todo:
        name = re.split(r"[ ;<>=!~\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        todo += [r for r in dist.requires or () if "extra ==" not in r]
        for top in {Path(str(f)).parts[0] for f in dist.files or ()}:
            source = Path(dist.locate_file(top))
            if source.exists() and not (site / top).exists() and top not in ("..", "bin"):
                (site / top).symlink_to(source)
    (site / "effkit").mkdir()  # a namespace package: effkit/edge only, as `pip install ./effkit/edge` leaves it
    shutil.copytree(ROOT / "effkit" / "edge", site / "effkit" / "edge", ignore=shutil.ignore_patterns("__pycache__"))
    return where / "bin" / "python"


@pytest.mark.slow
def test_a_device_without_tensorflow_loads_verifies_and_rejects_a_changed_file(mobile, onnx_bundle, mcu, tmp_path):
    python = _runtime_only_env(tmp_path / "env")
    probe = subprocess.run(
        [python, "-c", "import effkit.edge, numpy, ai_edge_litert, onnxruntime; import tensorflow"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert "No module named 'tensorflow'" in probe.stderr  # the runtimes import; TensorFlow does not
    for bundle in (mobile.path, onnx_bundle.path, mcu.path):
        done = subprocess.run(
            [python, "-m", "effkit.edge", "verify", str(bundle)], capture_output=True, text=True, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        assert "ok: 256 golden samples" in done.stdout and done.stderr == ""  # LiteRT's INFO line stays quiet
    changed = shutil.copytree(mobile.path, tmp_path / "changed")
    data = bytearray((changed / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0x01
    (changed / "model.tflite").write_bytes(bytes(data))
    done = subprocess.run(
        [python, "-m", "effkit.edge", "verify", str(changed)], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("effkit-edge: error: ") and "sha256" in done.stderr
    classify = subprocess.run(
        [
            python,
            "-c",
            f"from effkit.edge import load; import json; print(json.dumps(load({str(mobile.path)!r})"
            f".classify(__import__('numpy').load({str(mobile.path / 'golden.npz')!r})['x'][0], top=2)))",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert classify.returncode == 0, classify.stderr
    assert len(json.loads(classify.stdout)) == 2


def test_a_newer_manifest_schema_is_refused(mobile, tmp_path):
    copied = shutil.copytree(mobile.path, tmp_path / "newer")
    manifest = json.loads((copied / "manifest.json").read_text())
    manifest["schema_version"] = 2
    (copied / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema version 2; this reader reads up to 1: upgrade effkit-edge"):
        load(copied)


def test_mcu_refuses_a_file_tflite_micro_computes_differently(compressed, tmp_path, monkeypatch):
    """TFLite Micro's kernels here agree with LiteRT on every golden sample; a device whose kernels do not is played
    by shifting the real predictions' classes for 3 of the 256 samples (98.8%, below the 99% bundling needs)."""
    from effkit.ship import micro

    measured = micro.micro_predict

    def computed_differently(path, x, **options):
        outputs = np.array(measured(path, x, **options))
        outputs[:3] = np.roll(outputs[:3], 1, axis=1)
        return outputs

    monkeypatch.setattr(micro, "micro_predict", computed_differently)
    with pytest.raises(BundleRefused, match=r"TFLite Micro agrees with LiteRT on only 98\.8% of 256 golden samples"):
        make_bundle(compressed[1], target="mcu", out=tmp_path / "mcu")
    assert not (tmp_path / "mcu").exists() and not list(tmp_path.glob(".*partial*"))
