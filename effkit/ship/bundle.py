"""`effkit bundle`: one measured artifact of an `effkit compress` folder, made ready to ship to a target.

A bundle folder holds the artifact (with effkit's metadata inside it where the format allows), manifest.json
(`effkit.edge.manifest`, schema in README "Deploy") and golden.npz: test-split inputs with the outputs this
machine's runtime gave for them. `effkit.edge` loads and verifies it without TensorFlow. For `--target mcu` it
also holds a C source and header for TFLite Micro, with the arena size TFLite Micro itself measured.

Targets: `mobile` runs the artifact in LiteRT or ONNX Runtime; `mcu` in TFLite Micro, which takes only
full-integer .tflite files whose every op it has (checked op by op on the file, not assumed from its name).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Format, Quant
from ..edge.manifest import GOLDEN, MANIFEST, SCHEMA, SCHEMA_VERSION, sha256_file
from ..errors import InputError
from ..files import PARTIAL_MARKER
from ..report.outdir import TEST_SAMPLE, TEST_SAMPLE_COUNT
from ..report.render import REPORT_JSON
from ..report.targets import check_target
from ..types import Report, Variant

log = logging.getLogger(__name__)

MIN_TOP1_AGREEMENT = 0.99
METADATA_KEY = "effkit.bundle"  # the TFLite metadata entry and the ONNX metadata_props key


class BundleRefused(InputError):
    """The chosen variant cannot run on the target (or was not measured ok). One line says why."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    variant: str
    target: str
    manifest: dict[str, Any]


