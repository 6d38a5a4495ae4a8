"""The `effkit` command: parse, call the library, print. Heavy imports happen inside each command.

Exit codes: 0 all variants ok; 2 bad input (one line on stderr); 3 some variants failed or mismatched; 1 internal
error; 130 interrupted. `--debug` shows tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from . import interrupt
from .config import (
    Backend,
    CompressConfig,
    Format,
    LatencyConfig,
    OnnxQuantConfig,
    OrtCalibration,
    OrtOptimization,
    OrtTypes,
    ParityConfig,
    PruneConfig,
    Quant,
    parse_enum,
    parse_enum_list,
    parse_sparsities,
)
from .errors import ConfigError, EffkitError, first_line

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_VARIANTS_FAILED = 3
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _configure_logging(quiet=args.quiet, debug=args.debug)
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
        help="'digits' (embedded) or an .npz with x_train, y_train, x_test, y_test (x_val, y_val optional)",
    )
    compress.add_argument("--out", help="output folder (default: effkit-out/<model name>, numbered if it exists)")
    compress.add_argument(
        "--sparsity",
        default=",".join(str(s) for s in defaults.sparsities),
        help="target sparsities to prune to, comma-separated; '' for none",
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
        help="ONNX Runtime static activation/weight types: u8s8 (uint8 activations) or s8s8",
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
    compress.add_argument("--threads", type=int, default=LatencyConfig.threads, help="runtime threads for latency")
    compress.add_argument("--batch", type=int, default=LatencyConfig.batch, help="batch size for latency")
    compress.add_argument("--prune-epochs", type=int, default=PruneConfig.epochs, help="fine-tune epochs per sparsity")
    compress.add_argument(
        "--calibration-samples",
        type=int,
        default=defaults.calibration_samples,
        help="training samples used to calibrate int8",
    )
    compress.add_argument("--seed", type=int, default=defaults.seed, help="seed for splits, training and sampling")
    compress.add_argument(
        "--overwrite", action="store_true", help="replace earlier results in --out (its report and artifacts)"
    )
    compress.add_argument(
        "--unsafe-load",
        action="store_true",
        help="allow model files whose loading runs stored code (Lambda layers); trusted files only",
    )
    _common(compress)
    compress.set_defaults(command=_compress)
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


def _compress(args: argparse.Namespace) -> int:
    config = CompressConfig(
        sparsities=parse_sparsities(args.sparsity),
        quantizations=parse_enum_list(Quant, args.quant, what="quantization"),
        formats=parse_enum_list(Format, args.formats, what="format"),
        max_accuracy_drop=args.max_accuracy_drop,
        calibration_samples=args.calibration_samples,
        seed=args.seed,
        tflite_backends=_tflite_backends(args.tflite_backend),
        prune=PruneConfig(epochs=args.prune_epochs),
        latency=LatencyConfig(
            batch=args.batch,
            threads=args.threads,
            ort_optimization=parse_enum(OrtOptimization, args.ort_optimization, what="ONNX Runtime optimization"),
        ),
        onnx_quant=OnnxQuantConfig(
            per_channel=not args.onnx_per_tensor,
            types=parse_enum(OrtTypes, args.onnx_types, what="ONNX quantization types"),
            calibration=parse_enum(OrtCalibration, args.onnx_calibration, what="ONNX calibration"),
        ),
        parity=ParityConfig(quantized_agreement=args.min_agreement),
    )
    config.validate()

    from .pipeline import compress
    from .report import summary, table

    report = compress(
        args.model,
        args.data,
        config=config,
        out_dir=args.out,
        safe_mode=not args.unsafe_load,
        overwrite=args.overwrite,
    )
    print(table(report))
    print()
    print(summary(report).replace("**", ""))
    not_ok = [v for v in report.variants if not v.ok]
    for variant in not_ok:
        print(f"effkit: {variant.name} {variant.status}: {variant.error}", file=sys.stderr)
    return EXIT_VARIANTS_FAILED if not_ok else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
