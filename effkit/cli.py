"""The `effkit` command: parse, call the library, print. Heavy imports happen inside each command.

Exit codes: 0 all variants ok (bench, gate: the gate passed); 1 an internal error; 4 the gate found regressions;
2 bad input (one line on stderr); 3 some variants failed or mismatched; 130 interrupted. `--debug` shows tracebacks.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence

from . import interrupt, progress
from .config import (
    MCU_LIMITS,
    SEARCH_TARGETS,
    Backend,
    CompressConfig,
    Format,
    LatencyConfig,
    Limits,
    OnnxQuantConfig,
    OrtCalibration,
    OrtOptimization,
    OrtTypes,
    ParityConfig,
    PruneConfig,
    Quant,
    SearchConfig,
    SearchGoal,
    parse_clusters,
    parse_counts,
    parse_duration,
    parse_enum,
    parse_enum_list,
    parse_size,
    parse_sparsities,
)
from .errors import ConfigError, EffkitError, InputError, first_line

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_REGRESSION = 4  # effkit bench: the gate found regressions (1 stays an internal error)
EXIT_VARIANTS_FAILED = 3
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _configure_logging(quiet=args.quiet, debug=args.debug)
    progress.enable(not args.quiet)
    restore_signals = interrupt.install()  # SIGTERM unwinds like Ctrl-C: partial report, no debris
    try:
        return args.command(args)
    except EffkitError as error:
        if args.debug:
            raise
        print(f"effkit: error: {first_line(error)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("effkit: interrupted; the report written so far is marked incomplete", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if args.debug:
            raise
        print(
            f"effkit: internal error: {type(error).__name__}: {first_line(error)} (rerun with --debug)", file=sys.stderr
        )
        return EXIT_INTERNAL
    finally:
        restore_signals()


def _parser() -> argparse.ArgumentParser:
    defaults = CompressConfig()
    parser = argparse.ArgumentParser(
        prog="effkit",
        description="Prune, quantize and export Keras classifiers to TFLite (LiteRT) and ONNX, "
        "and measure accuracy, size and latency of every variant.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    compress = commands.add_parser(
        "compress",
        help="prune, quantize, export and measure a classifier",
        description="Prune, quantize and export a Keras classifier, measure every variant on the same test split "
        "in LiteRT / ONNX Runtime, and write report.json and report.md. Without MODEL, trains the reference "
        "digits_cnn on the embedded digits data first.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    compress.add_argument("model", nargs="?", help="a .keras (Keras 3 or tf_keras), .h5 or SavedModel folder")
    compress.add_argument(
        "--data",
        default="digits",
        help="'digits' (embedded), an .npz with x_train, y_train, x_test, y_test (x_val, y_val optional), an image "
        "folder, or inputs without labels (an .npz of x arrays only; images without class folders): your model's "
        "own top-1 is then the labels",
    )
    compress.add_argument("--out", help="output folder (default: effkit-out/<model name>, numbered if it exists)")
    compress.add_argument(
        "--sparsity",
        default=",".join(str(s) for s in defaults.sparsities),
        help="target sparsities to prune to, comma-separated; '' for none",
    )
    compress.add_argument(
        "--clusters",
        default=",".join(str(k) for k in defaults.clusters),
        help="cluster counts for each pruned model, comma-separated (e.g. 16,8): sparsity-preserving weight "
        "clustering, per channel for convolutions, making sources such as pruned80-c16; '' for none",
    )
    compress.add_argument(
        "--channels",
        default="",
        help="structured pruning: shares of each channel group's channels to remove, comma-separated (e.g. 0.25,0.5), "
        "making smaller dense models such as channels50 that are smaller in raw bytes and faster; '' for none",
    )
    compress.add_argument(
        "--qat",
        action="store_true",
        help="also make an int8 TFLite variant of each pruned and clustered model by quantization-aware training "
        "that keeps its zeros and clusters (<source>-qat)",
    )
    compress.add_argument(
        "--quant",
        default=",".join(q.value for q in defaults.quantizations),
        help=f"quantizations: {', '.join(q.value for q in Quant)} (float32 'none' always runs)",
    )
    compress.add_argument(
        "--formats", default=",".join(f.value for f in defaults.formats), help="export formats: tflite, onnx"
    )
    compress.add_argument(
        "--tflite-backend",
        default="both",
        help="who quantizes TFLite: converter (TFLite converter PTQ), litert (LiteRT quantizer) or both",
    )
    compress.add_argument(
        "--onnx-calibration",
        default=OnnxQuantConfig.calibration.value,
        help=f"ONNX Runtime static calibration: {', '.join(c.value for c in OrtCalibration)}",
    )
    compress.add_argument(
        "--onnx-types",
        default=OnnxQuantConfig.types.value,
        help="ONNX Runtime activation/weight types: auto (u8s8, or u8u8 on x86 CPUs without VNNI, where u8s8 "
        "saturates), u8s8, s8s8, u8u8; dynamic quantization takes the weight type",
    )
    compress.add_argument(
        "--onnx-per-tensor", action="store_true", help="quantize ONNX weights per tensor instead of per channel"
    )
    compress.add_argument(
        "--ort-optimization",
        default=LatencyConfig.ort_optimization.value,
        help=f"ONNX Runtime graph optimization level: {', '.join(o.value for o in OrtOptimization)}",
    )
    compress.add_argument(
        "--min-agreement",
        type=float,
        default=ParityConfig.quantized_agreement,
        help="top-1 agreement with Keras (percent) a quantized artifact needs; below it the variant is 'mismatch'",
    )
    compress.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=defaults.max_accuracy_drop,
        help="largest top-1 drop (percentage points) a recommended variant may have",
    )
    compress.add_argument("--max-latency-ms", type=float, help="recommend nothing slower than this p50 (ms)")
    compress.add_argument(
        "--max-flash",
        help="recommend nothing larger in raw bytes (mcu: TFLite Micro's flash), e.g. 65536, 64KiB, 1MiB",
    )
    compress.add_argument("--max-arena", help="recommend no mcu variant whose TFLite Micro arena is larger, e.g. 16KiB")
    compress.add_argument(
        "--target",
        choices=SEARCH_TARGETS,
        help="with --search: only what this target runs (mcu: full-integer .tflite that TFLite Micro runs, within "
        "1 MiB of flash and a 256 KiB arena unless --max-flash/--max-arena say otherwise)",
    )
    compress.add_argument(
        "--threads", default="1", help="runtime threads for latency, comma-separated; the first is the headline"
    )
    compress.add_argument(
        "--batch",
        default="1",
        help="batch sizes for latency (throughput for > 1), comma-separated; the first is the headline",
    )
    compress.add_argument(
        "--memory", action="store_true", help="measure each runtime's peak memory in a process of its own (~1 s each)"
    )
    compress.add_argument(
        "--search",
        choices=[goal.value for goal in SearchGoal],
        help="search for the smallest artifact in gzip bytes (size) or raw bytes (flash), or the fastest (latency), "
        "within --max-accuracy-drop, deciding on the validation split, instead of measuring the --sparsity grid",
    )
    compress.add_argument(
        "--budget",
        help="wall-time bound for the whole compress with --search, e.g. 300s, 10m, 1h; fine-tunes are priced, "
        "shortened and stopped to fit it (default: none)",
    )
    compress.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="with --search: make each model's quantized candidates as Ray tasks while the search fine-tunes the "
        "next model (the same decisions as without); a local Ray on this machine, or the cluster at ADDRESS; needs "
        "effkit[ray]",
    )
    compress.add_argument(
        "--sparsity-m-by-n",
        metavar="M:N",
        help="also prune to structured sparsity, at most M nonzero of every N input-channel weights in Dense and "
        "Conv2D layers (e.g. 2:4): a 'prunedMofN' source next to the sparsities",
    )
    compress.add_argument("--prune-epochs", type=int, default=PruneConfig.epochs, help="fine-tune epochs per sparsity")
    compress.add_argument(
        "--in-process",
        action="store_true",
        help="run fine-tunes in this process instead of a child process (a native crash then ends the run)",
    )
    compress.add_argument(
        "--no-distill",
        action="store_true",
        help="fine-tune on the labels alone, not also on the model's own outputs (soft targets at T=2)",
    )
    compress.add_argument(
        "--calibration-samples",
        type=int,
        default=defaults.calibration_samples,
        help="training samples used to calibrate int8",
    )
    compress.add_argument("--seed", type=int, default=defaults.seed, help="seed for splits, training and sampling")
    compress.add_argument(
        "--overwrite", action="store_true", help="replace earlier results in --out (only the files their report names)"
    )
    compress.add_argument(
        "--unsafe-load",
        action="store_true",
        help="allow model files whose loading runs stored code (Lambda layers); trusted files only",
    )
    _common(compress)
    compress.set_defaults(command=_compress)

    train = commands.add_parser(
        "train",
        help="train a reference classifier from models/ and save it",
        description="Train one of the lecture's reference classifiers with its recipe (normalization in the model, "
        "exponential learning-rate decay, L2, dropout, augmentation for images, early stopping on a validation "
        "split, fixed seeds) and save it as a Keras 3 .keras file (or tf_keras with --keras 2).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument(
        "name", help="digits_cnn, fashion_mlp, fashion_cnn, imdb_text, cifar_cnn, transfer_mobilenet, multihead"
    )
    train.add_argument("--data", help="dataset (default: the model's own, e.g. fashion_mnist)")
    train.add_argument("--out", help="where to save the model (default: <name>.keras)")
    train.add_argument("--keras", type=int, default=3, help="Keras generation to train and save with: 3 or 2")
    train.add_argument("--epochs", type=int, help="epochs per training phase (default: the recipe's)")
    train.add_argument("--seed", type=int, default=0, help="seed for splits, initialisation and training")
    train.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    _common(train)
    train.set_defaults(command=_train)

    bench = commands.add_parser(
        "bench",
        help="run a benchmark suite, write results.json, gate against a baseline",
        description="Run every model of a suite (a TOML file, see bench/suites/) through compress with the same "
        "latency protocol; write results.json, results.md, plots and report.html; with --baseline, exit 4 when "
        "accuracy, size or relative latency regressed beyond the suite's thresholds. A baseline kept for this "
        "CPU beside --baseline (quick.x86_64-avx2.authenticamd-25-1.77e6fd.json next to quick.json: class, vendor, "
        "family, model and a digest of the features) is used when it exists; latency is compared only with a "
        "baseline measured on a CPU with the same kernels.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bench.add_argument("suite", help="suite file, e.g. bench/suites/quick.toml")
    bench.add_argument("--out", default="results", help="output folder (trained reference models are reused)")
    bench.add_argument("--baseline", help="a results.json to compare with (the gate)")
    bench.add_argument(
        "--update-baseline",
        action="store_true",
        help="write this run's results to --baseline, or beside it for this CPU when --baseline holds another "
        "CPU's results",
    )
    bench.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the models as Ray tasks in parallel, each artifact timed on a node nothing else runs on: a local Ray "
        "on this machine, or the cluster at ADDRESS (auto, ray://head:10001); needs effkit[ray]",
    )
    _common(bench)
    bench.set_defaults(command=_bench)

    bundle = commands.add_parser(
        "bundle",
        help="package one measured variant for a device: artifact, manifest, golden inputs (and C files for mcu)",
        description="Copy one artifact of an `effkit compress` folder into a bundle a device can load and check "
        "without TensorFlow (effkit.edge): the artifact with effkit's metadata inside, manifest.json (input, "
        "quantization, outputs and labels, sha256, provenance, what was measured and on which CPU) and golden.npz "
        "(test inputs and their outputs). --target mcu takes only a full-integer .tflite that TFLite Micro runs, "
        "checked op by op, and adds a C source and header with the arena size TFLite Micro measured.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bundle.add_argument("run", help="a folder written by effkit compress (it holds report.json)")
    bundle.add_argument("--target", choices=("mobile", "mcu"), default="mobile", help="where the bundle will run")
    bundle.add_argument("--out", required=True, help="the bundle folder to write (new, empty, or a bundle)")
    bundle.add_argument("--variant", help="a variant name from the report (default: the best one for --target)")
    bundle.add_argument("--labels", help="a text file with one class label per line (default: 0, 1, ...)")
    bundle.add_argument("--overwrite", action="store_true", help="replace a bundle already in --out")
    _common(bundle)
    bundle.set_defaults(command=_bundle)

    verify = commands.add_parser(
        "verify",
        help="run a bundle's golden inputs through this machine's runtime; exit 0, or 1 with the reason",
        description="Check a bundle where it will run: the artifact's sha256 against the manifest, then the golden "
        "inputs through LiteRT or ONNX Runtime against the outputs effkit recorded. On a device without "
        "TensorFlow, install effkit/edge and run `effkit-edge verify` instead: the same check.",
    )
    verify.add_argument("bundle", help="a folder written by effkit bundle")
    verify.add_argument("--threads", type=int, default=1, help="runtime threads")
    _common(verify)
    verify.set_defaults(command=_verify)

    report = commands.add_parser(
        "report",
        help="add figures timed on a device (effkit-edge bench) to a run's report",
        description="Read each device result, check its signature and that it is for a variant of this run whose "
        "file has the bytes the device timed, and add it to report.json (`devices`) and report.md (a column per "
        "device beside this machine's p50).",
    )
    report.add_argument("run", help="an output folder of effkit compress")
    report.add_argument("--device", nargs="+", required=True, metavar="RESULT", help="device-result.json files")
    _common(report)
    report.set_defaults(command=_report)

    gate = commands.add_parser(
        "gate",
        help="gate figures timed on devices (effkit-edge bench) against a device baseline; exit 4 on a slowdown",
        description="Check each device result's signature, then compare its p50 with the baseline entry for the "
        "same bundle, variant, runtime, threads and batch measured on a device with the same kernels "
        "(architecture, vendor, CPU family and model, kernel-selecting features). A slowdown counts beyond "
        "--latency-slowdown-pct and --latency-floor-ms, and when both keep per-run samples, only if a one-sided "
        "Mann-Whitney test finds it (p < --latency-p-value). A result without a baseline from its device is listed "
        "as not comparable, with the reason, and never fails. Exit 4 on a regression.",
    )
    gate.add_argument("results", nargs="+", metavar="RESULT", help="device-result.json files")
    gate.add_argument("--baseline", required=True, help="the device baseline, e.g. bench/baselines/devices.json")
    gate.add_argument(
        "--update-baseline",
        action="store_true",
        help="write the results into --baseline instead of gating: each replaces the entry of its bundle, runtime "
        "and device; other devices' entries are kept",
    )
    gate.add_argument("--latency-slowdown-pct", type=float, help="p50 growth that counts (default: effkit bench's, 30)")
    gate.add_argument(
        "--latency-floor-ms", type=float, help="and the p50 must grow by more than this (default: effkit bench's, 0.02)"
    )
    gate.add_argument(
        "--latency-p-value",
        type=float,
        help="and the rank test must find it less likely (default: effkit bench's, 0.05)",
    )
    _common(gate)
    gate.set_defaults(command=_gate)
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress lines, only the final table and errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug lines")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged, so main() can run more than once in a process."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _configure_logging(*, quiet: bool, debug: bool) -> None:
    started = time.perf_counter()

    class Elapsed(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f"[{time.perf_counter() - started:6.1f}s] {record.getMessage()}"

    handler = _StderrHandler()
    handler.setFormatter(Elapsed())
    logger = logging.getLogger("effkit")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)


def _train(args: argparse.Namespace) -> int:
    from . import models as reference_models

    print(
        reference_models.train_and_save(
            args.name,
            args.out,
            data=args.data,
            generation=args.keras,
            seed=args.seed,
            epochs=args.epochs,
            overwrite=args.overwrite,
        )
    )
    return EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .cpu import fingerprint
    from .suites import (
        RESULTS_JSON,
        baseline_to_read,
        baseline_to_write,
        gate,
        load_suite,
        read_baseline,
        run_suite,
        with_latency_rounds,
        write_results,
    )
    from .suites.gate import regressions_markdown

    suite = load_suite(args.suite)
    if args.update_baseline and not args.baseline:
        raise ConfigError("--update-baseline needs --baseline FILE to write")
    cpu = fingerprint()
    baseline = Path(args.baseline) if args.baseline else None
    if baseline and not args.update_baseline:
        baseline = baseline_to_read(baseline, cpu)
        read_baseline(baseline)  # refuse a missing or empty baseline before an hour of benchmarking
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; expected a folder")
    from .suites.run import executor_for

    with executor_for(args.ray) as executor:
        results = run_suite(suite, out, executor=executor)
    gated = baseline is not None and not args.update_baseline
    write_results(results, out, step_summary=not gated)  # before the gate: the measurements survive whatever it meets
    if args.update_baseline:
        if results.cpu is not None and cpu.same_kernels(results.cpu):
            results = with_latency_rounds(results, out)  # the spread the gate will hold later runs against
            write_results(results, out, step_summary=False)
        else:
            logging.getLogger("effkit").warning("bench: timed on another CPU; the baseline keeps no latency rounds")
    if gated:
        results = gate(results, baseline, suite.thresholds, out)
        write_results(results, out)
    print(f"effkit bench {suite.name}: {len(results.models)} models in {results.seconds} s; results in {out}")
    if args.update_baseline:
        from .files import write_bytes

        target = baseline_to_write(baseline, cpu)
        write_bytes(target, (out / RESULTS_JSON).read_bytes())
        print(f"baseline for {cpu.describe()} written to {target}")
    verdict = results.gate
    if verdict is not None:
        if not verdict["passed"]:
            print(regressions_markdown(verdict["regressions"]))
            print(f"effkit: {len(verdict['regressions'])} regression(s) against {baseline}", file=sys.stderr)
            return EXIT_REGRESSION
        print(f"gate passed against {baseline}")
        return EXIT_OK
    failures = results.not_ok()
    for name in failures:
        print(f"effkit: {name} is not ok", file=sys.stderr)
    return EXIT_VARIANTS_FAILED if failures else EXIT_OK


def _tflite_backends(text: str) -> tuple[Backend, ...]:
    choices = {
        "converter": (Backend.CONVERTER,),
        "litert": (Backend.LITERT,),
        "both": (Backend.CONVERTER, Backend.LITERT),
    }
    try:
        return choices[text.strip().lower()]
    except KeyError:
        raise ConfigError(f"unknown TFLite backend {text!r}; known: {', '.join(choices)}") from None


def _search_config(args: argparse.Namespace) -> SearchConfig | None:
    if args.search is None:
        if args.budget is not None:
            raise ConfigError("--budget bounds a search: add --search size or --search latency")
        if args.target is not None:
            raise ConfigError("--target restricts a search: add --search size, flash or latency")
        return None
    budget = parse_duration(args.budget) if args.budget is not None else None
    return SearchConfig(goal=SearchGoal(args.search), budget_seconds=budget, target=args.target)


def _limits(args: argparse.Namespace) -> Limits:
    """The device's limits from the options; `--target mcu` brings a microcontroller's where none is given."""
    given = {
        "latency_ms": args.max_latency_ms,
        "flash_bytes": parse_size(args.max_flash, what="--max-flash") if args.max_flash else None,
        "arena_bytes": parse_size(args.max_arena, what="--max-arena") if args.max_arena else None,
    }
    if args.target == "mcu":
        given = {key: MCU_LIMITS.get(key) if value is None else value for key, value in given.items()}
    return Limits(**given)


def _compress_config(args: argparse.Namespace) -> CompressConfig:
    """The CompressConfig that `effkit compress`'s options describe, validated."""
    config = CompressConfig(
        sparsities=parse_sparsities(args.sparsity),
        clusters=parse_clusters(args.clusters),
        channels=parse_sparsities(args.channels),
        qat=args.qat,
        quantizations=parse_enum_list(Quant, args.quant, what="quantization"),
        formats=parse_enum_list(Format, args.formats, what="format"),
        max_accuracy_drop=args.max_accuracy_drop,
        limits=_limits(args),
        calibration_samples=args.calibration_samples,
        seed=args.seed,
        tflite_backends=_tflite_backends(args.tflite_backend),
        prune=PruneConfig(
            epochs=args.prune_epochs,
            m_by_n=args.sparsity_m_by_n,
            isolate=not args.in_process,
            distill=not args.no_distill,
        ),
        latency=LatencyConfig(
            batches=parse_counts(args.batch, what="--batch"),
            threads=parse_counts(args.threads, what="--threads"),
            memory=args.memory,
            ort_optimization=parse_enum(OrtOptimization, args.ort_optimization, what="ONNX Runtime optimization"),
        ),
        onnx_quant=OnnxQuantConfig(
            per_channel=not args.onnx_per_tensor,
            types=parse_enum(OrtTypes, args.onnx_types, what="ONNX quantization types"),
            calibration=parse_enum(OrtCalibration, args.onnx_calibration, what="ONNX calibration"),
        ),
        parity=ParityConfig(quantized_agreement=args.min_agreement),
        search=_search_config(args),
    )
    config.validate()
    return config


