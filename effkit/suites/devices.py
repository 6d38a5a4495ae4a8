"""The gate for figures timed on a device: `effkit gate RESULT... --baseline devices.json`.

A device result (`edge.device`, written by `effkit-edge bench`) is compared only with the baseline entry for the
same bundle and variant, runtime, threads and batch, measured on a device with the same kernels
(`CpuFingerprint.kernels_key`: architecture, vendor, family, model and every kernel-selecting feature). Without one,
the row is "not comparable" with the reason, and never fails: another device's latency says nothing about this one's.

The rule is the suite gate's (`gate.Thresholds`): a slowdown counts when the p50 grows by more than
`latency_slowdown_pct`, by more than `latency_floor_ms`, and, when both results keep their per-run samples (device
results from version 2 on), when a one-sided Mann-Whitney test of this run's samples against the baseline's, scaled
by the allowed growth, gives p < `latency_p_value` (`gate.slower_than_allowed`). Each `effkit-edge bench` is a
process of its own, so the floor matters as much as between two suite runs.

The baseline (schema `effkit.device-baseline`) holds whole signed results, each checked again when read, so that an
entry edited by hand is refused like a result. `--update-baseline` replaces only the entries of the same key on the
same kernels and keeps every other device's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..edge.cpu import CpuFingerprint
from ..edge.device import check_result
from ..edge.manifest import BundleError, check_schema
from ..errors import InputError, first_line
from ..files import write_text
from ..report.render import markdown_table
from .gate import Thresholds, slower_than_allowed

BASELINE_SCHEMA = "effkit.device-baseline"
BASELINE_VERSION = 1

OK, NOISE, REGRESSION, NOT_COMPARABLE = "ok", "noise", "regression", "not comparable"


@dataclass(frozen=True)
class DeviceKey:
    """What a device figure is of: a bundle's variant, run by one runtime at one thread count and batch size."""

    name: str
    variant: str
    engine: str
    threads: int
    batch: int

    def setting(self) -> str:
        return f"{self.engine}, {self.threads} thread(s), batch {self.batch}"


@dataclass(frozen=True)
class DeviceResult:
    """A device result whose signature holds, with what the gate reads of it; `signed` is the result as written."""

    key: DeviceKey
    device: CpuFingerprint
    p50_ms: float
    samples_ms: tuple[float, ...]  # empty for a version 1 result
    runtime_version: str | None
    where: str
    signed: dict[str, Any]

    @property
    def kernels_key(self) -> str:
        return self.device.kernels_key


def parse_result(result: Any, *, where: str) -> DeviceResult:
    """A checked device result (schema, version, signature) with the fields the gate needs.

    Raises:
        InputError: not a device result, changed after it was written, or missing a field the gate needs.
    """
    try:
        check_result(result, where=where)
    except BundleError as error:
        raise InputError(str(error)) from None
    bundle, runtime, latency = (result.get(key) for key in ("bundle", "runtime", "latency_ms"))
    device = result.get("device")
    if not all(isinstance(part, dict) for part in (bundle, runtime, latency, device)):
        raise InputError(f"{where} lacks its bundle, runtime, latency_ms or device")
    p50 = latency.get("p50")
    samples = result.get("samples_ms") or []
    if not _positive(p50) or not isinstance(samples, list) or not all(_positive(value) for value in samples):
        raise InputError(f"{where} holds no usable latency: p50 and samples_ms must be numbers > 0")
    threads, batch = runtime.get("threads"), runtime.get("batch")
    if not isinstance(threads, int) or not isinstance(batch, int) or not isinstance(runtime.get("engine"), str):
        raise InputError(f"{where} does not say its runtime's engine, threads and batch")
    key = DeviceKey(str(bundle.get("name")), str(bundle.get("variant")), runtime["engine"], threads, batch)
    return DeviceResult(
        key=key,
        device=CpuFingerprint.from_dict(device),
        p50_ms=float(p50),
        samples_ms=tuple(float(value) for value in samples),
        runtime_version=runtime.get("version"),
        where=where,
        signed=result,
    )


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def read_results(paths: Sequence[Path]) -> list[DeviceResult]:
    """The device results in `paths`, each checked (`parse_result`).

    Raises:
        InputError: a file that is unreadable or not a usable, unchanged device result; one line.
    """
    results = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"cannot read device result {path}: {first_line(error)}") from None
        results.append(parse_result(data, where=str(path)))
    return results


def read_device_baseline(path: Path, *, missing_ok: bool = False) -> list[DeviceResult]:
    """The entries of a device baseline, each checked like a result (`[]` for a missing file with `missing_ok`).

    Raises:
        InputError: missing, not JSON, another schema or a newer version, an entry that was changed, or two entries
            for the same key on the same kernels.
    """
    path = Path(path)
    if not path.is_file():
        if missing_ok:
            return []
        raise InputError(f"device baseline not found: {path}; create one with --update-baseline")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"device baseline {path} is not JSON: {first_line(error)}") from None
    try:
        check_schema(data, where=str(path), schema=BASELINE_SCHEMA, version=BASELINE_VERSION, what="a device baseline")
    except BundleError as error:
        raise InputError(str(error)) from None
    if not isinstance(data.get("entries"), list):
        raise InputError(f"{path} holds no list of entries")
    entries = [parse_result(entry, where=f"{path} entry {i}") for i, entry in enumerate(data["entries"])]
    _refuse_duplicates(entries, what=f"{path} holds two entries")
    return entries


def _refuse_duplicates(entries: Sequence[DeviceResult], *, what: str) -> None:
    seen: dict[tuple[DeviceKey, str], DeviceResult] = {}
    for entry in entries:
        earlier = seen.setdefault((entry.key, entry.kernels_key), entry)
        if earlier is not entry:
            raise InputError(
                f"{what} for {entry.key.name} {entry.key.variant} ({entry.key.setting()}) on one device: "
                f"{earlier.where} and {entry.where}"
            )


