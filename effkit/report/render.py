"""From a Report to what people and CI read: report.json, report.md and the terminal table. Also the pick."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from ..config import Format, Quant
from ..cpu import CpuFingerprint, fingerprint
from ..files import write_text
from ..ship.micro import arena_with_margin
from ..stats import PairedChange, paired_change
from ..types import REFERENCE_VARIANT, Report, Status, Variant, variant_name
from .targets import (
    DESCRIPTIONS,
    MCU,
    MOBILE,
    TARGETS,
    arena_bytes,
    flash_bytes,
    int8_reference,
    not_slower,
    recommend_for,
)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
INTEGER_MODES = (Quant.DYNAMIC, Quant.INT4, Quant.INT8, Quant.INT16X8)
NO_FASTER = 0.9  # an integer artifact whose p50 is at least this share of float32's is "no faster"
PACKAGES = (
    "effkit",
    "tensorflow",
    "tf-keras",
    "keras",
    "tensorflow-model-optimization",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "ai-edge-litert",
    "tflite-micro",
    "numpy",
    "scikit-learn",
)


def environment() -> dict[str, Any]:
    """Versions, CPU and core count: what a reader needs to compare two reports' figures."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    cpu = fingerprint()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu.model,
        "cores": os.cpu_count(),
        "fingerprint": cpu.to_dict(),
        "packages": versions,
    }


def machine_line(environment: dict[str, Any]) -> str:
    """`AMD EPYC (x86_64-avx2: avx avx2 fma ...), 2 cores`; the bare CPU name for a report without fingerprint."""
    if environment.get("fingerprint"):
        return CpuFingerprint.from_dict(environment["fingerprint"]).describe()
    return f"{environment.get('cpu', '?')} (no CPU features recorded), {environment.get('cores', '?')} cores"


def speed_notes(variants: Iterable[Variant], cpu: CpuFingerprint) -> tuple[str, ...]:
    """Say so when integer artifacts run no faster than their float32 sibling here, and why that may be."""
    variants = list(variants)
    by_name = {v.name: v for v in variants if v.status == Status.OK and v.latency_ms}
    slow = []
    for v in variants:
        if v.name not in by_name or v.quantization not in INTEGER_MODES or v.format == Format.KERAS:
            continue
        source = v.name.split(f"-{v.format}-")[0]
        reference = by_name.get(variant_name(source, v.format, Quant.NONE))
        if reference is None:
            continue
        ratio = v.latency_ms.p50 / reference.latency_ms.p50
        if ratio >= NO_FASTER:
            slow.append(f"{v.name} {ratio:.2f}x")
    if not slow:
        return ()
    head = f"Integer artifacts no faster than float32 on this CPU ({len(slow)}; p50 / float32 p50): {', '.join(slow)}."
    if cpu.int8_dot:
        why = (
            f" This CPU ({cpu.isa_class}) has int8 dot-product instructions, so look at the model: small layers, "
            "dynamic-range activations quantized at run time, or ops the runtime runs outside its fast kernels "
            "(e.g. ONNX Runtime's ConvInteger)."
        )
    else:
        why = (
            f" This CPU ({cpu.isa_class}: {' '.join(cpu.features) or 'no SIMD features read'}) has no int8 "
            "dot-product instruction (VNNI, AMX, dotprod, i8mm): its int8 kernels multiply through 16-bit steps and "
            "are often no faster than float32. Figures from a CPU with one do not carry over."
        )
    return (head + why,)


def recommend(variants: Iterable[Variant], *, max_accuracy_drop: float, limits: Any = None) -> str | None:
    """The smallest gzip size among `ok` deployable artifacts whose top-1 drop is within the tolerance (pp): the
    `mobile` target's rule (`targets.recommend_for`)."""
    return recommend_for(variants, MOBILE, max_accuracy_drop=max_accuracy_drop, limits=limits)


def write_report(report: Report, out_dir: Path) -> tuple[Path, Path]:
    """Write report.json and report.md into `out_dir`, each atomically."""
    json_path = write_text(Path(out_dir) / REPORT_JSON, report.to_json())
    md_path = write_text(Path(out_dir) / REPORT_MD, to_markdown(report))
    return json_path, md_path


