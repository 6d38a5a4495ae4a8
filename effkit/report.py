"""From a Report to what people and CI read: report.json, report.md and the terminal table. Also the pick."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from .files import write_text
from .types import Report, Status, Variant

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
REFERENCE_VARIANT = "baseline-tflite-none"  # compression ratios are relative to this artifact
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
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "packages": versions,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def recommend(variants: Iterable[Variant], *, max_accuracy_drop: float) -> str | None:
    """The smallest gzip size among `ok` deployable artifacts whose top-1 drop is within the tolerance (pp)."""
    candidates = [
        v
        for v in variants
        if v.status == Status.OK
        and v.format != "keras"
        and v.gzip_bytes is not None
        and v.top1_delta_pp is not None
        and -v.top1_delta_pp <= max_accuracy_drop + 1e-9
    ]
    if not candidates:
        return None
    best = min(candidates, key=lambda v: (v.gzip_bytes, v.latency_ms.p50 if v.latency_ms else float("inf")))
    return best.name


def write_report(report: Report, out_dir: Path) -> tuple[Path, Path]:
    """Write report.json and report.md into `out_dir`, each atomically."""
    json_path = write_text(Path(out_dir) / REPORT_JSON, report.to_json())
    md_path = write_text(Path(out_dir) / REPORT_MD, to_markdown(report))
    return json_path, md_path


def write_visual_report(report: Report, out_dir: Path) -> list[Path]:
    """The trade-off plots (PNG) and report.html, which embeds them and the table (one self-contained file)."""
    from .plots import plot_tradeoffs

    images = plot_tradeoffs(report, out_dir)
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
    body = "".join(
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
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
img {{ max-width: 48%; margin: 0.5em 1% 0.5em 0; border: 1px solid #ddd; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }}
td:nth-child(2), th:nth-child(2) {{ text-align: left; font-family: monospace; }}
tr.chosen {{ background: #fff3b0; font-weight: bold; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{summary_text}</p>{incomplete}
<div>{figures}</div>
<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>
{f"<h2>Not ok</h2><ul>{problems}</ul>" if problems else ""}
<p><small>Machine: {html.escape(str(report.environment.get("cpu", "?")))}, {report.environment.get("cores", "?")} cores.
Generated by effkit {html.escape(str(report.environment.get("packages", {}).get("effkit", "")))}.</small></p>
</body></html>
"""


def to_markdown(report: Report) -> str:
    lines = [f"# effkit report: {report.model.get('name', 'model')} on {report.data.get('name', 'data')}", ""]
    lines += [summary(report), ""]
    if not report.complete:
        lines += ["**Incomplete:** the run was interrupted; the rows below are what finished.", ""]
    lines += [table(report), ""]
    problems = [v for v in report.variants if v.status != Status.OK]
    if problems:
        lines += ["Not ok:", ""]
        lines += [f"- `{v.name}` ({v.status}): {v.error}" for v in problems]
        lines.append("")
    latency = report.config.get("latency", {})
    headline = next((v.latency_ms for v in report.variants if v.latency_ms and v.format != "keras"), None)
    batch, threads = (headline.batch, headline.threads) if headline else ("?", "?")
    lines.append(
        f"Latency: batch {batch}, {threads} thread(s), p50/p99 over "
        f"≥{latency.get('min_runs', '?')} runs and ≥{latency.get('min_seconds', '?')} s after warm-up; .tflite in "
        "the LiteRT interpreter (XNNPACK), .onnx in ONNX Runtime (CPU); keras rows are a traced tf.function on "
        "TensorFlow's own thread pool. Sizes in KiB; ×f32 = float32 TFLite bytes / these bytes (raw, and gzip -9 "
        "of both)."
    )
    env = report.environment
    lines.append(f"Machine: {env.get('cpu', '?')}, {env.get('cores', '?')} cores, Python {env.get('python', '?')}.")
    return "\n".join(lines) + "\n"


def summary(report: Report) -> str:
    baseline = report.baseline
    text = f"Baseline Keras top-1 **{_percent(baseline.get('top1'))}** on {report.data.get('test', '?')} test samples."
    if report.recommended is None:
        drop = report.config.get("max_accuracy_drop")
        return text + f" No artifact is within {drop} pp of it: nothing recommended."
    chosen = report.variant(report.recommended)
    text += f" Recommended: **{chosen.name}**: {_kib(chosen.gzip_bytes)} KiB gzip"
    reference = _float32_tflite(report)
    if reference is not None and reference.size_bytes and chosen.gzip_bytes:
        text += (
            f", {reference.size_bytes / chosen.gzip_bytes:.1f}x smaller than the float32 TFLite file "
            f"({_ratio(chosen.compression_gzip)} when both are gzipped)"
        )
    latency = chosen.latency_ms
    return text + (
        f"; top-1 {_percent(chosen.top1)} ({_signed(chosen.top1_delta_pp)} pp), "
        f"p50 {_ms(latency.p50 if latency else None)} ms."
    )


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
    "KiB",
    "gzip KiB",
    "×f32",
    "×f32 gzip",
    "p50 ms",
    "p99 ms",
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
                _kib(v.size_bytes),
                _kib(v.gzip_bytes),
                _ratio(v.compression_raw),
                _ratio(v.compression_gzip),
                _ms(latency.p50 if latency else None),
                _ms(latency.p99 if latency else None),
                str(v.status),
            )
        )
    return rows


def table(report: Report) -> str:
    """The variants as an aligned Markdown table; the recommended row is marked ★."""
    rows = [COLUMNS, *_rows(report)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    right = {2, 3, 4, 5, 6, 7, 8, 9, 10}

    def render(row: tuple[str, ...]) -> str:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return "\n".join([render(rows[0]), rule, *(render(row) for row in rows[1:])])


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
