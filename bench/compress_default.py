"""Benchmark: `effkit compress` on the embedded default, as a user runs it, against issue #2's targets.

Runs the real command in a fresh process (TensorFlow import and training included), then reads its report.json.
The two latency ratios are then timed again, alternating the pair in rounds on the same input samples (as the
bench gate does: a burst of noise on a shared machine can hit one figure of a pair and spare the other); the
confirmed ratio is judged, and the in-run one shown beside it.

- wall time of the whole command                               target <= 60 s (issue #5; #2 asked <= 90 s)
- variants made, all ok                                        target >= 16, including ONNX dynamic and static
                                                               and LiteRT-quantizer dynamic and static (#2, #3)
- recommended variant: gzip bytes vs float32 TFLite raw bytes  target >= 10x smaller, with <= 1.0 pp top-1 loss
- int8 TFLite batch-1 p50 / float32 TFLite p50 (same run)      target <= 0.6 (on CPUs with int8 dot products)
- float32 variants' top-1 agreement with Keras                 target 100%; int8 variants >= 97% (#3)
- ONNX static QDQ p50 / ONNX float32 p50 (same run)            target <= 1.0 (#3; likewise)

The speed targets were set on a CPU with AVX-512 VNNI. On one without int8 dot-product instructions (AVX2 only)
int8 runs at float32 speed (0.99x measured), so there they are shown, not judged; the report says why.

Usage: python bench/compress_default.py [--out DIR] [--keep]
Exit code 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {
    "wall_seconds": 60.0,
    "variants": 16,
    "size_ratio": 10.0,
    "accuracy_drop_pp": 1.0,
    "int8_latency": 0.6,
    "int8_agreement": 97.0,
    "onnx_static_latency": 1.0,
}
REQUIRED = (
    "baseline-onnx-dynamic",
    "baseline-onnx-int8",
    "baseline-tflite-dynamic-litert",
    "baseline-tflite-int8-litert",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the output folder")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="effkit-bench-")) / "run"

    effkit = Path(sys.executable).with_name("effkit")
    command = [str(effkit) if effkit.exists() else sys.executable, *([] if effkit.exists() else ["-m", "effkit"])]
    started = time.perf_counter()
    result = subprocess.run([*command, "compress", "--out", str(out), "--quiet"], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode not in (0, 3):
        print(result.stderr, file=sys.stderr)
        print(f"effkit compress failed with exit code {result.returncode}")
        return 1

    report = json.loads((out / "report.json").read_text())
    variants = {v["name"]: v for v in report["variants"]}
    ok = [v for v in report["variants"] if v["status"] == "ok"]
    float32 = variants["baseline-tflite-none"]
    int8 = variants["baseline-tflite-int8"]
    chosen = variants.get(report["recommended"] or "")
    checks = [
        ("wall time of effkit compress", wall, f"<= {TARGETS['wall_seconds']:.0f} s", wall <= TARGETS["wall_seconds"]),
        (
            "variants ok / made",
            f"{len(ok)}/{len(variants)}",
            f">= {TARGETS['variants']} all ok",
            len(ok) == len(variants) >= TARGETS["variants"],
        ),
    ]
    if chosen:
        ratio = float32["size_bytes"] / chosen["gzip_bytes"]
        drop = -chosen["top1_delta_pp"]
        checks += [
            (
                f"recommended {chosen['name']}: float32 TFLite raw / its gzip",
                ratio,
                f">= {TARGETS['size_ratio']:.0f}x",
                ratio >= TARGETS["size_ratio"],
            ),
            (
                "recommended: top-1 drop (pp)",
                drop,
                f"<= {TARGETS['accuracy_drop_pp']}",
                drop <= TARGETS["accuracy_drop_pp"],
            ),
        ]
    else:
        checks.append(("recommended variant", "none", "one within tolerance", False))
    import statistics

    from effkit.suites import latency_rounds
    from effkit.types import Report

    measured = Report.from_dict(report)

    def confirmed(variant: str, reference: str) -> tuple[float, float]:
        in_run = variants[variant]["latency_ms"]["p50"] / variants[reference]["latency_ms"]["p50"]
        return in_run, round(statistics.median(latency_rounds(measured, out, [variant], reference)[variant]), 4)

    missing = [name for name in REQUIRED if name not in variants or not variants[name].get("parity")]
    checks.append(
        (
            "ONNX dynamic/static, LiteRT dynamic/static present with parity",
            ", ".join(missing) or "all",
            "all",
            not missing,
        )
    )
    float_agreement = min(v["parity"]["top1_agreement"] for v in ok if v["quantization"] == "none")
    int8_agreement = min(v["parity"]["top1_agreement"] for v in ok if v["quantization"] == "int8")
    checks += [
        ("lowest top-1 agreement with Keras, float32 variants (%)", float_agreement, "100", float_agreement == 100.0),
        (
            "lowest top-1 agreement with Keras, int8 variants (%)",
            int8_agreement,
            f">= {TARGETS['int8_agreement']}",
            int8_agreement >= TARGETS["int8_agreement"],
        ),
    ]
    from effkit.cpu import CpuFingerprint

    cpu = CpuFingerprint.from_dict(report["environment"]["fingerprint"])
    for label, variant, reference, target in (
        ("ONNX static QDQ / ONNX float32 p50", "baseline-onnx-int8", "baseline-onnx-none", "onnx_static_latency"),
        ("int8 / float32 TFLite p50", "baseline-tflite-int8", "baseline-tflite-none", "int8_latency"),
    ):
        in_run, ratio = confirmed(variant, reference)
        if cpu.int8_dot:
            passed, shown_target = ratio <= TARGETS[target], f"<= {TARGETS[target]}"
        else:  # the speed targets were set on a CPU with int8 dot products; without them int8 runs at float speed
            passed, shown_target = True, f"<= {TARGETS[target]} with VNNI/dotprod; not judged on {cpu.isa_class}"
        checks.append((f"{label}, confirmed (in run {in_run:.2f})", ratio, shown_target, passed))

    print(f"effkit compress (embedded default) on {cpu.describe()}")
    print(
        f"baseline keras top-1 {report['baseline']['top1'] * 100:.2f}%; float32 TFLite {float32['size_bytes']:,} B, "
        f"p50 {float32['latency_ms']['p50'] * 1e3:.1f} us; int8 p50 {int8['latency_ms']['p50'] * 1e3:.1f} us"
    )
    width = max(len(name) for name, *_ in checks)
    for name, value, target, passed in checks:
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"  {'PASS' if passed else 'FAIL'}  {name.ljust(width)}  {shown:>10}  (target {target})")
    if args.keep or args.out:
        print(f"output kept in {out}")
    else:
        shutil.rmtree(out.parent, ignore_errors=True)
    return 0 if all(passed for *_, passed in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
