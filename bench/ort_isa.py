"""Benchmark: which ONNX Runtime integer types give correct outputs on which CPU class.

Takes an `effkit bench` output folder, re-quantizes each model's float32 ONNX files (baseline and pruned) with
U8S8, S8S8, U8U8 and U8S8 + reduce_range, static QDQ and dynamic, and measures each file's top-1 agreement with
its float32 file on the model's test split.

It evaluates on this CPU and, with --emulate, again inside `qemu-x86_64 -cpu NAME` (Debian's qemu-user). ORT picks
its kernels by cpuid, which qemu emulates, so `--emulate EPYC-Rome` (AVX2, no AVX-512/VNNI) shows the U8S8
saturation of an AVX2-only CPU on any x86 machine. Latency under emulation means nothing; this is about numbers.

    effkit bench bench/suites/quick.toml --out results
    python bench/ort_isa.py results --emulate EPYC-Rome

Exit 0 when the types effkit chooses for each CPU class (`effkit.quantize.onnxruntime.ort_types`) keep top-1
agreement >= 97% on every model there, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

AGREEMENT = 97.0
SETTINGS = {  # name -> (mode, activation, weight, reduce_range)
    "static-u8s8": ("static", "QUInt8", "QInt8", False),
    "static-s8s8": ("static", "QInt8", "QInt8", False),
    "static-u8u8": ("static", "QUInt8", "QUInt8", False),
    "static-u8s8-rr": ("static", "QUInt8", "QInt8", True),
    "dynamic-u8s8": ("dynamic", None, "QInt8", False),
    "dynamic-u8u8": ("dynamic", None, "QUInt8", False),
    "dynamic-u8s8-rr": ("dynamic", None, "QInt8", True),
}


def prepare(results: Path, work: Path) -> None:
    """Quantize every model's float ONNX files under every setting; save each test split and model heads."""
    import numpy as np
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from effkit.config import CompressConfig
    from effkit.export.onnx import INPUT_NAME
    from effkit.load import keras_compat
    from effkit.load.classifier import model_input
    from effkit.load.data import check_sizes, fit_sequences, load_dataset
    from effkit.pipeline import calibration_samples

    class Reader(CalibrationDataReader):
        def __init__(self, samples):
            self.samples = iter(samples)

        def get_next(self):
            sample = next(self.samples, None)
            return None if sample is None else {INPUT_NAME: sample[np.newaxis]}

    for report_path in sorted(results.glob("*/report.json")):
        report = json.loads(report_path.read_text())
        folder, name = report_path.parent, report_path.parent.name
        model_path = Path(report["model"]["path"])
        model = keras_compat.load_model(model_path if model_path.is_absolute() else folder / model_path).model
        config = CompressConfig(seed=report["config"]["seed"])
        facts = model_input(model, name=name)  # as compress prepares the data for this model
        dataset = load_dataset(report["data"]["name"], seed=config.seed, input_shape=facts.shape)
        check_sizes(dataset)
        if facts.sequence_length:
            dataset = fit_sequences(dataset, facts.sequence_length)
        dataset = dataset.astype(facts.dtype)
        calibration = calibration_samples(dataset, config)
        np.save(work / f"{name}.x.npy", dataset.x_test)
        (work / f"{name}.heads.json").write_text(json.dumps(report["model"].get("heads", [])))
        for float_onnx in sorted((folder / "artifacts").glob("*-onnx-none.onnx")):
            source = float_onnx.name.removesuffix("-onnx-none.onnx")
            prepared = work / f"{name}.{source}.pre.onnx"
            quant_pre_process(str(float_onnx), str(prepared), skip_symbolic_shape=True)
            shutil.copy(float_onnx, work / f"{name}.{source}.float.onnx")
            for setting, (mode, activation, weight, reduce_range) in SETTINGS.items():
                target = str(work / f"{name}.{source}.{setting}.onnx")
                if mode == "dynamic":
                    quantize_dynamic(str(prepared), target, weight_type=getattr(QuantType, weight),
                                     per_channel=True, reduce_range=reduce_range)  # fmt: skip
                    continue

                types = {"activation_type": getattr(QuantType, activation), "weight_type": getattr(QuantType, weight)}
                quantize_static(str(prepared), target, Reader(calibration), quant_format=QuantFormat.QDQ,
                                per_channel=True, reduce_range=reduce_range, **types)  # fmt: skip
            prepared.unlink()
        print(f"prepared {name}", file=sys.stderr)


