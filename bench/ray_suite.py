"""Benchmark: a suite in sequence and on Ray (issue #13), on this machine.

Runs `effkit bench SUITE` twice, each in a fresh process and a fresh output folder (reference models trained in
both): first in sequence, then with `--ray` (a local Ray on this machine). Then it checks that

- the Ray run took at most --target times the sequential wall time            target <= 0.75
- every model and variant has the same status, top-1, raw size and gzip size (gzip of .keras files aside:
  Keras stamps them with the time they were saved)
- every artifact but the .keras files is byte-identical (sha256)
- the Ray run's latency passes the gate with the sequential run as its baseline (same CPU class, ratios to the
  reference artifact of the same run, suspects re-timed as the gate always does)

and writes DIR/ray_suite.json with both wall times, the ratio and every mismatch.

Usage: python bench/ray_suite.py bench/suites/quick.toml --out DIR
       python bench/ray_suite.py SUITE --out DIR --only sequential   # one run now, ...
       python bench/ray_suite.py SUITE --out DIR --only ray          # ...the other later, then the checks

Each run leaves DIR/<mode>.run.json (wall time, exit code, commit, CPU class, when it started); the checks run once
both are there, and refuse runs made on different CPU classes. Nothing else may run on the machine during a run:
the wall times are the measurement.
Exit code 0 when every check passes, 1 otherwise (2: bad arguments, 3: only one run so far).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from effkit.cpu import fingerprint
from effkit.report.results import SuiteResult
from effkit.suites import gate, load_suite

MODES = ("sequential", "ray")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", help="suite file, e.g. bench/suites/quick.toml")
    parser.add_argument("--out", required=True, help="a new or empty folder: sequential/ and ray/ go inside")
    parser.add_argument("--target", type=float, default=0.75, help="largest Ray / sequential wall-time ratio")
    parser.add_argument("--only", choices=MODES, help="make one of the two runs now (the other before or later)")
    args = parser.parse_args()
    out = Path(args.out)
    suite = load_suite(args.suite)
    for mode in [args.only] if args.only else MODES:
        if (out / mode).exists():
            print(f"ray_suite: {out / mode} exists; choose a new --out (both runs must train from scratch)",
                  file=sys.stderr)  # fmt: skip
            return 2
    for mode in [args.only] if args.only else MODES:
        run = _run(args.suite, out, mode)
        print(f"ray_suite: {mode}: {run['wall_seconds']} s (exit {run['exit']})", flush=True)
    runs = {mode: _read_run(out, mode) for mode in MODES}
    if None in runs.values():
        print(f"ray_suite: {out} has the {args.only} run; run --only {next(m for m in MODES if not runs[m])} next")
        return 3
    classes = {mode: run["cpu_class"] for mode, run in runs.items()}
    if len(set(classes.values())) != 1:
        print(f"ray_suite: the runs were made on different CPU classes {classes}; nothing to compare", file=sys.stderr)
        return 2
    walls = {mode: run["wall_seconds"] for mode, run in runs.items()}
    sequential, ray = (_results(out / mode) for mode in ("sequential", "ray"))
    mismatches = _differences(sequential, ray, out)
    judged = gate(ray, out / "sequential" / "results.json", suite.thresholds, out / "ray").gate
    ratio = round(walls["ray"] / walls["sequential"], 3)
    variants = sum(len(m.variants) for m in sequential.models)
    summary = {
        "suite": suite.name,
        "cpu_class": fingerprint().isa_class,
        "cores": fingerprint().cores,
        "models": len(sequential.models),
        "variants": variants,
        "wall_seconds": walls,
        "runs": runs,
        "ratio": ratio,
        "target": args.target,
        "identical": not mismatches,
        "mismatches": mismatches,
        "latency_gate_passed": judged["passed"],
        "latency_compared": judged["latency_compared"],
        "regressions": judged["regressions"],
        "not_counted": judged["not_counted"],
    }
    (out / "ray_suite.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"ray_suite {suite.name} on {summary['cpu_class']} ({summary['cores']} cores), {len(sequential.models)} "
        f"models, {variants} variants: sequential {walls['sequential']} s, ray {walls['ray']} s, ratio {ratio} "
        f"(target <= {args.target})"
    )
    print(f"  accuracies, sizes and artifact sha256: {'identical' if not mismatches else 'DIFFER'}")
    for line in mismatches[:20]:
        print(f"    {line}")
    print(
        f"  latency gate, ray against sequential: {'passed' if judged['passed'] else 'FAILED'} "
        f"({len(judged['regressions'])} regressions, {len(judged['not_counted'])} not counted)"
    )
    for row in judged["regressions"]:
        where = f"{row['model']}/{row['variant']} {row['metric']}"
        print(f"    {where}: {row['baseline']} -> {row['current']} ({row['why']})")
    return 0 if ratio <= args.target and not mismatches and judged["passed"] else 1


def _run(suite: str, out: Path, mode: str) -> dict:
    """`effkit bench SUITE` in a fresh process (`--ray` for the Ray run), timed; its record is kept beside it."""
    extra = ["--ray"] if mode == "ray" else []
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    load = os.getloadavg()[0]  # another job on the machine would make this run slower
    commit = _commit()  # before the run: the working tree may change while it runs
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = subprocess.run(_effkit("bench", suite, "--out", str(out / mode), *extra), check=False)
    run = {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "exit": done.returncode,
        "started": when,
        "commit": commit,
        "cpu_class": fingerprint().isa_class,
        "load_before": load,
    }
    (out / f"{mode}.run.json").write_text(json.dumps(run, indent=2) + "\n")
    return run


def _read_run(out: Path, mode: str) -> dict | None:
    path = out / f"{mode}.run.json"
    return json.loads(path.read_text()) if path.exists() else None


def _commit() -> str:
    done = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def _effkit(*args: str) -> list[str]:
    effkit = Path(sys.executable).with_name("effkit")
    return [str(effkit), *args] if effkit.exists() else [sys.executable, "-m", "effkit", *args]


def _results(folder: Path) -> SuiteResult:
    return SuiteResult.from_dict(json.loads((folder / "results.json").read_text(encoding="utf-8")))


def _differences(sequential: SuiteResult, ray: SuiteResult, out: Path) -> list[str]:
    """Every difference in status, top-1, sizes and artifact bytes between the two runs, one line each."""
    lines = []
    if [m.name for m in sequential.models] != [m.name for m in ray.models]:
        lines.append(f"models: {[m.name for m in sequential.models]} vs {[m.name for m in ray.models]}")
    for model in sequential.models:
        other = ray.model(model.name)
        if other is None:
            continue
        if (model.status, model.baseline_top1) != (other.status, other.baseline_top1):
            lines.append(f"{model.name}: {model.status} {model.baseline_top1} vs {other.status} {other.baseline_top1}")
        if [v.name for v in model.variants] != [v.name for v in other.variants]:
            lines.append(f"{model.name}: variants differ")
        for a in model.variants:
            b = other.variant(a.name)
            if b is None:
                continue
            fields = ["status", "top1", "correct", "size_bytes"] + (["gzip_bytes"] if a.format != "keras" else [])
            for field in fields:
                if getattr(a, field) != getattr(b, field):
                    lines.append(f"{model.name}/{a.name} {field}: {getattr(a, field)} vs {getattr(b, field)}")
        hashes = [_artifact_hashes(out / mode / model.name) for mode in ("sequential", "ray")]
        if hashes[0] != hashes[1]:
            names = set(hashes[0]) | set(hashes[1])
            differing = sorted(name for name in names if hashes[0].get(name) != hashes[1].get(name))
            lines.append(f"{model.name}: artifacts differ: {', '.join(differing)}")
    return lines


def _artifact_hashes(folder: Path) -> dict[str, str]:
    artifacts = folder / "artifacts"
    if not artifacts.is_dir():
        return {}
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(artifacts.iterdir())
        if path.is_file() and path.suffix != ".keras"
    }


if __name__ == "__main__":
    sys.exit(main())
