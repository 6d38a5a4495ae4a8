"""Benchmark: the accuracy-aware search in one process and with --ray (issue #13), on this machine.

For each model, `effkit compress FILE --data DATA --search size` runs twice, each in a fresh process and a folder of
its own (so neither reads the other's sensitivity cache): first as is, then with `--ray` (a local Ray on this
machine: each model's quantized candidates are made in a task while the driver fine-tunes the next model). Then it
checks that both runs tried the same candidates with the same decisions, sizes and validation top-1, and recommend
the same candidate, and prints both wall times and their ratio, with the CPU class they were measured on.

The model files are the reference models `effkit bench` trains and caches (`effkit.models.reference_file`, in
OUT/models), on their offline stand-in data.

Usage: python bench/ray_search.py [--out DIR] [--models digits_cnn,fashion_cnn]
Writes DIR/ray_search.json. Exit code 0 when both runs of every model decided the same, 1 otherwise (the wall-time
ratio is reported, not gated: on two cores the driver's fine-tuning and one task share the machine).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from search_targets import effkit_command, model_file, offline_data

from effkit.cpu import fingerprint

MODES = {"in-process": [], "ray": ["--ray"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="working folder (default: a new temporary one)")
    parser.add_argument("--models", default="digits_cnn", help="reference models, comma-separated")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="effkit-ray-search-"))
    cpu = fingerprint()
    rows, same = [], True
    for name in args.models.split(","):
        path = model_file(name, out)
        runs = {}
        for mode, extra in MODES.items():
            folder = out / mode / name
            command = [*effkit_command(), "compress", str(path), "--data", offline_data(name), "--search", "size"]
            started = time.perf_counter()
            done = subprocess.run([*command, "--out", str(folder), *extra], capture_output=True, text=True)
            wall = round(time.perf_counter() - started, 1)
            if done.returncode not in (0, 3):  # 3: a variant failed, the report stands
                print(f"ray_search: {name} {mode} failed (exit {done.returncode}): {done.stderr.strip()[-400:]}")
                return 1
            report = json.loads((folder / "report.json").read_text())
            runs[mode] = {"wall_seconds": wall, "trace": _trace(report), "chosen": report["search"]["chosen"]}
        agree = runs["ray"]["trace"] == runs["in-process"]["trace"] and len({r["chosen"] for r in runs.values()}) == 1
        same = same and agree
        ratio = round(runs["ray"]["wall_seconds"] / runs["in-process"]["wall_seconds"], 3)
        rows.append(
            {
                "model": name,
                "wall_seconds": {mode: run["wall_seconds"] for mode, run in runs.items()},
                "ratio": ratio,
                "candidates": len(runs["ray"]["trace"]),
                "chosen": runs["ray"]["chosen"],
                "same_decisions": agree,
            }
        )
        walls = ", ".join(f"{mode} {run['wall_seconds']} s" for mode, run in runs.items())
        print(
            f"ray_search {name} on {cpu.isa_class} ({cpu.cores} cores): {walls}, ratio {ratio}; "
            f"{len(runs['ray']['trace'])} candidates, decisions {'the same' if agree else 'DIFFER'}, "
            f"chosen {runs['ray']['chosen']}"
        )
    summary = {"cpu_class": cpu.isa_class, "cores": cpu.cores, "models": rows, "same_decisions": same}
    (out / "ray_search.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"ray_search: {out / 'ray_search.json'}")
    return 0 if same else 1


def _trace(report: dict) -> list:
    """The candidates, in the order of their names (on Ray a task's candidates join the trace when merged)."""
    keys = ("name", "kind", "decision", "size_bytes", "gzip_bytes", "val_top1")
    return sorted([candidate[key] for key in keys] for candidate in report["search"]["candidates"])


if __name__ == "__main__":
    sys.exit(main())