def make_bundle(
    run_dir: str | Path,
    *,
    target: str,
    out: str | Path,
    variant: str | None = None,
    labels: list[str] | None = None,
    overwrite: bool = False,
) -> Bundle:
    """Bundle `variant` (default: the report's best for `target`) of the compress folder `run_dir` into `out`.

    Raises:
        InputError: no report in `run_dir`, an unknown variant, or `out` holds something that is not a bundle.
        BundleRefused: the variant failed, or the target cannot run it.
    """
    run_dir, out = Path(run_dir), Path(out)
    check_target(target)
    report = _read_report(run_dir)
    _check_out(out, overwrite=overwrite)
    chosen = _choose(report, run_dir, target, variant)
    artifact = run_dir / str(chosen.path)
    x, y = _test_sample(run_dir)
    labels = _labels(report, labels)
    work = out.with_name(f".{out.name}{PARTIAL_MARKER}{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        manifest = _write_bundle(report, run_dir, chosen, artifact, target, x, y, labels, work)
        _replace(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("bundled %s for %s into %s", chosen.name, target, out)
    return Bundle(out, chosen.name, target, manifest)


def _read_report(run_dir: Path) -> Report:
    path = run_dir / REPORT_JSON
    if not path.is_file():
        raise InputError(f"{run_dir} holds no {REPORT_JSON}; give a folder written by `effkit compress`")
    try:
        return Report.from_json(path.read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path} is not a readable effkit report: {error}") from None


def _check_out(out: Path, *, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; expected a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST).is_file():
            raise InputError(f"--out {out} is not empty and holds no bundle; choose an empty or new folder")
        if not overwrite:
            raise InputError(f"--out {out} already holds a bundle; pass --overwrite to replace it")


def _replace(work: Path, out: Path) -> None:
    """Move the finished bundle into place; an old bundle there is replaced only once the new one is whole."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(work, out)
    shutil.rmtree(old, ignore_errors=True)


def refusal(variant: Variant, target: str, artifact: Path) -> str | None:
    """Why `target` cannot take `variant`, in one line, or None when it can.

    The report's record decides first (`targets.refusal`); for `mcu` the file itself is then checked op by op and
    run in TFLite Micro, so that neither an old report nor a changed file is taken on trust.
    """
    from ..report.targets import MCU
    from ..report.targets import refusal as recorded

    reason = recorded(variant, target)
    older = target == MCU and variant.ok and variant.format == Format.TFLITE and variant.micro is None
    if reason and not older:  # reports made before effkit checked TFLite Micro lack the record: check the file
        return reason
    if not artifact.is_file():
        return f"{variant.name}'s artifact {artifact} is missing"
    if target == MCU:
        from .micro import check

        micro = check(artifact)
        if not micro.runs:
            return f"{variant.name} does not run on TFLite Micro: {micro.reason}"
        if not micro.full_integer:
            return (
                f"{variant.name} is not full-integer ({variant.quantization}): "
                "a microcontroller takes int8 weights and activations"
            )
    return None


def _choose(report: Report, run_dir: Path, target: str, name: str | None) -> Variant:
    if name is not None:
        try:
            chosen = report.variant(name)
        except KeyError as error:
            raise InputError(str(error.args[0])) from None
        reason = refusal(chosen, target, run_dir / str(chosen.path))
        if reason:
            raise BundleRefused(f"cannot bundle for {target}: {reason}")
        return chosen
    from ..config import Limits
    from ..report.targets import recommend_for

    drop = report.config.get("max_accuracy_drop", 1.0)
    limits = Limits(**(report.config.get("limits") or {}))
    remaining = list(report.variants)
    while (best := recommend_for(remaining, target, max_accuracy_drop=drop, limits=limits)) is not None:
        chosen = report.variant(best)
        reason = refusal(chosen, target, run_dir / str(chosen.path))
        if reason is None:
            return chosen
        log.warning("%s: %s; trying the next best", chosen.name, reason)
        remaining = [v for v in remaining if v.name != best]
    raise BundleRefused(
        f"no variant of {run_dir} within {drop} pp of the baseline runs on {target}; "
        "name one with --variant, or compress with int8 quantization for a microcontroller"
    )


def _test_sample(run_dir: Path) -> tuple[np.ndarray, np.ndarray | None]:
    path = run_dir / TEST_SAMPLE
    if not path.is_file():
        raise InputError(
            f"{run_dir} has no {TEST_SAMPLE} (written by effkit compress since bundles exist); "
            "run effkit compress again to make golden inputs"
        )
    with np.load(path, allow_pickle=False) as data:
        return data["x"][:TEST_SAMPLE_COUNT], (data["y"][:TEST_SAMPLE_COUNT] if "y" in data else None)


def _labels(report: Report, labels: list[str] | None) -> list[str]:
    heads = report.model.get("heads") or []
    primary = next((h for h in heads if h.get("kind") != "regression"), None)
    classes = int(primary.get("classes") or primary.get("units")) if primary else 0
    if labels is None:
        return [str(i) for i in range(classes)]
    if len(labels) != classes:
        raise InputError(f"{len(labels)} labels given for a model with {classes} classes")
    return labels


def _write_bundle(
    report: Report,
    run_dir: Path,
    variant: Variant,
    artifact: Path,
    target: str,
    x: np.ndarray,
    y: np.ndarray | None,
    labels: list[str],
    work: Path,
) -> dict[str, Any]:
    from ..runtime import open_runner

    fmt = Format(variant.format)
    heads = report.model.get("heads") or []
    file_name = f"model.{fmt.value}"
    model_file = work / file_name
    described = _description(report, run_dir, variant, target, labels)
    if target == "mcu":  # flash is scarce: the C header carries the metadata, the file stays as measured
        shutil.copyfile(artifact, model_file)
    else:
        model_file.write_bytes(_with_metadata(artifact.read_bytes(), fmt, described))
    runner = open_runner(model_file, fmt, outputs=[head["name"] for head in heads])
    shape, dtype = runner.input_spec
    x = x.astype(dtype, copy=False)
    expected = runner.predict(x)
    golden: dict[str, np.ndarray] = {"x": x, **{f"y{i}": out for i, out in enumerate(expected)}}
    if y is not None:
        golden["labels"] = y
    np.savez_compressed(work / GOLDEN, **golden)
    raw = model_file.read_bytes()
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        **described,
        "artifact": {
            "file": file_name,
            "format": fmt.value,
            "runtime": "litert" if fmt == Format.TFLITE else "onnxruntime",
            "sha256": hashlib.sha256(raw).hexdigest(),
            # the run's file it was made from, before the metadata went in: what `effkit report --device` matches
            "source_sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(),
            "size_bytes": len(raw),
            "gzip_bytes": len(gzip.compress(raw, mtime=0)),
            "metadata": None if target == "mcu" else f"{METADATA_KEY} ({_metadata_place(fmt)})",
        },
        "input": {**_input_record(runner, x, shape, dtype)},
        "outputs": [
            {
                "name": head["name"],
                "kind": head["kind"],
                "units": head["units"],
                "labels": labels if head is _primary(heads) else None,
                "tensor": _output_tensor(runner, i),
            }
            for i, head in enumerate(heads)
        ],
        "golden": {
            "file": GOLDEN,
            "samples": len(x),
            "source": f"the first {len(x)} samples of the test split (digest {report.data.get('test_digest')})",
            "atol": [_tolerance(runner, i, out, variant) for i, out in enumerate(expected)],
            "min_top1_agreement": MIN_TOP1_AGREEMENT,
        },
    }
    if target == "mcu":
        manifest["micro"] = _micro_build(model_file, manifest, labels, x, expected, work, report, variant)
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _primary(heads: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((h for h in heads if h.get("kind") != "regression"), None)


def _description(report: Report, run_dir: Path, variant: Variant, target: str, labels: list[str]) -> dict[str, Any]:
    """What the manifest and the artifact's own metadata share: who made it, from what, and what was measured."""
    environment = report.environment
    latency = variant.latency_ms
    return {
        "name": report.model.get("name"),
        "variant": variant.name,
        "target": target,
        "labels": labels,
        "provenance": {
            "source_model": _source_model(report, run_dir),
            "steps": [step.to_dict() for step in variant.steps],
            "quantization": variant.quantization,
            "effkit": environment.get("packages", {}).get("effkit"),
            "packages": environment.get("packages", {}),
        },
        "measured": {
            "top1": variant.top1,
            "top1_delta_pp": variant.top1_delta_pp,
            "baseline_top1": report.baseline.get("top1"),
            "test_samples": report.data.get("test"),
            "data": report.data.get("name"),
            "size_bytes": variant.size_bytes,
            "gzip_bytes": variant.gzip_bytes,
            "latency_ms": None
            if latency is None
            else {
                "p50": latency.p50,
                "p90": latency.p90,
                "batch": latency.batch,
                "threads": latency.threads,
                "runtime": latency.runtime,
            },
            "cpu": environment.get("fingerprint"),
        },
        "portability": _portability(variant),
    }


def _source_model(report: Report, run_dir: Path) -> dict[str, Any]:
    """The model the variant was made from: its file's name and sha256, as compress read it (reports from before
    compress recorded the hash: the file itself, when it is still where the report says)."""
    path = report.model.get("path")
    record: dict[str, Any] = {"name": report.model.get("name"), "file": path and Path(path).name, "sha256": None}
    if report.model.get("sha256"):
        record["sha256"] = report.model["sha256"]
    elif path and (run_dir / path).is_file():  # relative to the compress folder, or absolute
        record["sha256"] = sha256_file(run_dir / path)
    return record


def _portability(variant: Variant) -> list[str]:
    """What a device's CPU must have for the artifact to compute as measured."""
    notes = []
    for step in variant.steps:
        if step.params.get("format") == Format.ONNX and step.params.get("types") == "u8s8":
            notes.append(
                "ONNX Runtime U8S8 int8: exact only on CPUs with an int8 dot product (VNNI, AMX, dotprod); "
                "on AVX2-only x86 its kernels saturate. Run `effkit-edge verify` on the device, or compress with "
                "--onnx-types u8u8 for a portable file."
            )
    return notes


def _with_metadata(data: bytes, fmt: Format, described: dict[str, Any]) -> bytes:
    """The artifact with `described` (JSON) inside: a TFLite metadata entry, or an ONNX metadata_props entry.

    Both runtimes ignore them; the bytes are the same for the same input (the test checks it still runs).
    """
    text = json.dumps(_embedded(described), sort_keys=True, separators=(",", ":"))
    if fmt == Format.TFLITE:
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.tools import flatbuffer_utils

        model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
        entries = [m for m in (model.metadata or []) if _decoded(m.name) != METADATA_KEY]
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = METADATA_KEY
        entry.buffer = len(model.buffers) - 1
        model.metadata = [*entries, entry]
        return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    import onnx

    proto = onnx.load_from_string(data)
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=METADATA_KEY, value=text)
    return proto.SerializeToString(deterministic=True)


def _embedded(described: dict[str, Any]) -> dict[str, Any]:
    """The part of the description worth its bytes inside the file: what it is, its labels, where it came from."""
    provenance, measured = described["provenance"], described["measured"]
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        **{key: described[key] for key in ("name", "variant", "target", "labels")},
        "source_model_sha256": provenance["source_model"]["sha256"],
        "effkit": provenance["effkit"],
        "top1": measured["top1"],
        "cpu": (measured["cpu"] or {}).get("isa_class"),
    }


