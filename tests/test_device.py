"""From the bundle to the device and back: `effkit-edge bench` times a bundle under effkit's protocol and writes a
signed result; `effkit report RUN --device` brings it into the run's report, and refuses what it cannot trust."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from effkit.cli import main as effkit_main
from effkit.edge import BundleError
from effkit.edge.cpu import fingerprint
from effkit.edge.device import RESULT, bench, read_result, signature, write_result
from effkit.edge.timing import DEFAULT, MAX_SAMPLES, Protocol, percentile, samples_ms
from effkit.ship.bundle import make_bundle

QUICK = Protocol(warmup_runs=2, warmup_seconds=0.0, min_runs=20, min_seconds=0.0)


@pytest.fixture(scope="module")
def run(compressed, tmp_path_factory):
    """A copy of the shared compress run (this module writes into its report) and its mobile bundle."""
    _, shared = compressed
    folder = shutil.copytree(shared, tmp_path_factory.mktemp("device") / "run")
    return folder, make_bundle(folder, target="mobile", out=folder.parent / "bundle").path


def test_bench_times_the_bundle_under_effkits_protocol_and_signs_the_result(run):
    from effkit.edge import sha256_file

    folder, bundle = run
    result = bench(bundle, batch=4, protocol=QUICK)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert result["bundle"]["variant"] == manifest["variant"]
    assert result["bundle"]["artifact_sha256"] == manifest["artifact"]["sha256"]
    report = json.loads((folder / "report.json").read_text())
    path = next(v["path"] for v in report["variants"] if v["name"] == manifest["variant"])
    assert result["bundle"]["source_sha256"] == sha256_file(folder / path)  # the run's file, before the metadata
    assert result["device"] == fingerprint().to_dict()  # the same parser as the machine that compresses
    latency = result["latency_ms"]
    assert latency["runs"] >= 20 and 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"]
    assert latency["throughput"] == pytest.approx(4 / (latency["mean"] / 1e3))
    assert result["runtime"]["batch"] == 4 and result["runtime"]["engine"] == "litert"
    assert result["peak_rss_bytes"] > 10 * 2**20
    assert result["protocol"]["min_runs"] == 20 and result["signature"] == signature(result)
    assert result["schema_version"] == 2 and len(result["samples_ms"]) == latency["runs"]  # 20-odd runs: all kept
    assert min(result["samples_ms"]) == pytest.approx(latency["min"], rel=1e-3)
    assert percentile(sorted(result["samples_ms"]), 50) == pytest.approx(latency["p50"], rel=1e-3)


def test_samples_are_an_evenly_spaced_subset_of_the_runs_in_the_order_timed():
    seconds = [(i + 1) * 1e-6 for i in range(2500)]  # 1 us, 2 us, ... 2.5 ms
    kept = samples_ms(seconds)
    assert len(kept) == 834 <= MAX_SAMPLES  # every third run
    assert kept[:3] == [0.001, 0.004, 0.007] and kept[-1] == 2.5  # run 2,500
    assert samples_ms([1.23456789e-3]) == [1.235]  # four significant digits
    assert len(samples_ms(seconds[:MAX_SAMPLES])) == MAX_SAMPLES


def test_a_version_1_result_without_samples_is_still_read(run, tmp_path):
    _, bundle = run
    result = bench(bundle, protocol=QUICK)
    older = {key: value for key, value in result.items() if key not in ("samples_ms", "signature")}
    older["schema_version"] = 1
    older["signature"] = signature(older)
    write_result(older, tmp_path / "v1.json")
    assert read_result(tmp_path / "v1.json") == older


def test_effkits_latency_defaults_are_the_devices_protocol():
    from effkit.config import LatencyConfig

    config = LatencyConfig()
    assert {key: getattr(config, key) for key in Protocol.__dataclass_fields__} == DEFAULT.__dict__


def test_the_device_command_writes_a_result_that_the_report_takes_beside_this_machines_p50(run, tmp_path):
    folder, bundle = run
    out = tmp_path / RESULT
    done = subprocess.run([sys.executable, "-m", "effkit.edge", "bench", str(bundle), "--out", str(out)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1 and "p50" in done.stdout and str(out) in done.stdout
    result = read_result(out)
    assert result["protocol"] == DEFAULT.__dict__
    assert effkit_main(["report", str(folder), "--device", str(out), "--quiet"]) == 0
    saved = json.loads((folder / "report.json").read_text())
    (entry,) = saved["devices"]
    assert entry["variant"] == result["bundle"]["variant"] and entry["latency_ms"] == result["latency_ms"]
    assert entry["kernels_key"] == fingerprint().kernels_key
    text = (folder / "report.md").read_text()
    assert "## On the device" in text and f"| `{entry['variant']}` |" in text
    assert effkit_main(["report", str(folder), "--device", str(out), "--quiet"]) == 0  # the same result once
    assert len(json.loads((folder / "report.json").read_text())["devices"]) == 1


def test_a_changed_or_mismatched_result_is_refused_in_one_line(run, tmp_path, capsys):
    folder, bundle = run
    result = bench(bundle, protocol=QUICK)
    changed = dict(result, latency_ms={**result["latency_ms"], "p50": 0.0001})
    write_result(changed, tmp_path / "changed.json")
    with pytest.raises(BundleError, match="was changed after effkit-edge wrote it"):
        read_result(tmp_path / "changed.json")
    before = (folder / "report.json").read_bytes()
    assert effkit_main(["report", str(folder), "--device", str(tmp_path / "changed.json")]) == 2
    assert "was changed" in capsys.readouterr().err
    # The result of another artifact: a run whose file of that variant has other bytes.
    other = shutil.copytree(folder, tmp_path / "other")
    write_result(result, tmp_path / "right.json")
    variant = json.loads((other / "report.json").read_text())
    path = next(v["path"] for v in variant["variants"] if v["name"] == result["bundle"]["variant"])
    data = bytearray((other / path).read_bytes())
    data[-1] ^= 0x01
    (other / path).write_bytes(bytes(data))
    assert effkit_main(["report", str(other), "--device", str(tmp_path / "right.json")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "is for another artifact" in err
    # A variant the run does not hold.
    renamed = dict(result, bundle={**result["bundle"], "variant": "nope"})
    renamed["signature"] = signature(renamed)
    write_result(renamed, tmp_path / "nope.json")
    assert effkit_main(["report", str(folder), "--device", str(tmp_path / "nope.json")]) == 2
    assert "variant 'nope', which the run" in capsys.readouterr().err
    assert (folder / "report.json").read_bytes() == before  # nothing written on a refusal


def test_a_result_from_a_newer_effkit_edge_is_refused(tmp_path):
    newer = {"schema": "effkit.device-result", "schema_version": 9}
    Path(tmp_path / "newer.json").write_text(json.dumps(newer))
    with pytest.raises(BundleError, match="schema version 9"):
        read_result(tmp_path / "newer.json")
