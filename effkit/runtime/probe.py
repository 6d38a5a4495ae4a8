"""Peak memory of one runtime running one artifact, measured in a process of its own.

effkit's own process holds TensorFlow (about a gigabyte), which would drown a runtime's footprint. `peak_memory`
starts `python -m effkit.runtime.probe`, which imports only the runtime it needs (ai_edge_litert or onnxruntime,
never TensorFlow), records its resident set before loading the artifact, loads it, runs it, and reports the peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..config import Format
from ..errors import StageError, first_line

RUNS = 20


def peak_memory(artifact: Path, fmt: Format, *, batch: int, threads: int, timeout: float = 300) -> dict[str, float]:
    """{"peak": MiB, "model": MiB}: the probe process's peak RSS, and how much of it came with the artifact.

    Raises:
        StageError: the probe failed or did not answer.
    """
    command = [
        sys.executable,
        "-m",
        __name__,
        str(artifact),
        str(fmt),
        "--batch",
        str(batch),
        "--threads",
        str(threads),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise StageError(f"the memory probe of {Path(artifact).name} did not finish in {timeout:.0f} s") from None
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise StageError(f"the memory probe of {Path(artifact).name} failed: {lines[-1] if lines else 'no output'}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _rss_mib() -> float:
    """This process's peak resident set, in MiB.

    /proc/self/status VmHWM belongs to this program alone; getrusage's ru_maxrss is not reset by exec, so in a
    child it starts at the parent's peak (effkit's process, with TensorFlow: about 800 MiB).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="peak memory of one runtime running one artifact")
    parser.add_argument("artifact")
    parser.add_argument("format", choices=[Format.TFLITE.value, Format.ONNX.value])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    # Import the runtime before measuring: its libraries are its fixed cost, the artifact's share comes after.
    if args.format == Format.TFLITE:
        import ai_edge_litert.interpreter  # noqa: F401
    else:
        import onnxruntime  # noqa: F401
    from . import open_runner

    before = _rss_mib()
    try:
        runner = open_runner(Path(args.artifact), Format(args.format), threads=args.threads)
        shape, dtype = runner.input_spec
        call = runner.bind(np.zeros((args.batch, *shape), dtype=dtype))
        for _ in range(RUNS):
            call()
    except Exception as error:
        print(first_line(error), file=sys.stderr)
        return 1
    peak = _rss_mib()
    print(json.dumps({"peak": round(peak, 1), "model": round(peak - before, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
