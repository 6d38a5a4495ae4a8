"""Benchmark: effkit's latency harness against a bare runtime loop on the same artifact (issue #5).

effkit times `runner.bind(x)()`: set the input, invoke, read the outputs. A bare loop does the same three calls
on the runtime directly. Both are timed per call with perf_counter, alternating in rounds so that a burst of
noise hits both; the medians of their p50s are compared. Target: effkit's p50 within 10% of the bare loop's, for
LiteRT and for ONNX Runtime.

Usage: python bench/overhead.py        Exit code 0 when both are within the target, 1 otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET = 1.10
ROUNDS = 7
SECONDS = 0.5  # per timing, after warm-up


def _p50(call) -> float:
    for _ in range(50):
        call()
    timings = []
    started = time.perf_counter()
    while time.perf_counter() - started < SECONDS or len(timings) < 200:
        before = time.perf_counter()
        call()
        timings.append(time.perf_counter() - before)
    return statistics.median(timings) * 1e3


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    from ai_edge_litert.interpreter import Interpreter

    from effkit import models as effkit_models
    from effkit.config import Format, LatencyConfig
    from effkit.export.onnx import export_onnx
    from effkit.export.tflite import export_tflite
    from effkit.load.data import load_dataset
    from effkit.runtime import open_runner
    from effkit.runtime.measure import time_latency

    dataset = load_dataset("digits")
    model = effkit_models.train_reference("digits_cnn", dataset, epochs=2)
    folder = Path(tempfile.mkdtemp(prefix="effkit-overhead-"))
    sample = dataset.x_test[:1].astype(np.float32)
    protocol = LatencyConfig(min_seconds=SECONDS)
    rows = []

    tflite = export_tflite(model, folder / "m.tflite")
    runner = open_runner(tflite, Format.TFLITE, threads=1)
    interpreter = Interpreter(model_path=str(tflite), num_threads=1)
    interpreter.allocate_tensors()
    (input_detail,), (output_detail,) = interpreter.get_input_details(), interpreter.get_output_details()

    def bare_litert():
        interpreter.set_tensor(input_detail["index"], sample)
        interpreter.invoke()
        return interpreter.get_tensor(output_detail["index"])

    rows.append(("LiteRT", runner.bind(sample), bare_litert))

    import onnxruntime as ort

    onnx = export_onnx(model, folder / "m.onnx")
    ort_runner = open_runner(onnx, Format.ONNX, threads=1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx), sess_options=options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: sample}
    rows.append(("ONNX Runtime", ort_runner.bind(sample), lambda: session.run(None, feed)))

    failed = False
    print(f"effkit harness vs bare loop, batch 1, 1 thread, median of {ROUNDS} alternating rounds:")
    for name, effkit_call, bare_call in rows:
        effkit_p50s, bare_p50s = [], []
        for _ in range(ROUNDS):
            effkit_p50s.append(time_latency(effkit_call, config=protocol, batch=1, threads=1).p50)
            bare_p50s.append(_p50(bare_call))
        ours, bare = statistics.median(effkit_p50s), statistics.median(bare_p50s)
        ratio = ours / bare
        failed |= ratio > TARGET
        print(
            f"  {'PASS' if ratio <= TARGET else 'FAIL'}  {name:13s} effkit p50 {ours * 1e3:8.2f} us   "
            f"bare p50 {bare * 1e3:8.2f} us   ratio {ratio:.3f} (target <= {TARGET})"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
