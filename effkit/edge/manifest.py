"""A bundle's manifest.json: what a device needs to run the artifact as effkit measured it. Read without TensorFlow.

The schema (version 1) is documented in README.md ("Deploy"); `effkit.bundle` writes it, `read_manifest` checks it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SCHEMA = "effkit.bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
GOLDEN = "golden.npz"
FORMATS = {"tflite": "litert", "onnx": "onnxruntime"}  # artifact format -> the runtime that runs it
KINDS = ("probabilities", "logits", "sigmoid", "binary_logit", "regression")
_REQUIRED = ("schema", "schema_version", "artifact", "input", "outputs", "golden")


class BundleError(Exception):
    """A bundle that is missing, damaged or not one effkit can run here. Its message is one line."""

    exit_code = 2


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_schema(data: Any, *, where: str, schema: str, version: int, what: str, newer: str = "") -> dict[str, Any]:
    """`data` when it is a JSON object of `schema` at `version` or older: every versioned file effkit writes (a
    manifest, a device result, a device baseline) is read through this one check. `what` names the kind in the
    error, `newer` says what to do about a newer version.

    Raises:
        BundleError: another schema, or a newer (or no) version; one line.
    """
    if not isinstance(data, dict) or data.get("schema") != schema:
        raise BundleError(f'{where} is not {what} (no "schema": "{schema}")')
    found = data.get("schema_version")
    if not isinstance(found, int) or found > version:
        raise BundleError(f"{where} has schema version {found}; this reader reads up to {version}{newer}")
    return data


def read_manifest(bundle: Path) -> dict[str, Any]:
    """The manifest of the bundle folder `bundle`, checked for the fields a loader relies on.

    Raises:
        BundleError: no such folder or manifest, unreadable JSON, another schema or a newer version.
    """
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"{bundle} is not a folder; expected a bundle made by `effkit bundle`")
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle} has no {MANIFEST}; expected a bundle made by `effkit bundle`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{path} is not readable JSON: {error}") from None
    what, newer = "an effkit bundle manifest", ": upgrade effkit-edge"
    check_schema(manifest, where=str(path), schema=SCHEMA, version=SCHEMA_VERSION, what=what, newer=newer)
    missing = [key for key in _REQUIRED if key not in manifest]
    if missing:
        raise BundleError(f"{path} lacks {', '.join(missing)}")
    artifact = manifest["artifact"]
    if artifact.get("format") not in FORMATS:
        raise BundleError(f"{path}: unknown artifact format {artifact.get('format')!r}; known: {', '.join(FORMATS)}")
    return manifest


def check_artifact(bundle: Path, manifest: dict[str, Any]) -> Path:
    """The artifact's path, after checking that its bytes are the ones measured (sha256).

    Raises:
        BundleError: the file is missing, or its sha256 differs from the manifest's.
    """
    artifact = manifest["artifact"]
    name = str(artifact.get("file", ""))
    path = Path(bundle) / name
    if not name or Path(name).name != name or not path.is_file():
        raise BundleError(f"{bundle}: the artifact {name!r} named by {MANIFEST} is missing")
    actual = sha256_file(path)
    if actual != artifact.get("sha256"):
        raise BundleError(
            f"{name} is not the file effkit measured: sha256 {actual[:16]}… differs from the manifest's "
            f"{str(artifact.get('sha256'))[:16]}… (changed or damaged in transit); copy the bundle again"
        )
    return path


def first_line(error: BaseException) -> str:
    """An exception as one line: its first non-empty line, or its type's name."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