def _decoded(name: Any) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def _metadata_place(fmt: Format) -> str:
    return "TFLite Model.metadata entry" if fmt == Format.TFLITE else "ONNX metadata_props"


def read_embedded(path: Path) -> dict[str, Any] | None:
    """The metadata `effkit bundle` put inside an artifact, or None."""
    path = Path(path)
    if path.suffix == ".tflite":
        from ai_edge_litert.tools import flatbuffer_utils

        model = flatbuffer_utils.read_model(str(path))
        for entry in model.metadata or []:
            if _decoded(entry.name) == METADATA_KEY:
                return json.loads(bytes(model.buffers[entry.buffer].data).decode("utf-8"))
        return None
    import onnx

    for prop in onnx.load(str(path), load_external_data=False).metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return None


def _input_record(runner: Any, x: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> dict[str, Any]:
    tensor: dict[str, Any]
    if hasattr(runner, "input") and isinstance(runner.input, dict):  # LiteRT
        scale, zero_point = runner.input["quantization"]
        tensor = {"name": runner.input["name"], "dtype": np.dtype(runner.input["dtype"]).name}
        if scale:
            tensor |= {"scale": float(scale), "zero_point": int(zero_point)}
    else:
        tensor = {"name": runner.input.name, "dtype": np.dtype(runner.input_dtype).name}
    return {
        "name": tensor["name"],
        "shape": [None, *shape],
        "dtype": np.dtype(dtype).name,
        "value_range": [float(np.min(x)), float(np.max(x))] if x.size else None,
        "preprocessing": "none outside the model: give the values effkit compress measured it on",
        "tensor": tensor,
    }


def _output_tensor(runner: Any, i: int) -> dict[str, Any]:
    if hasattr(runner, "outputs"):  # LiteRT
        detail = runner.outputs[i]
        scale, zero_point = detail["quantization"]
        tensor = {"name": detail["name"], "dtype": np.dtype(detail["dtype"]).name}
        return tensor | ({"scale": float(scale), "zero_point": int(zero_point)} if scale else {})
    return {"name": runner.output_names[i], "dtype": "float32"}


def _tolerance(runner: Any, i: int, expected: np.ndarray, variant: Variant) -> float:
    """How far a device's output may stray from the recorded one and still be the same computation.

    Integer outputs: two quantization steps (kernels may round the last step differently). Dynamic-range files
    quantize activations at run time, which kernels do differently: 2% of the output's range. Float: 1e-4 of it.
    """
    spread = float(np.max(np.abs(expected))) if expected.size else 1.0
    spread = max(spread, 1.0)
    tensor = _output_tensor(runner, i)
    if "scale" in tensor:
        return round(2.0 * tensor["scale"] + 1e-6, 8)
    if variant.quantization in (Quant.DYNAMIC, Quant.INT4):
        return round(0.02 * spread, 8)
    if variant.quantization in (Quant.INT8, Quant.INT16X8):  # float-facing QDQ graph (ONNX): a few output steps
        return round(0.01 * spread, 8)
    return round(1e-4 * spread, 8)


def _micro_build(
    model_file: Path,
    manifest: dict[str, Any],
    labels: list[str],
    x: np.ndarray,
    expected: list[np.ndarray],
    work: Path,
    report: Report,
    variant: Variant,
) -> dict[str, Any]:
    """The C source and header, the measured arena, and TFLite Micro's agreement with LiteRT on the goldens."""
    from . import micro

    checked = micro.check(model_file)
    arena = micro.arena_with_margin(checked.arena_bytes)
    quant = manifest["input"]["tensor"], manifest["outputs"][0]["tensor"]
    in_q, out_q = ((t["scale"], t["zero_point"]) if "scale" in t else None for t in quant)
    symbol = _symbol(report.model.get("name") or "model")
    header, source = micro.c_sources(
        model_file.read_bytes(),
        symbol=symbol,
        input_quant=in_q,
        output_quant=out_q,
        labels=labels,
        arena_bytes=arena,
        ops=checked.ops,
    )
    (work / f"{symbol}_model_data.h").write_text(header, encoding="utf-8")
    (work / f"{symbol}_model_data.c").write_text(source, encoding="utf-8")
    on_micro = micro.micro_predict(model_file, x)
    primary = manifest["outputs"][0]["kind"]
    from ..edge.tensors import probabilities

    agree = float(
        np.mean(np.argmax(probabilities(on_micro, primary), 1) == np.argmax(probabilities(expected[0], primary), 1))
    )
    record: dict[str, Any] = {
        "runtime": "tflite-micro",
        "arena_bytes_measured": checked.arena_bytes,
        "arena_bytes": arena,
        "ops": list(checked.ops),
        "header": f"{symbol}_model_data.h",
        "source": f"{symbol}_model_data.c",
        "flash_bytes": manifest["artifact"]["size_bytes"],
        "top1_agreement_with_litert": agree,
        "max_abs_diff_with_litert": float(np.max(np.abs(on_micro - expected[0]))),
    }
    if agree < MIN_TOP1_AGREEMENT:
        raise BundleRefused(
            f"TFLite Micro agrees with LiteRT on only {agree:.1%} of {len(x)} golden samples for {variant.name}"
        )
    compressed = micro.lut_compress(model_file, work / "model.lut.tflite")
    if compressed is not None:
        record["lut"] = {**compressed, "path": Path(compressed["path"]).name}
    return record


def _symbol(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in name).strip("_") or "model"
    return cleaned if not cleaned[0].isdigit() else f"m_{cleaned}"
