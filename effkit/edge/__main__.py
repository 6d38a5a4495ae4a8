"""`effkit-edge verify DIR` / `python -m effkit.edge verify DIR` on a device: exit 0, or 1 with a one-line reason.

`effkit-edge bench DIR [--threads N] [--batch B]` times the bundle's artifact here under effkit's latency protocol
and writes `DIR/device-result.json` (signed; `effkit report RUN --device FILE` brings it into the run's report).

`effkit-edge classify DIR samples.npy [--top K]` prints the top labels of each sample.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .manifest import BundleError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="effkit-edge", description="Run and verify effkit bundles on a device.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="run the bundle's golden inputs here and compare with the recorded")
    check.add_argument("bundle", help="a folder made by `effkit bundle`")
    check.add_argument("--threads", type=int, default=1)
    timing = commands.add_parser("bench", help="time the bundle's artifact here, as effkit times it; write the result")
    timing.add_argument("bundle", help="a folder made by `effkit bundle`")
    timing.add_argument("--threads", type=int, default=1)
    timing.add_argument("--batch", type=int, default=1)
    timing.add_argument("--out", help="where to write the result (default: <bundle>/device-result.json)")
    classify = commands.add_parser("classify", help="the top labels of each sample of a .npy file")
    classify.add_argument("bundle")
    classify.add_argument("samples", help=".npy file: one sample or a batch")
    classify.add_argument("--top", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        if args.command == "verify":
            return verify_command(args.bundle, threads=args.threads)
        if args.command == "bench":
            return bench_command(args.bundle, threads=args.threads, batch=args.batch, out=args.out)
        return _classify(args)
    except BundleError as error:
        print(f"effkit-edge: error: {error}", file=sys.stderr)
        return 2


def verify_command(bundle: str, *, threads: int = 1) -> int:
    """Print the verdict; 0 when it passes, 1 when it does not (BundleError propagates for a damaged bundle)."""
    from .model import verify

    verdict = verify(bundle, threads=threads)
    print(f"{bundle}: {verdict.line()}", file=sys.stdout if verdict.ok else sys.stderr)
    return 0 if verdict.ok else 1


def bench_command(bundle: str, *, threads: int, batch: int, out: str | None) -> int:
    """Time the bundle here and write the signed result; print one line with its p50 and where it went."""
    from pathlib import Path

    from .cpu import CpuFingerprint
    from .device import RESULT, bench, write_result

    result = bench(bundle, threads=threads, batch=batch)
    path = write_result(result, Path(out) if out else Path(bundle) / RESULT)
    latency, device = result["latency_ms"], result["device"]
    print(
        f"{bundle}: p50 {latency['p50']:.4f} ms, p90 {latency['p90']:.4f} ms over {latency['runs']} runs "
        f"(batch {batch}, {threads} thread(s)) on {CpuFingerprint.from_dict(device).describe()}; wrote {path}"
    )
    return 0


def _classify(args: argparse.Namespace) -> int:
    import numpy as np

    from .model import load

    try:
        samples = np.load(args.samples, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise BundleError(f"cannot read {args.samples}: {error}") from None
    ranked = load(args.bundle).classify(samples, top=args.top)
    for i, row in enumerate([ranked] if ranked and isinstance(ranked[0], tuple) else ranked):
        print(f"{i}: " + ", ".join(f"{label} {score:.3f}" for label, score in row))
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
