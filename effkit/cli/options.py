"""The options of every `effkit` command, in one place so that the CLI reads as one list; parsing only (the
commands are in `effkit.cli`)."""

from __future__ import annotations

import argparse

from ..config import (
    SEARCH_TARGETS,
    CompressConfig,
    LatencyConfig,
    OnnxQuantConfig,
    OrtCalibration,
    OrtOptimization,
    ParityConfig,
    PruneConfig,
    Quant,
    SearchGoal,
)


def parser() -> argparse.ArgumentParser:
    """The parser of every command; each sets `command` to its name (`effkit.cli.COMMANDS`)."""
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
    compress.set_defaults(command="compress")

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
    train.set_defaults(command="train")

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
    bench.set_defaults(command="bench")

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
    bundle.set_defaults(command="bundle")

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
    verify.set_defaults(command="verify")

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
    report.set_defaults(command="report")

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
    gate.set_defaults(command="gate")
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress lines, only the final table and errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug lines")
