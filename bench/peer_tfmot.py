"""The peer: the tfmot tutorial recipe, on effkit's reference models and data, measured the way effkit measures.

Issue #11's "Against the peer": what a user gets from the TensorFlow Model Optimization tutorial, side by side with
effkit's recommended artifact. The recipe, per model:

1. prune with `prune_low_magnitude` and `PolynomialDecay(initial_sparsity=0.50, final_sparsity=0.80, begin_step=0,
   end_step=ceil(train / batch) * epochs)` (tfmot's default frequency of 100 steps, as in the tutorial); the whole
   model is wrapped, or, when tfmot refuses one of its layers (Rescaling, a nested base model), the layers tfmot
   can prune, as the pruning guide shows;
2. fine-tune with `UpdatePruningStep` for as many epochs (and at effkit's batch size) as effkit's default
   `PruneConfig` fine-tunes, with the tutorial's constant Adam learning rate and no early stopping;
3. `strip_pruning`, then the TFLite converter's dynamic-range PTQ (`optimizations=[tf.lite.Optimize.DEFAULT]`).

A Keras 3 model is pruned through effkit's tf_keras rebuild when that rebuild is faithful (`--keras3 bridge`, the
default: the strongest peer); one without a faithful rebuild, or every Keras 3 model with `--keras3 ptq` (a tutorial
user, whose tfmot refuses Keras 3), gets the PTQ step only.

Models are the reference classifiers of models/, trained on their offline data exactly as `effkit bench` trains
them, and cached in `--cache DIR/models/` under the same key: point `--cache` at an `effkit bench --out` folder and
the peer starts from the very models effkit compressed there. The test split is effkit's own
(`load_dataset(name, seed=0)`), checked by digest against effkit's reports.

Measured for the peer artifact with effkit's runtime and measures: test top-1 and its drop against the Keras
baseline, raw and gzip bytes, compression_gzip = float32 TFLite raw bytes / gzip bytes (effkit's report.json names
that ratio's gzip/gzip twin `compression_gzip`; both are shown), batch-1 single-thread p50 latency in LiteRT, and
the recipe's wall time (fine-tune, strip, convert; training the reference model excluded).

With `--effkit RESULTS_DIR` (one folder per model holding effkit's report.json), each model's recommended effkit
artifact is set beside the peer's: it passes when it is >= 2x smaller (gzip bytes) and within 1.0 pp top-1.

Usage:
    python bench/peer_tfmot.py --models digits_cnn,fashion_mlp [--out DIR] [--cache DIR] [--effkit RESULTS_DIR]
Writes DIR/peer.json and DIR/peer.md. Exit code 0 when every peer ran (and, with --effkit, every model passed).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effkit.config import PruneConfig

SIZE_TARGET = 2.0  # effkit's recommended artifact at least this many times smaller (gzip bytes) than the peer's
DROP_BUDGET_PP = 1.0  # ...within this top-1 drop
PEER_LEARNING_RATE = 1e-3  # the tutorial compiles with optimizer="adam": Keras' default rate, constant
PEER_JSON = "peer.json"
PEER_MD = "peer.md"

log = logging.getLogger("effkit")


@dataclass(frozen=True)
class PeerResult:
    """One model under the peer recipe."""

    model: str
    data: str
    test_samples: int
    test_digest: str
    path: str  # "tfmot" (pruned, then PTQ) or "ptq-only"
    why_ptq_only: str | None
    wrapped: str | None  # "whole model" or "prunable layers"
    sparsity: float  # measured in the prunable kernels of the delivered model
    epochs: int
    end_step: int
    baseline_top1: float
    top1: float
    drop_pp: float
    float32_bytes: int  # the float32 .tflite of the starting model, raw
    size_bytes: int
    gzip_bytes: int
    compression_gzip: float  # float32_bytes / gzip_bytes
    compression_gzip_vs_gzip: float  # float32 .tflite gzip bytes / gzip_bytes (effkit's `compression_gzip`)
    p50_ms: float
    recipe_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def main(argv: list[str] | None = None) -> int:
    from effkit import models as reference_models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(reference_models.NAMES), help="reference models, comma-separated")
    parser.add_argument("--out", default="peer-results", help="where peer.json, peer.md and the artifacts go")
    parser.add_argument("--cache", help="folder whose models/ holds trained reference models (default: --out)")
    parser.add_argument("--effkit", metavar="RESULTS_DIR", help="effkit results: RESULTS_DIR/<model>/report.json")
    parser.add_argument(
        "--keras3",
        choices=("bridge", "ptq"),
        default="bridge",
        help="Keras 3 models: pruned through effkit's faithful tf_keras rebuild, or PTQ only as tfmot alone allows",
    )
    parser.add_argument(
        "--epochs", type=int, default=PruneConfig.epochs, help="fine-tune epochs (default: effkit's PruneConfig)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, training and fine-tune")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    for name in names:
        reference_models.get(name)  # fails with the list of known names
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)

    from effkit.cpu import fingerprint

    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out
    cpu = fingerprint()
    results: list[PeerResult] = []
    failures: dict[str, str] = {}
    for name in names:
        try:
            results.append(run_peer(name, out=out, cache=cache, epochs=args.epochs, seed=args.seed, keras3=args.keras3))
        except Exception as error:  # one model's failure is reported; the others still run
            log.exception("peer %s failed", name)
            failures[name] = f"{type(error).__name__}: {error}".splitlines()[0]
    comparisons = compare_with_effkit(results, Path(args.effkit)) if args.effkit else None
    document = {
        "recipe": {
            "prune": "prune_low_magnitude, PolynomialDecay(0.50 -> 0.80, begin_step=0, end_step=ceil(train/batch) * "
            "epochs, frequency=100), UpdatePruningStep, strip_pruning",
            "fine_tune": {
                "epochs": args.epochs,
                "batch_size": PruneConfig.batch_size,
                "optimizer": f"Adam({PEER_LEARNING_RATE:g})",
            },
            "quantize": "TFLiteConverter.from_keras_model, optimizations=[tf.lite.Optimize.DEFAULT]",
            "keras3": args.keras3,
        },
        "cpu": {"isa_class": cpu.isa_class, "describe": cpu.describe()},
        "models": [result.to_dict() for result in results],
        "failed": failures,
        "effkit": comparisons,
    }
    from effkit.files import write_text

    write_text(out / PEER_JSON, json.dumps(document, indent=2) + "\n")
    markdown = render_markdown(results, failures, comparisons, cpu_line=cpu.describe(), epochs=args.epochs)
    write_text(out / PEER_MD, markdown)
    print(markdown)
    print(f"wrote {out / PEER_JSON} and {out / PEER_MD}")
    passed = not failures and (comparisons is None or all(row["passed"] for row in comparisons))
    return 0 if passed else 1


def run_peer(name: str, *, out: Path, cache: Path, epochs: int, seed: int, keras3: str) -> PeerResult:
    """Train (or reuse) one reference model, apply the peer recipe and measure the artifact."""
    from effkit.models import reference_file

    from effkit import models as reference_models
    from effkit.config import Format
    from effkit.export.tflite import export_tflite
    from effkit.load import keras_compat
    from effkit.load.classifier import describe, model_input
    from effkit.load.data import fit_sequences, load_dataset
    from effkit.runtime import open_runner
    from effkit.runtime.measure import file_sizes, primary_top1, weight_sparsity

    data = reference_models.get(name).OFFLINE_DATA
    model_file = reference_file(name, data, cache, seed=seed)
    loaded = keras_compat.load_model(model_file)

    # The test split effkit's compress() measures on: same loader, seed, sequence fitting and input dtype.
    dataset = load_dataset(data, seed=seed, input_shape=tuple(loaded.model.inputs[0].shape[1:]))
    facts = model_input(loaded.model, name=name)
    if facts.sequence_length:
        dataset = fit_sequences(dataset, facts.sequence_length)
    info = describe(
        loaded.model,
        dataset.x_train[:32].astype(facts.dtype),
        name=name,
        labels=dataset.labels("train", list(facts.output_names)),
    )
    dataset = dataset.astype(info.input_dtype)
    labels = dataset.labels("test", info.output_names)

    why_ptq_only = _why_not_tfmot(loaded, dataset, keras3=keras3)
    start = loaded.original if why_ptq_only else loaded.model
    keras_outputs = open_runner(start, Format.KERAS, outputs=info.output_names).predict(dataset.x_test)
    baseline_top1 = primary_top1(info, keras_outputs, labels)

    folder = out / name
    float32 = export_tflite(start, folder / "float32.tflite")
    float32_raw, float32_gzip = file_sizes(float32)
    started = time.perf_counter()
    wrapped = None
    end_step = 0
    delivered = start
    if why_ptq_only is None:
        delivered, wrapped, end_step = peer_prune(start, dataset, info=info, epochs=epochs, seed=seed)
    artifact = peer_quantize(delivered, folder / "peer-dynamic.tflite")
    recipe_seconds = time.perf_counter() - started

    runner = open_runner(artifact, Format.TFLITE, outputs=info.output_names)
    top1 = primary_top1(info, runner.predict(dataset.x_test), labels)
    size_bytes, gzip_bytes = file_sizes(artifact)
    result = PeerResult(
        model=name,
        data=data,
        test_samples=len(dataset.x_test),
        test_digest=dataset.test_digest(),
        path="ptq-only" if why_ptq_only else "tfmot",
        why_ptq_only=why_ptq_only,
        wrapped=wrapped,
        sparsity=round(weight_sparsity(delivered)[0], 4),
        epochs=epochs if why_ptq_only is None else 0,
        end_step=end_step,
        baseline_top1=round(baseline_top1, 6),
        top1=round(top1, 6),
        drop_pp=round((baseline_top1 - top1) * 100, 4),
        float32_bytes=float32_raw,
        size_bytes=size_bytes,
        gzip_bytes=gzip_bytes,
        compression_gzip=round(float32_raw / gzip_bytes, 3),
        compression_gzip_vs_gzip=round(float32_gzip / gzip_bytes, 3),
        p50_ms=round(_p50_ms(runner, dataset.x_test), 5),
        recipe_seconds=round(recipe_seconds, 1),
    )
    log.info(
        "peer %s: %s, sparsity %.3f, top-1 %.2f%% (drop %.2f pp), gzip %d bytes = %.2fx float32 raw, %.1fs",
        name,
        result.path,
        result.sparsity,
        top1 * 100,
        result.drop_pp,
        gzip_bytes,
        result.compression_gzip,
        recipe_seconds,
    )
    return result


def _why_not_tfmot(loaded: Any, dataset: Any, *, keras3: str) -> str | None:
    """Why the peer cannot prune this model with tfmot (it then gets PTQ only), or None when it can."""
    from effkit.load import keras_compat

    if not loaded.bridged and loaded.bridge_error is None:
        return None  # a tf_keras model: tfmot takes it as it is
    if keras3 == "ptq":
        return "a Keras 3 model: tfmot takes tf_keras models only"
    if loaded.bridge_error is not None:
        return f"no tf_keras rebuild of the Keras 3 model: {loaded.bridge_error}"
    diff = keras_compat.max_output_diff(loaded.original, loaded.model, dataset.x_test)
    if not diff <= keras_compat.BRIDGE_TOLERANCE:
        return f"the tf_keras rebuild differs from the Keras 3 model by {diff:.3g} on the test split"
    return None


def peer_prune(model: Any, dataset: Any, *, info: Any, epochs: int, seed: int) -> tuple[Any, str, int]:
    """The tutorial's pruning: PolynomialDecay 50% -> 80% over ceil(train / batch) * epochs steps, fine-tune with
    UpdatePruningStep, strip. Returns the stripped tf_keras model, what was wrapped, and the schedule's end step."""
    from effkit.load import keras_compat
    from effkit.techniques.train import fit

    tfk = keras_compat.tf_keras()
    sparsity_api = keras_compat.tfmot().sparsity.keras
    registry = keras_compat.private.prune_registry()
    batch_size = PruneConfig.batch_size
    end_step = math.ceil(len(dataset.x_train) / batch_size) * epochs
    schedule = sparsity_api.PolynomialDecay(initial_sparsity=0.50, final_sparsity=0.80, begin_step=0, end_step=end_step)

    tfk.utils.set_random_seed(seed)
    working = tfk.models.clone_model(model)  # prune_low_magnitude wraps the very layers it is given
    working.set_weights(model.get_weights())
    try:
        wrapped = sparsity_api.prune_low_magnitude(working, pruning_schedule=schedule)
        what = "whole model"
    except ValueError:  # a layer tfmot does not know: the guide's "prune some layers" route

        def wrap(layer):
            if isinstance(layer, tfk.Model):
                return tfk.models.clone_model(layer, clone_function=wrap)
            if isinstance(layer, sparsity_api.PrunableLayer) or (registry.supports(layer) and layer.weights):
                return sparsity_api.prune_low_magnitude(layer, pruning_schedule=schedule)
            return layer

        wrapped = tfk.models.clone_model(working, clone_function=wrap)
        what = "prunable layers"
    fit(
        wrapped,
        dataset,
        keras=tfk,
        heads=info.heads,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=PEER_LEARNING_RATE,
        decay_rate=1.0,  # constant, as optimizer="adam"
        start_from_epoch=epochs,  # no early stopping and no best-weights restore: the tutorial fits every epoch
        callbacks=(sparsity_api.UpdatePruningStep(),),
        label=f"peer prune {info.name}",
    )
    return sparsity_api.strip_pruning(wrapped), what, end_step


