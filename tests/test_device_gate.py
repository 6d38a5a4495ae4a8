"""`effkit gate RESULT... --baseline devices.json`: device figures gated only against the same device's.

Every result here is a real `effkit-edge bench` of a real bundle (LiteRT on this machine). What the tests change in
one (its device fingerprint, its timings) is changed the way a device or a slower build would change it, then signed
again with `signature()`, as effkit-edge signs: only the gate's rule decides the verdict.
"""

from __future__ import annotations

import json
import re

import pytest

from effkit.cli import EXIT_REGRESSION
from effkit.cli import main as effkit_main
from effkit.edge.cpu import fingerprint
from effkit.edge.device import bench, signature, write_result
from effkit.edge.timing import Protocol
from effkit.ship.bundle import make_bundle
from effkit.suites.devices import BASELINE_SCHEMA
from effkit.suites.gate import Thresholds

QUICK = Protocol(warmup_runs=5, warmup_seconds=0.0, min_runs=200, min_seconds=0.05)


@pytest.fixture(scope="module")
def bundle(compressed, tmp_path_factory):
    """The shared compress run's mobile bundle."""
    _, run = compressed
    return make_bundle(run, target="mobile", out=tmp_path_factory.mktemp("gate") / "bundle").path


@pytest.fixture(scope="module")
def timed(bundle):
    """Two real results of the same bundle on this machine, one after the other: a baseline and a rerun."""
    return bench(bundle, protocol=QUICK), bench(bundle, protocol=QUICK)


def signed(result: dict, **changes) -> dict:
    """`result` with `changes`, signed again as effkit-edge signs."""
    changed = {key: value for key, value in result.items() if key != "signature"} | changes
    changed["signature"] = signature(changed)
    return changed


def slower(result: dict, factor: float) -> dict:
    """`result` as if every run had taken `factor` times as long."""
    latency = {key: value * factor if key in ("p50", "p90", "p99", "mean", "min") else value
               for key, value in result["latency_ms"].items()}  # fmt: skip
    return signed(result, latency_ms=latency, samples_ms=[value * factor for value in result["samples_ms"]])


def on_device(result: dict, **fields) -> dict:
    """`result` as if timed on a device whose fingerprint differs in `fields`."""
    return signed(result, device={**result["device"], **fields})


def gate(tmp_path, capsys, baseline: list[dict], results: list[dict], *options: str) -> tuple[int, str, str]:
    """Write `baseline` with --update-baseline, then gate `results` against it: (exit code, stdout, stderr)."""
    path = tmp_path / "devices.json"
    files = [write_result(result, tmp_path / f"baseline-{i}.json") for i, result in enumerate(baseline)]
    assert effkit_main(["gate", *map(str, files), "--baseline", str(path), "--update-baseline"]) == 0
    capsys.readouterr()
    files = [write_result(result, tmp_path / f"result-{i}.json") for i, result in enumerate(results)]
    code = effkit_main(["gate", *map(str, files), "--baseline", str(path), *options])
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> list[list[str]]:
    """The table's body rows, as cells."""
    lines = [line for line in out.splitlines() if line.startswith("| ")][1:]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_a_rerun_on_the_same_device_is_compared_and_passes(timed, tmp_path, capsys):
    first, rerun = timed
    code, out, err = gate(tmp_path, capsys, [first], [rerun])
    assert code == 0, err
    ((bundle, variant, runtime, device, baseline_p50, p50, verdict, why),) = rows(out)
    assert variant == f"`{first['bundle']['variant']}`" and runtime == "litert, 1 thread(s), batch 1"
    assert bundle == f"`{first['bundle']['name']}`" and device == f"`{fingerprint().slug}`"
    assert verdict == "ok" and ": within " in why  # 30%, or the floor when this machine's burst hit one run
    assert float(baseline_p50) == pytest.approx(first["latency_ms"]["p50"], abs=1e-4)
    assert float(p50) == pytest.approx(rerun["latency_ms"]["p50"], abs=1e-4)
    assert "1 compared, 0 not comparable" in out