def write_visual_report(report: Report, out_dir: Path) -> list[Path]:
    """The trade-off plots (PNG) and report.html, which embeds them and the table (one self-contained file)."""
    from .plots import plot_search, plot_tradeoffs

    images = plot_tradeoffs(report, out_dir) + plot_search(report, out_dir)
    html = write_text(Path(out_dir) / REPORT_HTML, to_html(report, images))
    return [*images, html]


def to_html(report: Report, images: list[Path]) -> str:
    """A self-contained page: summary, plots (embedded as data URIs), the variant table, what was not ok."""
    import base64
    import html

    title = f"effkit report: {report.model.get('name', 'model')} on {report.data.get('name', 'data')}"
    summary_text = html.escape(summary(report)).replace("**", "")
    figures = "".join(
        f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(path.read_bytes()).decode()}">'
        for path in images
    )
    header = "".join(f"<th>{html.escape(column)}</th>" for column in COLUMNS)
    rows = "".join(
        f'<tr class="{"chosen" if row[0] else ""}">'
        + "".join(f"<td>{html.escape(cell)}</td>" for cell in row)
        + "</tr>"
        for row in _rows(report)
    )
    problems = "".join(
        f"<li><code>{html.escape(v.name)}</code> ({html.escape(str(v.status))}): {html.escape(v.error or '')}</li>"
        for v in report.variants
        if v.status != Status.OK
    )
    incomplete = "<p><strong>Incomplete:</strong> the run was interrupted.</p>" if not report.complete else ""
    if report.recommended_by_target is not None:
        head, *picks = [line for line in targets_section(report).replace("**", "").splitlines() if line]
        items = "".join(f"<li>{html.escape(line.removeprefix('- '))}</li>" for line in picks)
        incomplete = f"<p>{html.escape(head)}</p><ul>{items}</ul>" + incomplete
    not_ok = f"<h2>Not ok</h2><ul>{problems}</ul>" if problems else ""
    if report.notes:
        not_ok += "<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(note)}</li>" for note in report.notes) + "</ul>"
    environment = report.environment
    machine = (
        f"<p><small>Machine: {html.escape(machine_line(environment))}. "
        f"Generated by effkit {html.escape(str(environment.get('packages', {}).get('effkit', '')))}.</small></p>"
    )
    body = (
        f"<h1>{html.escape(title)}</h1>\n<p>{summary_text}</p>{incomplete}\n<div>{figures}</div>\n"
        f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>\n{not_ok}\n{machine}"
    )
    return html_page(title, body)


PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
img { max-width: 48%; margin: 0.5em 1% 0.5em 0; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
td:nth-child(2), th:nth-child(2) { text-align: left; font-family: monospace; }
tr.chosen { background: #fff3b0; font-weight: bold; }
"""


def html_page(title: str, body: str) -> str:
    """A self-contained HTML page (one stylesheet for compress's and bench's reports)."""
    import html

    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
        f"<style>{PAGE_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def to_markdown(report: Report) -> str:
    lines = [f"# effkit report: {report.model.get('name', 'model')} on {report.data.get('name', 'data')}", ""]
    lines += [f"Measured on {machine_line(report.environment)}.", ""]
    lines += [summary(report), ""]
    if report.recommended_by_target is not None:
        lines += [targets_section(report), ""]
    if not report.complete:
        lines += ["**Incomplete:** the run was interrupted; the rows below are what finished.", ""]
    lines += [table(report), ""]
    problems = [v for v in report.variants if v.status != Status.OK]
    if problems:
        lines += ["Not ok:", ""]
        lines += [f"- `{v.name}` ({v.status}): {v.error}" for v in problems]
        lines.append("")
    if report.notes:
        lines += ["Notes:", ""]
        lines += [f"- {note}" for note in report.notes]
        lines.append("")
    if report.search:
        lines += search_section(report.search), ""
    if report.sensitivity:
        lines += sensitivity_section(report.sensitivity), ""
    if report.devices:
        lines += devices_section(report), ""
    latency = report.config.get("latency", {})
    headline = next((v.latency_ms for v in report.variants if v.latency_ms and v.format != Format.KERAS), None)
    batch, threads = (headline.batch, headline.threads) if headline else ("?", "?")
    lines.append(
        f"Latency: batch {batch}, {threads} thread(s), p50/p99 over "
        f"≥{latency.get('min_runs', '?')} runs and ≥{latency.get('min_seconds', '?')} s after warm-up; .tflite in "
        "the LiteRT interpreter (XNNPACK), .onnx in ONNX Runtime (CPU); keras rows are a traced tf.function on "
        "TensorFlow's own thread pool. Sizes in KiB; ×f32 = float32 TFLite bytes / these bytes (raw, and gzip -9 "
        "of both)."
    )
    lines.append(
        "TFLM arena: the tensor arena TFLite Micro's interpreter measured for a .tflite (reference kernels; "
        "`(float)` = it runs but computes in float, `no` = TFLite Micro refuses it, the reason in report.json)."
    )
    lines.append(
        "Flips: test samples the baseline Keras model got right and this variant gets wrong (-) and the reverse (+), "
        "with the exact McNemar p-value: a change of a few samples with a large p is noise, not a difference."
    )
    env = report.environment
    lines.append(f"Machine: {machine_line(env)}, Python {env.get('python', '?')}.")
    return "\n".join(lines) + "\n"


def search_section(trace: dict[str, Any]) -> str:
    """The search's trace: every candidate tried, in order, with why it was kept or dropped."""
    budget = trace.get("budget_seconds")
    head = (
        f"## Search: {trace.get('goal')} within {trace.get('max_accuracy_drop')} pp\n\n"
        f"Decided on the validation split (baseline {_percent(trace.get('baseline_val_top1'))}); "
        f"{len(trace.get('candidates', []))} candidates in {trace.get('seconds', 0):.0f} s"
        f"{f' of a {budget:.0f} s budget' if budget else ''}, stopped: {trace.get('stopped')}. "
        "The front was measured on the test split in order until one was within budget there."
    )
    rows = [
        (
            f"`{c['name']}`",
            c["kind"],
            c.get("parent") or "",
            _settings(c.get("settings") or {}),
            _percent(c.get("val_top1")),
            _signed(0.0 - c["val_drop_pp"] if c.get("val_drop_pp") else (0.0 if c.get("val_drop_pp") == 0 else None)),
            _kib(c.get("gzip_bytes")),
            _ms(c.get("p50_ms")),
            c["decision"] + (f": {c['reason']}" if c.get("reason") else ""),
        )
        for c in trace.get("candidates", [])
    ]
    header = ("candidate", "kind", "from", "settings", "val top-1", "Δ pp", "gzip KiB", "p50 ms", "decision")
    return head + "\n\n" + markdown_table(header, rows, right={4, 5, 6, 7})


def _settings(settings: dict[str, Any]) -> str:
    shown = []
    for key, value in settings.items():
        if key == "layer_targets":
            value = ", ".join(f"{layer} {share:.2f}" for layer, share in value.items())
        elif key == "layers":
            if not value:
                continue
            value = ", ".join(f"{layer} {precision}" for layer, precision in value.items())
        shown.append(f"{key} {value}")
    return "; ".join(shown)


def sensitivity_section(table: dict[str, Any]) -> str:
    """Per-layer validation drop of each change applied to that layer alone, most sensitive first."""
    probes = [f"{float(s):g}" for s in table.get("probe_sparsities", ())]

    def score(row: dict[str, Any]) -> float:
        drops = (row.get("prune_drop_pp"), row.get("int8_drop_pp"), row.get("int4_drop_pp"))
        return sum(max(0.0, d) for d in drops if d is not None)

    rows = [
        (
            f"`{r['layer']}`",
            r.get("op") or "",
            f"{r['weights']:,}",
            *(_signed((r.get("prune_curve") or {}).get(p)) for p in probes),
            _signed(r.get("int8_drop_pp")),
            _signed(r.get("int4_drop_pp")) if r.get("int4_supported") is not False else "no int4",
        )
        for r in sorted(table.get("layers", []), key=lambda r: -score(r))
    ]
    cached = " (read from the cache)" if table.get("cached") else ""
    head = (
        f"## Sensitivity{cached}\n\nValidation drop in pp when one layer alone changes, everything else as trained: "
        "pruned to each sparsity (its smallest weights zeroed, no fine-tune), or its op alone quantized (static "
        "int8, or int4 weights). Positive = worse; most sensitive first."
    )
    header = ("layer", "op", "weights", *(f"pruned {float(p):.0%}" for p in probes), "int8", "int4")
    return head + "\n\n" + markdown_table(header, rows, right=set(range(2, len(header))))


def summary(report: Report) -> str:
    baseline = report.baseline
    text = f"Baseline Keras top-1 **{_percent(baseline.get('top1'))}** on {report.data.get('test', '?')} test samples."
    if report.data.get("labels_from") == "model":
        text = (
            "The data came without labels, so its labels are the model's own top-1: every top-1 here is agreement "
            "with the model you gave. " + text
        )
    if report.recommended is None:
        drop = report.config.get("max_accuracy_drop")
        return text + f" No artifact is within {drop} pp of it: nothing recommended."
    chosen = report.variant(report.recommended)
    text += f" Recommended: **{chosen.name}**: {_kib(chosen.gzip_bytes)} KiB gzip, {_kib(chosen.size_bytes)} KiB raw"
    reference = _float32_tflite(report)
    if reference is not None and reference.size_bytes and chosen.gzip_bytes and chosen.size_bytes:
        text += (
            f", {reference.size_bytes / chosen.gzip_bytes:.1f}x smaller gzipped than the float32 TFLite file raw "
            f"({reference.size_bytes / chosen.size_bytes:.1f}x raw to raw, {_ratio(chosen.compression_gzip)} gzip to "
            "gzip)"
        )
    latency = chosen.latency_ms
    change = change_from_baseline(report, chosen)
    delta = change.describe() if change else f"{_signed(chosen.top1_delta_pp)} pp"
    text += f"; top-1 {_percent(chosen.top1)} ({delta}), p50 {_ms(latency.p50 if latency else None)} ms."
    int8 = int8_reference(report.variants)
    if int8 is not None and latency is not None and not not_slower(chosen, int8):
        text += f" Its size costs latency: {latency.p50 / int8.latency_ms.p50:.1f}x the p50 of `{int8.name}` "
        text += f"({_ms(int8.latency_ms.p50)} ms)"
        mobile = (report.recommended_by_target or {}).get(MOBILE)
        if mobile and mobile != chosen.name and not_slower(report.variant(mobile), int8):
            text += f"; the mobile pick, `{mobile}`, is the smallest that is not slower"
        text += "."
    return text


def targets_section(report: Report) -> str:
    """The best variant for each deployment target, within the same accuracy budget."""
    picks = report.recommended_by_target or {}
    drop = report.config.get("max_accuracy_drop")
    lines = [f"Best per target (within {drop} pp):", ""]
    for target in TARGETS:
        name = picks.get(target)
        head = f"- **{target}** ({DESCRIPTIONS[target]}): "
        if name is None:
            lines.append(head + "none within the budget")
            continue
        try:
            chosen = report.variant(name)
        except KeyError:
            lines.append(head + f"`{name}`")
            continue
        text = f"`{name}`, top-1 {_percent(chosen.top1)} ({_signed(chosen.top1_delta_pp)} pp)"
        if target == MOBILE:
            latency = chosen.latency_ms
            text += f", {_kib(chosen.gzip_bytes)} KiB gzip, p50 {_ms(latency.p50 if latency else None)} ms"
        elif target == MCU:
            arena = arena_bytes(chosen)
            lut = (chosen.micro or {}).get("lut")
            flash = f"{_kib(flash_bytes(chosen))} KiB flash"
            if lut and flash_bytes(chosen) != chosen.size_bytes:
                flash += f" LUT-compressed ({_kib(chosen.size_bytes)} raw, {_kib(chosen.gzip_bytes)} gzip)"
            text += f", {flash}, tensor arena {_kib(arena)} KiB measured"
            if arena:
                text += f" ({_kib(arena_with_margin(arena))} KiB with margin)"
        lines.append(head + text)
    return "\n".join(lines)


def _micro_cell(variant: Variant) -> str:
    micro = variant.micro
    if not micro:
        return ""
    if not micro.get("runs"):
        return "no"
    arena = _kib(micro.get("arena_bytes"))
    return arena if micro.get("full_integer") else f"{arena} (float)"


def change_from_baseline(report: Report, variant: Variant) -> PairedChange | None:
    """The variant's per-sample change against the baseline Keras model, when both kept their correctness."""
    try:
        baseline = report.variant(report.baseline.get("name", ""))
    except KeyError:
        return None
    samples = report.data.get("test")
    if not (baseline.correct and variant.correct and samples):
        return None
    return paired_change(baseline.correct, variant.correct, int(samples))


def _float32_tflite(report: Report) -> Variant | None:
    try:
        reference = report.variant(REFERENCE_VARIANT)
    except KeyError:
        return None
    return reference if reference.status == Status.OK else None


COLUMNS = (
    "",
    "variant",
    "sparsity",
    "top-1",
    "Δ pp",
    "flips",
    "KiB",
    "gzip KiB",
    "×f32",
    "×f32 gzip",
    "p50 ms",
    "p99 ms",
    "TFLM arena KiB",
    "status",
)


def _rows(report: Report) -> list[tuple[str, ...]]:
    rows = []
    for v in report.variants:
        latency = v.latency_ms
        rows.append(
            (
                "★" if v.name == report.recommended else "",
                v.name,
                "" if v.sparsity is None else f"{v.sparsity:.2f}",
                _percent(v.top1),
                _signed(v.top1_delta_pp),
                _flips(report, v),
                _kib(v.size_bytes),
                _kib(v.gzip_bytes),
                _ratio(v.compression_raw),
                _ratio(v.compression_gzip),
                _ms(latency.p50 if latency else None),
                _ms(latency.p99 if latency else None),
                _micro_cell(v),
                str(v.status),
            )
        )
    return rows


def table(report: Report) -> str:
    """The variants as an aligned Markdown table; the recommended row is marked ★."""
    return markdown_table(COLUMNS, _rows(report), right=set(range(2, len(COLUMNS) - 1)))


def markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]], *, right: set[int] = frozenset()) -> str:
    """A Markdown table with its columns padded to one width (compress's report, bench's results, the gate)."""
    rows = [header, *rows]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]

    def render(row: tuple[str, ...]) -> str:
        cells = [str(c).rjust(widths[i]) if i in right else str(c).ljust(widths[i]) for i, c in enumerate(row)]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return "\n".join([render(rows[0]), rule, *(render(row) for row in rows[1:])])