def peer_quantize(model: Any, path: Path) -> Path:
    """The tutorial's conversion: `from_keras_model` with dynamic-range PTQ."""
    from effkit.export.tflite import convert
    from effkit.load import keras_compat

    tf = keras_compat.tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return convert(converter, path, what="peer dynamic-range PTQ")


def _p50_ms(runner: Any, x: Any) -> float:
    from effkit.config import LatencyConfig
    from effkit.runtime.measure import time_latency

    latency = time_latency(runner.bind(x[:1]), config=LatencyConfig(), batch=1, threads=1, runtime=runner.runtime)
    return latency.p50


def compare_with_effkit(results: list[PeerResult], folder: Path) -> list[dict[str, Any]]:
    """Each model's recommended effkit artifact (RESULTS_DIR/<model>/report.json) beside the peer's."""
    rows = []
    for peer in results:
        report_path = folder / peer.model / "report.json"
        row: dict[str, Any] = {"model": peer.model, "peer_gzip_bytes": peer.gzip_bytes, "passed": False}
        if not report_path.is_file():
            rows.append({**row, "problem": f"no {report_path}"})
            continue
        report = json.loads(report_path.read_text(encoding="utf-8"))
        variants = {variant["name"]: variant for variant in report["variants"]}
        chosen = variants.get(report.get("recommended") or "")
        if chosen is None:
            rows.append({**row, "problem": "effkit recommended nothing"})
            continue
        reference = variants.get("baseline-tflite-none", {})
        digest = report.get("data", {}).get("test_digest")
        drop = -chosen["top1_delta_pp"]
        ratio = peer.gzip_bytes / chosen["gzip_bytes"]
        row.update(
            recommended=chosen["name"],
            effkit_gzip_bytes=chosen["gzip_bytes"],
            effkit_drop_pp=round(drop, 4),
            effkit_compression_gzip_vs_gzip=chosen.get("compression_gzip"),
            effkit_compression_gzip=(
                round(reference["size_bytes"] / chosen["gzip_bytes"], 3) if reference.get("size_bytes") else None
            ),
            peer_drop_pp=peer.drop_pp,
            peer_over_effkit=round(ratio, 3),
            same_test_split=digest == peer.test_digest,
        )
        problems = []
        if digest != peer.test_digest:
            problems.append(f"effkit measured another test split ({digest} vs {peer.test_digest})")
        if ratio < SIZE_TARGET:
            problems.append(f"peer gzip / effkit gzip = {ratio:.2f}x (target >= {SIZE_TARGET:g}x)")
        if drop > DROP_BUDGET_PP:
            problems.append(f"effkit drops {drop:.2f} pp (budget {DROP_BUDGET_PP:g})")
        row["passed"] = not problems
        if problems:
            row["problem"] = "; ".join(problems)
        rows.append(row)
    return rows


