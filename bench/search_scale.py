"""Benchmark: the search's budget on models from 50k to 5M parameters (issue #26).

Each model is built in Keras 3, trained briefly on digits (resized to its input) in a process of its own and saved
as `.keras`; then `effkit compress MODEL --data digits --search size --budget B` runs in a fresh process for each
budget, as a user would run it. Models:

- `cnn_50k`: the lecture's small CNN with dropout (Conv 32, Conv 64, Dense 64) at 28x28x1, about 50k parameters;
- `mobilenet_v2`: MobileNetV2 alpha 0.35 at 32x32x3 (keras.applications, `weights=None`), about 0.4M;
- `efficientnet_b0`: EfficientNetB0 at 32x32x3, about 4M.

Per run it prints: the process's wall time against the budget (the whole command, imports included), what the
search spent its time on (sensitivity, pruning, clustering and QAT fine-tunes, artifacts, the confirmation on test
and the grid before it), how the search stopped, what it recommended (gzip bytes against the float32 TFLite
file's raw bytes, test drop) and the grid's best artifact within 1 pp. Judged, on every run:

- the command ends within 1.05x its budget;
- no model the search kept is without an artifact of its own;
- the recommendation is at least as small (gzip) as the grid's best within 1 pp.

Every figure is printed with the CPU it was measured on.

Usage: python bench/search_scale.py [--out DIR] [--models cnn_50k,mobilenet_v2,efficientnet_b0] [--budgets 5m,10m]
       [--epochs N]
Exit code 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from keras_apps import _all_layers  # bench/, next to this script

MODELS = ("cnn_50k", "mobilenet_v2", "efficientnet_b0")
SHAPES = {"cnn_50k": (28, 28, 1), "mobilenet_v2": (32, 32, 3), "efficientnet_b0": (32, 32, 3)}
MAX_OVERRUN = 1.05
MAX_DROP_PP = 1.0


def build(name: str):
    from effkit.load import keras_compat

    keras = keras_compat.keras3()
    shape = SHAPES[name]
    if name == "cnn_50k":
        layers = keras.layers
        model = keras.Sequential(
            [
                keras.Input(shape),
                layers.Rescaling(1.0 / 255.0),
                layers.Conv2D(32, 3, activation="relu"),
                layers.MaxPooling2D(),
                layers.Conv2D(64, 3, activation="relu"),
                layers.MaxPooling2D(),
                layers.Flatten(),
                layers.Dropout(0.3),
                layers.Dense(24, activation="relu"),
                layers.Dense(10, activation="softmax"),
            ],
            name=name,
        )
    elif name == "mobilenet_v2":
        model = keras.applications.MobileNetV2(input_shape=shape, weights=None, classes=10, alpha=0.35)
    elif name == "efficientnet_b0":
        model = keras.applications.EfficientNetB0(input_shape=shape, weights=None, classes=10)
    else:
        raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    for layer in _all_layers(model):
        if type(layer).__name__ == "BatchNormalization":
            layer.momentum = 0.9  # at Keras' 0.99 a short run from scratch evaluates at chance (docs/pitfalls.md)
    return model


def train(name: str, path: Path, epochs: int) -> None:
    """Train `name` on digits at its input shape and save it (run in a child: `--train NAME PATH EPOCHS`)."""
    from effkit.load import keras_compat
    from effkit.load.classifier import describe
    from effkit.load.data import load_dataset
    from effkit.techniques.train import fit

    keras = keras_compat.keras3()
    keras.utils.set_random_seed(0)
    dataset = load_dataset("digits", input_shape=SHAPES[name])
    model = build(name)
    info = describe(model, dataset.x_train[:8], name=name)
    fit(model, dataset, keras=keras, heads=info.heads, epochs=epochs, learning_rate=2e-3, patience=epochs)
    accuracy = float((model.predict(dataset.x_test, verbose=0).argmax(axis=-1) == dataset.y_test).mean())
    keras_compat.save_model(model, path)
    print(json.dumps({"params": int(model.count_params()), "test_top1": accuracy}))


def parse_budget(text: str) -> float:
    from effkit.config import parse_duration

    return parse_duration(text)


def compress(model: Path, out: Path, budget: str) -> tuple[int, float]:
    command = [sys.executable, "-m", "effkit", "compress", str(model), "--data", "digits", "--search", "size"]
    command += ["--budget", budget, "--out", str(out), "--overwrite"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out.with_suffix(".log").write_text(done.stderr)
    return done.returncode, time.perf_counter() - started


def time_shares(report: dict) -> dict[str, float]:
    """Seconds per kind of work, from the report: the grid before the search, the sensitivity table, each kind
    of fine-tune, the artifacts, and the rest (the confirmation on test, the report)."""
    search = report["search"]
    shares: dict[str, float] = {"sensitivity": (report.get("sensitivity") or {}).get("seconds", 0.0)}
    if (report.get("sensitivity") or {}).get("cached"):
        shares["sensitivity"] = 0.0
    for candidate in search["candidates"]:
        settings = candidate["settings"]
        if candidate["kind"] == "model":
            kind = "cluster" if "clusters" in settings else "prune"
        else:
            kind = "qat" if settings.get("qat") else "artifacts"
        shares[kind] = shares.get(kind, 0.0) + (candidate.get("seconds") or 0.0)
    return shares


def judge(report: dict, wall: float, budget: float) -> dict:
    search = report["search"]
    candidates = search["candidates"]
    kept = [c["name"] for c in candidates if c["kind"] == "model" and c["decision"] == "kept"]
    orphans = [name for name in kept if not any(c["kind"] == "artifact" and c["parent"] == name for c in candidates)]
    variants = {v["name"]: v for v in report["variants"]}
    f32 = variants.get("baseline-tflite-none", {}).get("size_bytes")
    ok_within = [v for v in report["variants"] if v["status"] == "ok" and v.get("top1_delta_pp") is not None
                 and -v["top1_delta_pp"] <= MAX_DROP_PP]  # fmt: skip
    grid = [v for v in ok_within if not v["name"].startswith("search-")]
    grid_best = min(grid, key=lambda v: v["gzip_bytes"], default=None)
    picked = variants.get(report.get("recommended") or "")
    verdict = {
        "wall_s": round(wall, 1),
        "budget_s": budget,
        "overrun": round(wall / budget, 3),
        "stopped": search["stopped"],
        "kept_without_artifacts": orphans,
        "recommended": report.get("recommended"),
        "gzip_kib": round(picked["gzip_bytes"] / 1024, 1) if picked else None,
        "ratio_vs_f32_raw": round(f32 / picked["gzip_bytes"], 1) if picked and f32 else None,
        "test_drop_pp": round(-picked["top1_delta_pp"], 2) if picked else None,
        "grid_best": grid_best["name"] if grid_best else None,
        "grid_best_kib": round(grid_best["gzip_bytes"] / 1024, 1) if grid_best else None,
        "seconds": {k: round(v, 1) for k, v in time_shares(report).items()},
        "notes": [n for n in report.get("notes", []) if n.startswith("search: ") and "epoch" in n],
    }
    verdict["ok"] = (
        wall <= MAX_OVERRUN * budget
        and not orphans
        and picked is not None
        and (grid_best is None or picked["gzip_bytes"] <= grid_best["gzip_bytes"])
    )
    return verdict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output folder (default: a temporary one)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--budgets", default="5m,10m", help="comma-separated --budget values (default 5m,10m)")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs per model (default 12)")
    parser.add_argument("--train", nargs=3, metavar=("NAME", "PATH", "EPOCHS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train:
        train(args.train[0], Path(args.train[1]), int(args.train[2]))
        return 0
    from effkit.cpu import fingerprint

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="effkit-search-scale-"))
    out.mkdir(parents=True, exist_ok=True)
    cpu = fingerprint().describe()
    print(f"CPU: {cpu}")
    results, failed = {}, 0
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        path, facts_path = out / f"{name}.keras", out / f"{name}.json"
        if not (path.exists() and facts_path.exists()):  # a model trained by an earlier run in --out is reused
            trained = subprocess.run([sys.executable, __file__, "--train", name, str(path), str(args.epochs)],
                                     capture_output=True, text=True)  # fmt: skip
            if trained.returncode != 0:
                print(f"{name}: training failed ({trained.returncode}): {trained.stderr.strip()[-600:]}")
                failed += 1
                continue
            facts_path.write_text(trained.stdout.strip().splitlines()[-1])
        facts = json.loads(facts_path.read_text())
        print(f"{name}: {facts['params']:,} parameters, test top-1 {facts['test_top1']:.2%}")
        for budget in [b.strip() for b in args.budgets.split(",") if b.strip()]:
            run = out / f"{name}-{budget}"
            code, wall = compress(path, run, budget)
            report_path = run / "report.json"
            if not report_path.exists():
                print(f"  --budget {budget}: exit {code} after {wall:.0f} s, no report (log: {run}.log)")
                failed += 1
                continue
            verdict = judge(json.loads(report_path.read_text()), wall, parse_budget(budget))
            verdict["exit"] = code
            results[f"{name} {budget}"] = {**facts, **verdict}
            print(f"  --budget {budget}: {json.dumps(verdict)}")
            failed += not verdict["ok"]
    (out / "search_scale.json").write_text(json.dumps({"cpu": cpu, "results": results}, indent=2))
    print(table(results, cpu))
    print(f"wrote {out / 'search_scale.json'}")
    return 1 if failed else 0


def table(results: dict, cpu: str) -> str:
    lines = [
        f"Measured on {cpu}.",
        "",
        "| model | params | budget | wall | stopped | recommended | ×f32 | test drop | grid best (gzip KiB) |",
        "|---|---:|---:|---:|---|---|---:|---:|---|",
    ]
    for key, r in results.items():
        name, budget = key.rsplit(" ", 1)
        lines.append(
            f"| {name} | {r['params']:,} | {budget} | {r['wall_s']:.0f} s ({r['overrun']:.2f}x) | {r['stopped']} | "
            f"`{r['recommended']}` ({r['gzip_kib']} KiB) | {r['ratio_vs_f32_raw']}x | {r['test_drop_pp']:+.2f} | "
            f"`{r['grid_best']}` ({r['grid_best_kib']}) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