def _flips(report: Report, variant: Variant) -> str:
    if variant.name == report.baseline.get("name"):
        return ""
    change = change_from_baseline(report, variant)
    return change.cell() if change else ""


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.2f}%"


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.2f}"


def _kib(value: int | None) -> str:
    return "" if value is None else f"{value / 1024:.1f}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}x"


def _ms(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if value < 1 else f"{value:.2f}"


def devices_section(report: Report) -> str:
    """report.md's device table (`devices.add_devices` adds the entries): each variant timed on a device, this
    machine's p50 beside each device's."""
    devices = list(dict.fromkeys(entry["kernels_key"] for entry in report.devices))
    by_device = {key: [e for e in report.devices if e["kernels_key"] == key] for key in devices}
    lines = ["## On the device", ""]
    for index, key in enumerate(devices, 1):
        lines.append(f"- device {index}: {by_device[key][0]['device_line']}")
    lines.append("")
    columns = " | ".join(f"device {i} p50 ms (p90)" for i in range(1, len(devices) + 1))
    header = f"| variant | this machine p50 ms | {columns}"
    lines += [header + " |", "|---|---:|" + "---:|" * len(devices)]
    for name in dict.fromkeys(entry["variant"] for entry in report.devices):
        host = report.variant(name).latency_ms
        cells = []
        for key in devices:
            timed = [e for e in by_device[key] if e["variant"] == name]
            latency = timed[-1]["latency_ms"] if timed else None
            runtime = (timed[-1].get("runtime") or {}) if timed else {}
            shape = f", batch {runtime.get('batch', '?')}, {runtime.get('threads', '?')} thread(s)"
            cells.append(f"{latency['p50']:.4f} ({latency['p90']:.4f}{shape})" if latency else "")
        lines.append(f"| `{name}` | {f'{host.p50:.4f}' if host else ''} | " + " | ".join(cells) + " |")
    lines += ["", "Each device timed the bundle's artifact under effkit's protocol (`effkit-edge bench`), on the "
              "bundle's golden inputs; a device's figures compare only with the same device."]  # fmt: skip
    return "\n".join(lines)