def _compress(args: argparse.Namespace) -> int:
    config = _compress_config(args)

    from .pipeline import compress
    from .report.render import machine_line, summary, table, targets_section
    from .suites.run import executor_for

    if args.ray is not None and config.search is None:
        raise ConfigError("--ray makes a search's candidates in parallel: add --search size (or latency)")
    with executor_for(args.ray) if args.ray is not None else contextlib.nullcontext() as executor:
        report = compress(
            args.model,
            args.data,
            config=config,
            out_dir=args.out,
            safe_mode=not args.unsafe_load,
            overwrite=args.overwrite,
            tasks=executor,
        )
    print(table(report))
    print()
    print(summary(report).replace("**", ""))
    if report.recommended_by_target is not None:
        print(targets_section(report).replace("**", "").replace("\n\n", "\n"))
    for note in report.notes:
        print(f"Note: {note}")
    print(f"Measured on {machine_line(report.environment)}.")
    not_ok = [v for v in report.variants if not v.ok]
    for variant in not_ok:
        print(f"effkit: {variant.name} {variant.status}: {variant.error}", file=sys.stderr)
    return EXIT_VARIANTS_FAILED if not_ok else EXIT_OK


def _bundle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .ship.bundle import make_bundle

    labels = None
    if args.labels:
        try:
            labels = [
                line.strip() for line in Path(args.labels).read_text(encoding="utf-8").splitlines() if line.strip()
            ]
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"cannot read --labels {args.labels}: {error}") from None
    made = make_bundle(
        args.run, target=args.target, out=args.out, variant=args.variant, labels=labels, overwrite=args.overwrite
    )
    manifest = made.manifest
    artifact = manifest["artifact"]
    line = (
        f"{made.path}: {made.variant} for {made.target}, {artifact['file']} {artifact['size_bytes']:,} bytes "
        f"(gzip {artifact['gzip_bytes']:,}), top-1 {manifest['measured']['top1']:.2%}, "
        f"{manifest['golden']['samples']} golden samples"
    )
    micro = manifest.get("micro")
    if micro:
        line += (
            f"; TFLite Micro arena {micro['arena_bytes']:,} bytes (measured {micro['arena_bytes_measured']:,}), "
            f"{len(micro['ops'])} ops, agrees with LiteRT on {micro['top1_agreement_with_litert']:.1%}"
        )
    print(line)
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .report.devices import add_devices

    report = add_devices(Path(args.run), [Path(p) for p in args.device])
    print(f"{args.run}: {len(report.devices)} device figure(s) in report.json and report.md")
    return EXIT_OK


