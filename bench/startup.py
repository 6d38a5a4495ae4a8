"""Benchmark: `effkit --help` start-up time, and that it does not import TensorFlow (issue #5).

Target: median wall time of `effkit --help` below 0.5 s over 10 runs.
Usage: python bench/startup.py        Exit code 0 when the target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_SECONDS = 0.5
RUNS = 10


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    script = Path(sys.executable).with_name("effkit")
    command = [str(script), "--help"] if script.exists() else [sys.executable, "-m", "effkit", "--help"]
    timings = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        timings.append(time.perf_counter() - started)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\nfrom effkit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
            "    pass\nprint('tensorflow' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = probe.stdout.strip().splitlines()[-1] == "True"
    median = statistics.median(timings)
    ok = median < TARGET_SECONDS and not imported
    print(
        f"  {'PASS' if ok else 'FAIL'}  effkit --help: median {median * 1e3:.0f} ms, min {min(timings) * 1e3:.0f} ms "
        f"over {RUNS} runs (target < {TARGET_SECONDS * 1e3:.0f} ms); TensorFlow imported: {imported}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