def test_samples_half_again_as_slow_are_a_regression_with_their_row(timed, tmp_path, capsys):
    first, _ = timed
    code, out, err = gate(tmp_path, capsys, [first], [slower(first, 1.5)], "--latency-floor-ms", "0")
    assert code == EXIT_REGRESSION
    ((*_, verdict, why),) = rows(out)
    assert verdict == "regression" and why.startswith("+50%") and "> 30%" in why
    p_value = float(re.search(r"Mann-Whitney p=([0-9.e+-]+)", why).group(1))
    assert p_value < 0.05 and "significant" in why
    assert err.strip() == f"effkit: 1 device regression(s) against {tmp_path / 'devices.json'}"


def test_a_slowdown_within_the_floor_or_not_seen_by_the_rank_test_is_not_counted(timed, tmp_path, capsys):
    first, _ = timed
    excess = first["latency_ms"]["p50"] * 0.5
    floor = f"{excess * 2:.6f}"
    code, out, _ = gate(tmp_path, capsys, [first], [slower(first, 1.5)], "--latency-floor-ms", floor)
    ((*_, verdict, why),) = rows(out)
    assert code == 0 and verdict == "ok" and f"within the {float(floor):g} ms floor" in why
    # The headline p50 half again as slow, but its runs are the baseline's own: the rank test finds nothing.
    headline = signed(first, latency_ms={**first["latency_ms"], "p50": first["latency_ms"]["p50"] * 1.5})
    code, out, _ = gate(tmp_path, capsys, [first], [headline], "--latency-floor-ms", "0")
    ((*_, verdict, why),) = rows(out)
    assert code == 0 and verdict == "noise" and "(noise: Mann-Whitney p=" in why


def test_a_baseline_from_a_version_1_result_is_judged_on_p50_alone(timed, tmp_path, capsys):
    first, _ = timed
    older = {key: value for key, value in first.items() if key != "samples_ms"}
    older = signed(older, schema_version=1)
    code, out, _ = gate(tmp_path, capsys, [older], [slower(first, 1.5)], "--latency-floor-ms", "0")
    ((*_, verdict, why),) = rows(out)
    assert code == EXIT_REGRESSION and verdict == "regression" and "judged on p50" in why


def test_another_devices_result_is_not_comparable_and_says_what_differs(timed, tmp_path, capsys):
    first, rerun = timed
    features = [f for f in first["device"]["features"] if f != "avx_vnni"]
    without_vnni = on_device(first, features=features)
    with_vnni = on_device(rerun, features=[*features, "avx_vnni"])
    other_generation = on_device(slower(rerun, 3.0), family="999", model_number="998")
    code, out, err = gate(tmp_path, capsys, [without_vnni], [with_vnni, other_generation], "--latency-floor-ms", "0")
    assert code == 0, err  # three times as slow, but on another CPU: never failed
    found = {row[3]: row for row in rows(out)}
    vnni, generation = (found[f"`{_slug(r)}`"] for r in (with_vnni, other_generation))
    assert (
        vnni[4] == "" and vnni[6] == "not comparable" and vnni[7] == "no baseline from this device: avx_vnni here only"
    )
    assert generation[6] == "not comparable"
    assert generation[7].startswith("no baseline from this device: family 999 here, ")
    assert "model 998 here, " in generation[7]
    assert "0 compared, 2 not comparable" in out


def test_a_bundle_or_setting_the_baseline_lacks_is_not_comparable(timed, tmp_path, capsys):
    first, rerun = timed
    renamed = signed(rerun, bundle={**rerun["bundle"], "variant": "pruned99-tflite-int8"})
    batched = signed(rerun, runtime={**rerun["runtime"], "batch": 8})
    code, out, _ = gate(tmp_path, capsys, [first], [renamed, batched])
    assert code == 0
    why = {row[1]: (row[6], row[7]) for row in rows(out)}
    assert why["`pruned99-tflite-int8`"] == ("not comparable", "no baseline for this bundle")
    verdict, reason = why[f"`{first['bundle']['variant']}`"]
    assert verdict == "not comparable"
    assert (
        reason
        == "no baseline for this bundle at litert, 1 thread(s), batch 8 (the baseline has litert, 1 thread(s), batch 1)"
    )