def evaluate(work: Path) -> dict:
    """Top-1 agreement of every quantized file with its float file, on this (possibly emulated) CPU. Imports only
    numpy and onnxruntime, so that it runs quickly enough under emulation."""
    import numpy as np
    import onnxruntime as ort
    from numpy._core._multiarray_umath import __cpu_features__ as cpu  # what cpuid says, as ORT sees it

    def run(path, x):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.log_severity_level = 1, 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        runs = [session.run(None, {name: x[i : i + 128]}) for i in range(0, len(x), 128)]
        return [np.concatenate([r[k] for r in runs]) for k in range(len(runs[0]))]

    def classes(y, kind):
        if kind in ("sigmoid", "binary_logit"):
            return (y[:, 0] > (0.5 if kind == "sigmoid" else 0.0)).astype(int)
        return y.argmax(-1)

    rows = []
    for x_file in sorted(work.glob("*.x.npy")):
        name = x_file.name.removesuffix(".x.npy")
        heads = json.loads((work / f"{name}.heads.json").read_text())
        x = np.load(x_file)
        for float_file in sorted(work.glob(f"{name}.*.float.onnx")):
            source = float_file.name.split(".")[1]
            reference = run(float_file, x)
            for setting in SETTINGS:
                outputs = run(work / f"{name}.{source}.{setting}.onnx", x)
                worst = 100.0
                for index, (ref, out) in enumerate(zip(reference, outputs, strict=True)):
                    kind = heads[index]["kind"] if index < len(heads) else "probabilities"
                    if kind == "regression":  # a regression head: the pipeline's rule, mean abs diff vs spread
                        worst = min(worst, 100.0 if np.abs(ref - out).mean() <= 0.1 * ref.std() else 0.0)
                    else:
                        worst = min(worst, float(np.mean(classes(ref, kind) == classes(out, kind)) * 100))
                rows.append({"model": name, "source": source, "setting": setting, "agreement": round(worst, 2)})
    vnni = bool(cpu.get("AVX512VNNI") or cpu.get("AVXVNNI"))
    return {"avx2": bool(cpu.get("AVX2")), "avx512f": bool(cpu.get("AVX512F")), "vnni": vnni, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "results", type=Path, help="an `effkit bench` output folder (or a prepared folder with --evaluate)"
    )
    parser.add_argument("--emulate", action="append", default=[], help="a qemu CPU model, e.g. EPYC-Rome (repeatable)")
    parser.add_argument("--evaluate", action="store_true", help=argparse.SUPPRESS)  # the step run under emulation
    args = parser.parse_args()
    if args.evaluate:
        print(json.dumps(evaluate(args.results)))
        return 0
    from effkit.config import OnnxQuantConfig
    from effkit.cpu import CpuFingerprint, fingerprint
    from effkit.quantize.onnxruntime import ort_types

    work = Path(tempfile.mkdtemp(prefix="effkit-ort-isa-"))
    try:
        prepare(args.results, work)
        runs = {f"this CPU ({fingerprint().isa_class})": evaluate(work)}
        for model in args.emulate:
            qemu = shutil.which("qemu-x86_64")
            if qemu is None:
                print("qemu-x86_64 not found: apt-get install qemu-user", file=sys.stderr)
                return 2
            done = subprocess.run(
                [qemu, "-cpu", model, sys.executable, __file__, str(work), "--evaluate"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            runs[f"emulated {model}"] = json.loads(done.stdout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    passed = True
    for label, run in runs.items():
        features = ["avx2"] * run["avx2"] + ["avx512f", "avx512bw"] * run["avx512f"] + ["avx512_vnni"] * run["vnni"]
        cpu = CpuFingerprint("x86_64", "", label, tuple(features), None)
        chosen = str(ort_types(OnnxQuantConfig(), cpu)[0])
        print(f"\n{label}: {cpu.isa_class}; effkit chooses {chosen}. Lowest top-1 agreement over the heads (%);")
        print("a regression head whose mean abs difference exceeds 0.1 x its spread counts as 0.")
        settings = list(SETTINGS)
        print("model/source".ljust(24) + "".join(s.rjust(17) for s in settings))
        table: dict = {}
        for row in run["rows"]:
            table.setdefault(f"{row['model']}/{row['source']}", {})[row["setting"]] = row["agreement"]
        for key, cells in table.items():
            print(key.ljust(24) + "".join(f"{cells[s]:16.1f}%" for s in settings))
            for setting in (f"static-{chosen}", f"dynamic-u8{chosen[-2:]}"):
                if cells[setting] < AGREEMENT:
                    passed = False
                    print(f"  FAIL {key} {setting}: {cells[setting]}% < {AGREEMENT}%")
    print(f"\n{'PASS' if passed else 'FAIL'}: effkit's choice keeps >= {AGREEMENT}% agreement on every CPU evaluated")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
