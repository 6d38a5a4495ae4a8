"""Benchmark: the accuracy-aware search against issue #11's targets, as a user runs it.

Each model goes through `effkit compress MODEL --data DATA --search size` in a fresh process (TensorFlow import,
search and test confirmation included), timed wall-clock; its report.json is then read.

- embedded default (`effkit compress --search size`, no arguments: digits_cnn trained in-run), in OUT/default
      recommended gzip bytes vs float32 TFLite raw bytes     target >= 20x, <= 1.0 pp test top-1 loss, <= 5 min
- every reference model on its offline stand-in data, from the file `effkit bench` trains and caches
  (`effkit.models.reference_file`, in OUT/models), in OUT/<model>
      the same ratio                                         target >= 12x, <= 1.0 pp, <= 15 min each
- with --peer: bench/peer_tfmot.py on the same model files, data and test split; effkit's recommended artifact
  must be >= 2x smaller than the tfmot tutorial recipe's, within 1.0 pp.

Every figure is printed with the CPU class it was measured on.

Usage: python bench/search_targets.py [--out DIR] [--models digits_cnn,fashion_mlp,...] [--peer]
Exit code 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = "digits_cnn"
MODELS = ("digits_cnn", "fashion_mlp", "fashion_cnn", "imdb_text", "cifar_cnn", "transfer_mobilenet", "multihead")
OTHER_BUDGET = "12m"
TARGETS = {  # ratio, pp, seconds
    "default": (20.0, 1.0, 300.0),
    "other": (12.0, 1.0, 900.0),
}


def effkit_command() -> list[str]:
    effkit = Path(sys.executable).with_name("effkit")
    return [str(effkit)] if effkit.exists() else [sys.executable, "-m", "effkit"]


def offline_data(name: str) -> str:
    from effkit import models

    return models.get(name).OFFLINE_DATA


def model_file(name: str, out: Path) -> Path:
    """The reference model trained on its offline data, cached in OUT/models as effkit bench caches it."""
    from effkit.models import reference_file

    return reference_file(name, offline_data(name), out, seed=0)


def run_model(name: str, out: Path, *, default: bool = False) -> dict:
    """Compress one model with --search size in a fresh process; its figures and wall time."""
    target = out / ("default" if default else name)
    command = [*effkit_command(), "compress", "--search", "size", "--out", str(target), "--quiet", "--overwrite"]
    if not default:  # the 15-minute target: the search gets 12 of them, the rest is the grid's baseline and test
        command += [str(model_file(name, out)), "--data", offline_data(name), "--budget", OTHER_BUDGET]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode not in (0, 3) or not (target / "report.json").exists():
        return {"model": name, "error": (result.stderr.strip().splitlines() or ["?"])[-1], "wall_seconds": wall}
    report = json.loads((target / "report.json").read_text())
    variants = {v["name"]: v for v in report["variants"]}
    chosen = variants.get(report.get("recommended") or "")
    reference = variants.get("baseline-tflite-none")
    search = report.get("search") or {}
    return {
        "model": name,
        "wall_seconds": round(wall, 1),
        "recommended": report.get("recommended"),
        "ratio": round(reference["size_bytes"] / chosen["gzip_bytes"], 2) if chosen and reference else None,
        "drop_pp": round(-chosen["top1_delta_pp"], 3) if chosen else None,
        "gzip_bytes": chosen["gzip_bytes"] if chosen else None,
        "candidates": len(search.get("candidates", [])),
        "search_seconds": search.get("seconds"),
        "stopped": search.get("stopped"),
        "isa_class": report["environment"].get("fingerprint", {}).get("isa_class"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output folder (default: a temporary one); trained models are cached in it")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated reference models")
    parser.add_argument("--peer", action="store_true", help="also run bench/peer_tfmot.py and compare")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="effkit-search-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    passed = True
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    runs = [(DEFAULT, True)] * (DEFAULT in names) + [(name, False) for name in names]
    for name, default in runs:
        row = run_model(name, out, default=default)
        row["model"] = "default (embedded)" if default else name
        ratio_target, pp_target, seconds_target = TARGETS["default" if default else "other"]
        ok = (
            "error" not in row
            and row["ratio"] is not None
            and row["ratio"] >= ratio_target
            and row["drop_pp"] <= pp_target
            and row["wall_seconds"] <= seconds_target
        )
        row["targets"] = f">= {ratio_target:g}x, <= {pp_target:g} pp, <= {seconds_target / 60:g} min"
        row["pass"] = ok
        passed &= ok
        rows.append(row)
        print(json.dumps(row), flush=True)
    (out / "search_targets.json").write_text(json.dumps(rows, indent=1) + "\n")
    print()
    print("| model | recommended | x f32 (gzip vs raw) | test drop pp | wall s | candidates | stopped | target | |")
    print("|---|---|---:|---:|---:|---:|---|---|---|")
    for row in rows:
        if "error" in row:
            wall = f"{row['wall_seconds']:.0f}"
            print(f"| {row['model']} | error: {row['error']} | | | {wall} | | | {row['targets']} | FAIL |")
            continue
        print(
            f"| {row['model']} | `{row['recommended']}` | {row['ratio']} | {row['drop_pp']:+.2f} | "
            f"{row['wall_seconds']:.0f} | {row['candidates']} | {row['stopped']} | {row['targets']} | "
            f"{'PASS' if row['pass'] else 'FAIL'} |"
        )
    print(f"\nCPU class: {rows[0].get('isa_class') if rows else '?'}; results in {out}")
    if args.peer:
        peer = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("peer_tfmot.py")), "--models", args.models, "--effkit",
             str(out), "--cache", str(out), "--out", str(out / "peer")],
        )  # fmt: skip
        passed &= peer.returncode == 0
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
