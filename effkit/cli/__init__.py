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

from .. import interrupt, progress
from ..config import (
    MCU_LIMITS,
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
from ..errors import ConfigError, EffkitError, InputError, first_line
from .options import parser as _parser

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_REGRESSION = 4  # effkit bench: the gate found regressions (1 stays an internal error)
EXIT_VARIANTS_FAILED = 3
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(quiet=args.quiet, debug=args.debug)
    progress.enable(not args.quiet)
    restore_signals = interrupt.install()  # SIGTERM unwinds like Ctrl-C: partial report, no debris
    try:
        return COMMANDS[args.command](args)
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
    from .. import models as reference_models

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

    from ..cpu import fingerprint
    from ..suites import (
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
    from ..suites.gate import regressions_markdown

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
    from ..suites.run import executor_for

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
        from ..files import write_bytes

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

    from ..pipeline import compress
    from ..report.render import machine_line, summary, table, targets_section
    from ..suites.run import executor_for

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

    from ..ship.bundle import make_bundle

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

    from ..report.devices import add_devices

    report = add_devices(Path(args.run), [Path(p) for p in args.device])
    print(f"{args.run}: {len(report.devices)} device figure(s) in report.json and report.md")
    return EXIT_OK


def _gate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..suites.devices import (
        REGRESSION,
        compare_devices,
        read_device_baseline,
        read_results,
        rows_markdown,
        updated_baseline,
        write_device_baseline,
    )
    from ..suites.gate import Thresholds

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
    from ..edge import BundleError
    from ..edge.__main__ import verify_command

    try:
        return verify_command(args.bundle, threads=args.threads)
    except BundleError as error:
        raise InputError(str(error)) from None


COMMANDS = {
    "compress": _compress,
    "train": _train,
    "bench": _bench,
    "bundle": _bundle,
    "verify": _verify,
    "report": _report,
    "gate": _gate,
}


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