def test_update_replaces_the_same_devices_entry_and_keeps_other_devices(timed, tmp_path, capsys):
    first, rerun = timed
    other = on_device(first, family="999")
    path = tmp_path / "devices.json"
    for i, results in enumerate(([first, other], [rerun])):
        files = [write_result(result, tmp_path / f"{i}-{j}.json") for j, result in enumerate(results)]
        assert effkit_main(["gate", *map(str, files), "--baseline", str(path), "--update-baseline"]) == 0
    data = json.loads(path.read_text())
    assert data["schema"] == BASELINE_SCHEMA and data["schema_version"] == 1
    assert sorted(entry["signature"] for entry in data["entries"]) == sorted([rerun["signature"], other["signature"]])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # written by a rename
    assert "1 result(s) written, 1 other entries kept" in capsys.readouterr().out


def test_a_changed_result_or_baseline_is_refused_in_one_line_and_nothing_is_written(timed, tmp_path, capsys):
    first, rerun = timed
    path = tmp_path / "devices.json"
    write_result(first, tmp_path / "first.json")
    assert effkit_main(["gate", str(tmp_path / "first.json"), "--baseline", str(path), "--update-baseline"]) == 0
    before = path.read_bytes()
    capsys.readouterr()
    changed = dict(rerun, latency_ms={**rerun["latency_ms"], "p50": 0.0001})  # edited without signing again
    write_result(changed, tmp_path / "changed.json")
    for options in ([], ["--update-baseline"]):
        assert effkit_main(["gate", str(tmp_path / "changed.json"), "--baseline", str(path), *options]) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1 and "was changed after effkit-edge wrote it" in err
    assert path.read_bytes() == before
    # An entry of the baseline edited by hand is refused like a result.
    data = json.loads(before)
    data["entries"][0]["latency_ms"]["p50"] *= 10
    path.write_text(json.dumps(data))
    write_result(rerun, tmp_path / "rerun.json")
    assert effkit_main(["gate", str(tmp_path / "rerun.json"), "--baseline", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{path} entry 0 was changed" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "device baseline not found"),
        ("{not json", "is not JSON"),
        (json.dumps({"schema": "effkit.results"}), "is not a device baseline"),
        (json.dumps({"schema": BASELINE_SCHEMA, "schema_version": 7, "entries": []}), "schema version 7"),
    ],
)
def test_a_missing_or_foreign_baseline_is_refused_in_one_line(timed, tmp_path, capsys, content, message):
    path = tmp_path / "devices.json"
    if content is not None:
        path.write_text(content)
    write_result(timed[0], tmp_path / "result.json")
    assert effkit_main(["gate", str(tmp_path / "result.json"), "--baseline", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_a_signed_result_without_usable_figures_is_refused_in_one_line(timed, tmp_path, capsys):
    broken = signed(timed[0], latency_ms={"p50": "fast"})
    write_result(broken, tmp_path / "broken.json")
    assert (
        effkit_main(
            ["gate", str(tmp_path / "broken.json"), "--baseline", str(tmp_path / "b.json"), "--update-baseline"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "holds no usable latency" in err
    assert not (tmp_path / "b.json").exists()


def test_the_gate_options_say_the_bench_gates_defaults(capsys):
    with pytest.raises(SystemExit):
        effkit_main(["gate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    limits = Thresholds()
    for option in ("--latency-slowdown-pct", "--latency-floor-ms", "--latency-p-value"):
        value = getattr(limits, option[2:].replace("-", "_"))
        assert re.search(rf"{option} \S+ .*?\(default: effkit bench's, {value:g}\)", text), option


def _slug(result: dict) -> str:
    from effkit.edge.cpu import CpuFingerprint

    return CpuFingerprint.from_dict(result["device"]).slug