def compare_devices(
    results: Sequence[DeviceResult], baseline: Sequence[DeviceResult], thresholds: Thresholds
) -> list[dict[str, Any]]:
    """One row per result: its verdict (`ok`, `noise`, `regression` or `not comparable`) and why."""
    rows = []
    for result in results:
        same_key = [entry for entry in baseline if entry.key == result.key]
        match = next((entry for entry in same_key if entry.device.same_kernels(result.device)), None)
        row = {
            "bundle": result.key.name,
            "variant": result.key.variant,
            "runtime": result.key.setting(),
            "device": result.device.slug,
            "baseline_p50_ms": match.p50_ms if match else None,
            "p50_ms": result.p50_ms,
            "file": result.where,
        }
        if match is None:
            rows.append({**row, "verdict": NOT_COMPARABLE, "why": _why_not_comparable(result, baseline, same_key)})
        else:
            verdict, why = _judge(result, match, thresholds)
            rows.append({**row, "verdict": verdict, "why": why})
    return rows


def _why_not_comparable(
    result: DeviceResult, baseline: Sequence[DeviceResult], same_key: Sequence[DeviceResult]
) -> str:
    if same_key:
        nearest = min(same_key, key=lambda entry: _distance(result.device, entry.device))
        return f"no baseline from this device: {result.device.difference(nearest.device)}"
    bundle = (result.key.name, result.key.variant)
    others = sorted({entry.key.setting() for entry in baseline if (entry.key.name, entry.key.variant) == bundle})
    if others:
        return f"no baseline for this bundle at {result.key.setting()} (the baseline has {'; '.join(others)})"
    return "no baseline for this bundle"


def _distance(mine: CpuFingerprint, theirs: CpuFingerprint) -> int:
    """How many of the kernel-selecting fields and features two fingerprints differ in."""
    fields = ("arch", "vendor", "family", "model_number")
    return sum(getattr(mine, f) != getattr(theirs, f) for f in fields) + len(set(mine.features) ^ set(theirs.features))


def _judge(result: DeviceResult, baseline: DeviceResult, limits: Thresholds) -> tuple[str, str]:
    growth_pct = (result.p50_ms / baseline.p50_ms - 1) * 100
    excess_ms = result.p50_ms - baseline.p50_ms
    change = f"{growth_pct:+.0f}%, {excess_ms:+.4f} ms"
    version = ""
    if result.runtime_version != baseline.runtime_version:
        version = f"; {result.key.engine} {result.runtime_version} here, {baseline.runtime_version} in the baseline"
    if growth_pct <= limits.latency_slowdown_pct:
        return OK, f"{change}: within {limits.latency_slowdown_pct:g}%{version}"
    if excess_ms <= limits.latency_floor_ms:
        return OK, f"{change}: within the {limits.latency_floor_ms:g} ms floor{version}"
    why = f"{change}: > {limits.latency_slowdown_pct:g}% and > {limits.latency_floor_ms:g} ms"
    if not result.samples_ms or not baseline.samples_ms:
        return REGRESSION, f"{why}; no per-run samples to test (a version 1 result): judged on p50{version}"
    p_value = slower_than_allowed(result.samples_ms, baseline.samples_ms, limits)
    noise = p_value >= limits.latency_p_value
    test = (
        f"{len(result.samples_ms)} runs against the baseline's {len(baseline.samples_ms)} "
        f"x {1 + limits.latency_slowdown_pct / 100:g} ({'noise' if noise else 'significant'}: Mann-Whitney "
        f"p={p_value:.2g})"
    )
    return (NOISE if noise else REGRESSION), f"{why}; {test}{version}"


def updated_baseline(baseline: Sequence[DeviceResult], results: Sequence[DeviceResult]) -> list[DeviceResult]:
    """`baseline` with `results` in it: each replaces the entry of its key on its kernels, every other is kept.

    Raises:
        InputError: two of `results` for the same key on the same kernels (which one to keep is not for effkit to
            guess).
    """
    _refuse_duplicates(results, what="two results given")
    replaced = {(result.key, result.kernels_key) for result in results}
    kept = [entry for entry in baseline if (entry.key, entry.kernels_key) not in replaced]
    return sorted([*kept, *results], key=lambda entry: (*_sortable(entry.key), entry.kernels_key))


def _sortable(key: DeviceKey) -> tuple[str, str, str, int, int]:
    return key.name, key.variant, key.engine, key.threads, key.batch


def write_device_baseline(path: Path, entries: Sequence[DeviceResult]) -> Path:
    """Write the baseline atomically (a temporary name, then a rename)."""
    data = {
        "schema": BASELINE_SCHEMA,
        "schema_version": BASELINE_VERSION,
        "entries": [entry.signed for entry in entries],
    }
    return write_text(Path(path), json.dumps(data, indent=1) + "\n")


def rows_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table: compared rows first, then the ones not comparable."""
    ordered = sorted(rows, key=lambda row: row["verdict"] == NOT_COMPARABLE)
    cells = [
        (
            f"`{row['bundle']}`",
            f"`{row['variant']}`",
            row["runtime"],
            f"`{row['device']}`",
            "" if row["baseline_p50_ms"] is None else f"{row['baseline_p50_ms']:.4f}",
            f"{row['p50_ms']:.4f}",
            row["verdict"],
            row["why"],
        )
        for row in ordered
    ]
    header = ("bundle", "variant", "runtime", "device", "baseline p50 ms", "p50 ms", "verdict", "why")
    return markdown_table(header, cells, right={4, 5})
