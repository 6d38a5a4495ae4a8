"""Figures from the device into a run's report: `effkit report RUN --device device-result.json ...`.

A device result (`edge.device`, written by `effkit-edge bench` on the device) is taken only when its signature holds
and when it is for a variant of this run whose artifact file has exactly the bytes the device timed (sha256). Each
one becomes an entry of the report's `devices`, and report.md shows a column per device beside this machine's p50
(`render.devices_section`).
A device latency is compared only with the same device: a result from another fingerprint is a column of its own.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..edge.cpu import CpuFingerprint
from ..edge.device import read_result
from ..edge.manifest import BundleError, sha256_file
from ..errors import InputError
from ..types import Report
from .render import REPORT_JSON, write_report


def add_devices(run: Path, results: list[Path]) -> Report:
    """The run's report with the device results added (one entry per signature), written back atomically.

    Raises:
        InputError: no report in `run`, or a result that is unreadable, changed, or for an artifact this run does
            not hold; one line each, and nothing is written.
    """
    run = Path(run)
    path = run / REPORT_JSON
    try:
        report = Report.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{run} holds no readable {REPORT_JSON}: {error}") from None
    entries = {entry["signature"]: entry for entry in report.devices}
    for result_path in results:
        entry = _entry(run, report, Path(result_path))
        entries[entry["signature"]] = entry
    updated = replace(report, devices=tuple(entries.values()))
    write_report(updated, run)
    return updated


def _entry(run: Path, report: Report, path: Path) -> dict[str, Any]:
    try:
        result = read_result(path)
    except BundleError as error:
        raise InputError(str(error)) from None
    name = (result.get("bundle") or {}).get("variant")
    try:
        variant = report.variant(name)
    except KeyError:
        raise InputError(f"{path} is for variant {name!r}, which the run in {run} does not hold") from None
    artifact = run / (variant.path or "")
    if not variant.path or not artifact.is_file():
        raise InputError(f"{path}: the run's file of {name} is missing ({artifact})")
    try:
        read_result(path, source_sha256=sha256_file(artifact))
    except BundleError as error:
        raise InputError(f"{error}: the run's {name} is not the file this device timed") from None
    device = CpuFingerprint.from_dict(result["device"])
    return {
        "variant": name,
        "device": result["device"],
        "device_line": device.describe(),
        "kernels_key": device.kernels_key,
        "runtime": result.get("runtime"),
        "latency_ms": result["latency_ms"],
        "peak_rss_bytes": result.get("peak_rss_bytes"),
        "measured_at": result.get("measured_at"),
        "signature": result["signature"],
    }
