"""A bundle timed on the device it is meant for: `effkit-edge bench DIR` writes `device-result.json`.

The artifact is timed under effkit's own protocol (`timing`), on the bundle's golden inputs, at the batch and thread
count asked; the device describes itself with effkit's own fingerprint parser (`cpu`); the process's peak resident
memory is read after loading and timing. `samples_ms` keeps the per-run milliseconds (an evenly spaced subset, see
`timing.samples_ms`), so that the gate (`effkit gate`) can judge a slowdown against the spread of its baseline.
The result names the bundle by the sha256 of its artifact and of its manifest, and carries a signature: the sha256
of its own canonical JSON, so that a figure edited by hand, or one that belongs to another bundle, is refused where
it is read back (`read_result`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .cpu import fingerprint
from .manifest import MANIFEST, BundleError, check_schema, sha256_file
from .timing import DEFAULT, Protocol, samples_ms, summarize, time_calls
from .verify import golden

RESULT = "device-result.json"
RESULT_SCHEMA = "effkit.device-result"
RESULT_VERSION = 2  # 2 adds samples_ms; version 1 results (no samples) are still read


def bench(bundle: str | Path, *, threads: int = 1, batch: int = 1, protocol: Protocol = DEFAULT) -> dict[str, Any]:
    """Time the bundle's artifact here; returns the signed result (see `write_result`)."""
    from .model import load

    bundle = Path(bundle)
    if batch < 1 or threads < 1:
        raise BundleError(f"batch and threads must be >= 1, got batch {batch}, threads {threads}")
    model = load(bundle, threads=threads)
    x, _ = golden(bundle, model.manifest)
    x = np.concatenate([x] * -(-batch // len(x)))[:batch]
    call = model.bind(x)
    call()  # the first run allocates; the protocol's warm-up does the rest
    timings = time_calls(call, protocol)
    manifest = model.manifest
    result = {
        "schema": RESULT_SCHEMA,
        "schema_version": RESULT_VERSION,
        "bundle": {
            "name": manifest.get("name"),
            "variant": manifest.get("variant"),
            "artifact_sha256": manifest["artifact"]["sha256"],
            "source_sha256": manifest["artifact"].get("source_sha256"),  # the run's file, before the metadata
            "manifest_sha256": sha256_file(bundle / MANIFEST),
        },
        "device": fingerprint().to_dict(),
        "runtime": {"engine": model.runtime, "threads": threads, "batch": batch, **_versions(model.runtime)},
        "protocol": {key: getattr(protocol, key) for key in Protocol.__dataclass_fields__},
        "latency_ms": summarize(timings, batch=batch),
        "samples_ms": samples_ms(timings),
        "peak_rss_bytes": _peak_rss(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    result["signature"] = signature(result)
    return result


def signature(result: dict[str, Any]) -> str:
    """sha256 of the result's canonical JSON, without its signature."""
    body = {key: value for key, value in result.items() if key != "signature"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_result(result: dict[str, Any], path: str | Path) -> Path:
    """Write the result atomically (a temporary name, then a rename)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def read_result(path: str | Path, *, source_sha256: str | None = None) -> dict[str, Any]:
    """A device result, checked: its schema, its signature, and (given) that it is for the bundle made from the run's
    file with that sha256.

    Raises:
        BundleError: unreadable, another schema or a newer version, changed since it was written, or for another
            artifact; one line each.
    """
    path = Path(path)
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"cannot read device result {path}: {error}") from None
    return check_result(result, where=str(path), source_sha256=source_sha256)


def check_result(result: Any, *, where: str, source_sha256: str | None = None) -> dict[str, Any]:
    """`result` when it is a device result whose signature holds (see `read_result`); `where` names it in errors.

    Raises:
        BundleError: another schema or a newer version, changed since it was written, or for another artifact.
    """
    check_schema(result, where=where, schema=RESULT_SCHEMA, version=RESULT_VERSION, what="a device result")
    if result.get("signature") != signature(result):
        raise BundleError(f"{where} was changed after effkit-edge wrote it: its signature does not match")
    found = (result.get("bundle") or {}).get("source_sha256")
    if source_sha256 is not None and found != source_sha256:
        raise BundleError(f"{where} is for another artifact (sha256 {str(found)[:12]}..., not {source_sha256[:12]}...)")
    return result


def _peak_rss() -> int | None:
    """This process's peak resident memory in bytes (Linux reports KiB, macOS bytes), or None elsewhere."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _versions(engine: str) -> dict[str, str]:
    from importlib import metadata

    package = {"litert": "ai-edge-litert", "onnxruntime": "onnxruntime"}.get(engine)
    try:
        return {"version": metadata.version(package)} if package else {}
    except metadata.PackageNotFoundError:
        return {}