def render_markdown(
    results: list[PeerResult],
    failures: dict[str, str],
    comparisons: list[dict[str, Any]] | None,
    *,
    cpu_line: str,
    epochs: int,
) -> str:
    lines = [
        "# The peer: tfmot tutorial recipe",
        "",
        f"prune_low_magnitude + PolynomialDecay 50% -> 80%, {epochs} fine-tune epochs, strip_pruning, converter "
        f"dynamic-range PTQ. Measured on {cpu_line}.",
        "",
        "| model | path | sparsity | Keras top-1 | peer top-1 | drop pp | float32 raw | peer raw | peer gzip "
        "| x float32 raw | x float32 gzip | p50 ms | recipe s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.path} | {r.sparsity:.3f} | {r.baseline_top1 * 100:.2f}% | {r.top1 * 100:.2f}% "
            f"| {r.drop_pp:.2f} | {r.float32_bytes:,} | {r.size_bytes:,} | {r.gzip_bytes:,} "
            f"| {r.compression_gzip:.2f}x | {r.compression_gzip_vs_gzip:.2f}x | {r.p50_ms:.4f} "
            f"| {r.recipe_seconds:.1f} |"
        )
    for name, error in failures.items():
        lines.append(f"| {name} | failed: {error} |" + " |" * 11)
    notes = [r for r in results if r.why_ptq_only]
    if notes:
        lines += ["", *(f"- {r.model}: PTQ only, {r.why_ptq_only}" for r in notes)]
    if comparisons is not None:
        lines += [
            "",
            f"## effkit's recommended artifact against the peer (pass: >= {SIZE_TARGET:g}x smaller gzip, "
            f"<= {DROP_BUDGET_PP:g} pp)",
            "",
            "| model | effkit recommended | effkit gzip | effkit drop pp | effkit x float32 raw | peer gzip "
            "| peer drop pp | peer / effkit | verdict |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for row in comparisons:
            if "recommended" not in row:
                lines.append(f"| {row['model']} | | | | | {row['peer_gzip_bytes']:,} | | | FAIL: {row['problem']} |")
                continue
            verdict = "pass" if row["passed"] else f"FAIL: {row['problem']}"
            effkit_x = row["effkit_compression_gzip"]
            lines.append(
                f"| {row['model']} | {row['recommended']} | {row['effkit_gzip_bytes']:,} | {row['effkit_drop_pp']:.2f} "
                f"| {'' if effkit_x is None else f'{effkit_x:.2f}x'} | {row['peer_gzip_bytes']:,} "
                f"| {row['peer_drop_pp']:.2f} | {row['peer_over_effkit']:.2f}x | {verdict} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
