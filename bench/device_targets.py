"""Benchmark: what each pick costs on the device, against issue #23's targets, as a user runs it.

Each model goes through three `effkit compress` runs in fresh processes (the file each one reads is the reference
model `effkit bench` trains and caches, `effkit.models.reference_file`; the embedded default trains its own):

- the grid (`effkit compress MODEL --data DATA`): its baseline int8 TFLite file (LiteRT's quantizer) is the reference
  every ratio below is taken against, and its recommendation is "the grid's pick";
- `--search latency --target mobile --budget B`: the mobile pick, target p50 <= 0.5x the baseline int8's on at least
  4 of the models, <= 0.8x on every one;
- `--search flash --target mcu --budget B`: the mcu pick, target TFLite Micro flash <= 0.25x the baseline int8's,
  with an arena no larger than the baseline int8's (run once with --max-arena set to it, once without).

Every pick must lose at most 1.0 pp test top-1 against the user's model. Raw bytes are what a device holds (flash, an
app's memory-mapped file), gzip bytes what it downloads; p50 is LiteRT/XNNPACK at batch 1, one thread, on this
machine, whose CPU is printed with the table. With --peer, bench/peer_tfmot.py's tutorial recipe runs on the same
model files for comparison.

Usage: python bench/device_targets.py [--out DIR] [--models default,digits_cnn,...] [--budget 4m] [--peer]
Exit code 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = ("default", "digits_cnn", "fashion_mlp", "fashion_cnn", "imdb_text", "cifar_cnn", "multihead",
          "transfer_mobilenet")  # fmt: skip
REFERENCE = "baseline-tflite-int8-litert"
MAX_DROP_PP = 1.0
LATENCY_HALF, LATENCY_ALL, LATENCY_HALF_COUNT = 0.5, 0.8, 4
FLASH_TARGET = 0.25


def effkit_command() -> list[str]:
    effkit = Path(sys.executable).with_name("effkit")
    return [str(effkit)] if effkit.exists() else [sys.executable, "-m", "effkit"]


def compress(name: str, out: Path, folder: str, *options: str) -> dict | None:
    """One `effkit compress` of a model in a fresh process; its report, or None with the reason printed."""
    target = out / name / folder
    command = [*effkit_command(), "compress", "--out", str(target), "--quiet", "--overwrite", *options]
    if name != "default":
        from effkit import models

        data = models.get(name).OFFLINE_DATA
        command[2:2] = [str(models.reference_file(name, data, out, seed=0)), "--data", data]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode not in (0, 3) or not (target / "report.json").exists():
        print(f"{name} {folder}: {(result.stderr.strip().splitlines() or ['?'])[-1]}", file=sys.stderr)
        return None
    return json.loads((target / "report.json").read_text())


def figures(report: dict, variant: str | None) -> dict | None:
    """What a device sees of one variant: raw and gzip bytes, p50, TFLite Micro flash and arena (as the mcu pick
    counts them, `report.targets`; none where TFLite Micro does not run the file), test drop."""
    from effkit.report import targets
    from effkit.types import Variant

    chosen = next((Variant.from_dict(v) for v in report["variants"] if v["name"] == variant), None)
    if chosen is None:
        return None
    runs = bool((chosen.micro or {}).get("runs"))
    return {
        "variant": variant,
        "raw_bytes": chosen.size_bytes,
        "gzip_bytes": chosen.gzip_bytes,
        "p50_ms": chosen.latency_ms.p50 if chosen.latency_ms else None,
        "flash_bytes": targets.flash_bytes(chosen) if runs else None,
        "arena_bytes": targets.arena_bytes(chosen) if runs else None,
        "drop_pp": round(-chosen.top1_delta_pp, 3) if chosen.top1_delta_pp is not None else None,
    }


def ratio(value: float | None, reference: float | None) -> float | None:
    return round(value / reference, 3) if value is not None and reference else None


def run_model(name: str, out: Path, budget: str) -> dict:
    """The grid, the mobile latency search and the mcu flash searches of one model, side by side."""
    row: dict = {"model": name}
    grid = compress(name, out, "grid")
    if grid is None:
        return {**row, "error": "the grid run failed"}
    base = figures(grid, REFERENCE)
    row.update(baseline_int8=base, grid_pick=figures(grid, grid.get("recommended")))
    row["cpu"] = grid["environment"].get("fingerprint", {})
    mobile = compress(name, out, "mobile", "--search", "latency", "--target", "mobile", "--budget", budget)
    row["mobile_pick"] = figures(mobile, mobile.get("recommended")) if mobile else None
    mcu = compress(name, out, "mcu", "--search", "flash", "--target", "mcu", "--budget", budget)
    mcu_pick = (mcu.get("recommended_by_target") or {}).get("mcu") if mcu else None
    row["mcu_pick"] = figures(mcu, mcu_pick) if mcu else None
    arena = base and base["arena_bytes"]
    if arena:
        bounded = compress(name, out, "mcu-arena", "--search", "flash", "--target", "mcu", "--budget", budget,
                           "--max-arena", str(arena))  # fmt: skip
        pick = (bounded.get("recommended_by_target") or {}).get("mcu") if bounded else None
        row["mcu_pick_within_arena"] = figures(bounded, pick) if bounded else None
    return row


def judged(row: dict) -> dict:
    """The row's ratios against the baseline int8 file and whether each target holds."""
    base = row.get("baseline_int8") or {}
    mobile, mcu, within = (row.get(key) or {} for key in ("mobile_pick", "mcu_pick", "mcu_pick_within_arena"))
    row["mobile_p50_ratio"] = ratio(mobile.get("p50_ms"), base.get("p50_ms"))
    row["mcu_flash_ratio"] = ratio(mcu.get("flash_bytes"), base.get("flash_bytes"))
    row["mcu_within_arena_flash_ratio"] = ratio(within.get("flash_bytes"), base.get("flash_bytes"))
    within_budget = all((pick.get("drop_pp") or 0.0) <= MAX_DROP_PP for pick in (mobile, mcu, within) if pick)
    flash_ok = any(
        r is not None and r <= FLASH_TARGET and (p.get("arena_bytes") or 0) <= (base.get("arena_bytes") or 0)
        for r, p in ((row["mcu_flash_ratio"], mcu), (row["mcu_within_arena_flash_ratio"], within))
    )
    row["latency_met"] = row["mobile_p50_ratio"] is not None and row["mobile_p50_ratio"] <= LATENCY_ALL
    row["latency_half"] = row["mobile_p50_ratio"] is not None and row["mobile_p50_ratio"] <= LATENCY_HALF
    row["mcu_met"] = flash_ok
    row["within_budget"] = within_budget
    return row