def _gate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .suites.devices import (
        REGRESSION,
        compare_devices,
        read_device_baseline,
        read_results,
        rows_markdown,
        updated_baseline,
        write_device_baseline,
    )
    from .suites.gate import Thresholds

    given = {
        "latency_slowdown_pct": args.latency_slowdown_pct,
        "latency_floor_ms": args.latency_floor_ms,
        "latency_p_value": args.latency_p_value,
    }
    try:
        thresholds = Thresholds(**{name: value for name, value in given.items() if value is not None})
    except ValueError as error:
        raise ConfigError(str(error)) from None
    path = Path(args.baseline)
    baseline = read_device_baseline(path, missing_ok=args.update_baseline)
    results = read_results([Path(p) for p in args.results])
    if args.update_baseline:
        entries = updated_baseline(baseline, results)
        write_device_baseline(path, entries)
        print(f"{path}: {len(results)} result(s) written, {len(entries) - len(results)} other entries kept")
        return EXIT_OK
    rows = compare_devices(results, baseline, thresholds)
    print(rows_markdown(rows))
    regressions = [row for row in rows if row["verdict"] == REGRESSION]
    compared = sum(row["baseline_p50_ms"] is not None for row in rows)
    if regressions:
        print(f"effkit: {len(regressions)} device regression(s) against {path}", file=sys.stderr)
        return EXIT_REGRESSION
    print(f"gate passed against {path}: {compared} compared, {len(rows) - compared} not comparable")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from .edge import BundleError
    from .edge.__main__ import verify_command

    try:
        return verify_command(args.bundle, threads=args.threads)
    except BundleError as error:
        raise InputError(str(error)) from None


def run() -> None:
    """The console script: `main`, then a quick exit.

    Python's interpreter teardown with TensorFlow loaded takes over a second after the work is done and every file is
    closed (all of effkit's writes are atomic renames), so the command runs the exit handlers libraries registered
    and leaves without the rest. `main` stays a plain function for callers in Python.
    """
    code = main()
    atexit._run_exitfuncs()  # what libraries registered (TensorFlow removes its autograph files from /tmp)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