def markdown(rows: list[dict]) -> str:
    def kib(value):
        return "" if value is None else f"{value / 1024:.1f}"

    def ms(value):
        return "" if value is None else f"{value:.4f}"

    lines = [
        "| model | pick | variant | raw KiB | gzip KiB | p50 ms | TFLM flash KiB | arena KiB | drop pp |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | error: {row['error']} | | | | | | | |")
            continue
        for key, label in (("baseline_int8", "baseline int8"), ("grid_pick", "grid"), ("mobile_pick", "mobile"),
                           ("mcu_pick", "mcu"), ("mcu_pick_within_arena", "mcu, arena <= int8's")):  # fmt: skip
            pick = row.get(key)
            if not pick:
                continue
            drop = "" if pick["drop_pp"] is None else f"{pick['drop_pp']:+.2f}"
            lines.append(
                f"| {row['model']} | {label} | `{pick['variant']}` | {kib(pick['raw_bytes'])} | "
                f"{kib(pick['gzip_bytes'])} | {ms(pick['p50_ms'])} | {kib(pick['flash_bytes'])} | "
                f"{kib(pick['arena_bytes'])} | {drop} |"
            )
    lines += ["", "| model | mobile p50 / int8 | mcu flash / int8 | mcu flash / int8, arena <= int8's | targets |",
              "|---|---:|---:|---:|---|"]  # fmt: skip
    for row in rows:
        if "error" in row:
            continue
        latency = "latency <= 0.8x" if row["latency_met"] else "latency MISSED"
        met = [
            "latency <= 0.5x" if row["latency_half"] else latency,
            "flash <= 0.25x" if row["mcu_met"] else "flash MISSED",
            "<= 1 pp" if row["within_budget"] else "drop MISSED",
        ]
        lines.append(
            f"| {row['model']} | {row['mobile_p50_ratio']} | {row['mcu_flash_ratio']} | "
            f"{row['mcu_within_arena_flash_ratio']} | {', '.join(met)} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output folder (default: a temporary one); trained models are cached in it")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: default and reference models")
    parser.add_argument("--budget", default="4m", help="each search's --budget (default: 4m)")
    parser.add_argument("--peer", action="store_true", help="also run bench/peer_tfmot.py on the reference models")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="effkit-device-targets-"))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        row = judged(run_model(name, out, args.budget))
        rows.append(row)
        (out / "device_targets.json").write_text(json.dumps(rows, indent=1) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k != "cpu"}), flush=True)
    ok = [row for row in rows if "error" not in row]
    passed = (
        len(ok) == len(rows)
        and all(row["latency_met"] and row["mcu_met"] and row["within_budget"] for row in ok)
        and sum(row["latency_half"] for row in ok) >= min(LATENCY_HALF_COUNT, len(ok))
    )
    table = markdown(rows)
    from effkit.cpu import CpuFingerprint

    cpu = next((row["cpu"] for row in ok if row.get("cpu")), None)
    line = f"Measured on {CpuFingerprint.from_dict(cpu).describe() if cpu else 'an unrecorded CPU'}; results in {out}"
    (out / "device_targets.md").write_text(table + "\n\n" + line + "\n")
    print("\n" + table + "\n\n" + line)
    if args.peer:
        references = ",".join(row["model"] for row in ok if row["model"] != "default")
        peer = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("peer_tfmot.py")), "--models", references,
             "--cache", str(out), "--out", str(out / "peer")],
        )  # fmt: skip
        passed &= peer.returncode == 0
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
