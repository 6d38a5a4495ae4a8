"""What a suite's results look like to people: results.json, results.md (also GitHub's job summary), report.html."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..files import write_text
from ..report.render import machine_line, markdown_table
from ..report.results import SuiteResult
from ..types import REFERENCE_VARIANT, Status
from .gate import regressions_markdown

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RESULTS_HTML = "report.html"


def write_results(results: SuiteResult, out_dir: Path, *, step_summary: bool = True) -> list[Path]:
    """results.json, results.md and a report.html embedding each model's plots and table; with `step_summary`,
    results.md is also appended to GitHub Actions' $GITHUB_STEP_SUMMARY when that is set."""
    out_dir = Path(out_dir)
    markdown = results_markdown(results)
    written = [
        write_text(out_dir / RESULTS_JSON, json.dumps(results.to_dict(), indent=2) + "\n"),
        write_text(out_dir / RESULTS_MD, markdown),
        write_text(out_dir / RESULTS_HTML, results_html(results, out_dir)),
    ]
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary and summary_file:  # GitHub Actions shows this Markdown on the run's page
        with open(summary_file, "a", encoding="utf-8") as handle:
            handle.write(markdown + "\n")
    return written


VARIANT_COLUMNS = ("variant", "status", "top-1", "Δ pp", "gzip KiB", "p50 ms", "ratio")


def results_markdown(results: SuiteResult) -> str:
    lines = [f"# effkit bench: {results.suite}", ""]
    if results.description:
        lines += [results.description, ""]
    lines += [
        f"{len(results.models)} models in {results.seconds if results.seconds is not None else '?'} s on "
        f"{machine_line(results.environment)}. Latency ratio = p50 / p50 of "
        f"`{results.thresholds.get('latency_reference', REFERENCE_VARIANT)}` in the same run.",
        "",
    ]
    if not results.complete:
        lines += ["**Incomplete:** the run was interrupted; the models below are what finished.", ""]
    gate = results.gate
    if gate:
        verdict = "passed" if gate["passed"] else f"FAILED: {len(gate['regressions'])} regression(s)"
        lines += [f"**Gate against `{gate['baseline']}`: {verdict}.**", ""]
        if not gate.get("latency_compared", True):
            lines += [f"Latency not compared: {gate['latency_why']}", ""]
        if gate["regressions"]:
            lines += [regressions_markdown(gate["regressions"]), ""]
        if gate.get("not_counted"):
            lines += ["Not counted (within noise, or not comparable across CPU classes):", ""]
            lines += [regressions_markdown(gate["not_counted"]), ""]
    for model in results.models:
        lines += [f"## {model.name} ({model.data})", ""]
        if model.status != Status.OK:
            lines += [f"Failed: {model.error}", ""]
            continue
        lines += [f"Baseline top-1 {model.baseline_top1 * 100:.2f}%; recommended: `{model.recommended}`.", ""]
        rows = [
            (
                f"{'★ ' if v.name == model.recommended else ''}{v.name}",
                str(v.status),
                _cell(v.top1, "{:.2%}"),
                _cell(v.top1_delta_pp, "{:+.2f}"),
                _cell(v.gzip_bytes and v.gzip_bytes / 1024, "{:.1f}"),
                _cell(v.p50_ms, "{:.4f}"),
                _cell(v.latency_ratio, "{:.2f}"),
            )
            for v in model.variants
        ]
        lines += [markdown_table(VARIANT_COLUMNS, rows, right={2, 3, 4, 5, 6}), ""]
    return "\n".join(lines) + "\n"


def _cell(value, template: str) -> str:
    return "" if value is None else template.format(value)


def results_html(results: SuiteResult, out_dir: Path) -> str:
    """One page for the whole suite: each model's plots and table, taken from its own report."""
    import html

    from ..report.render import REPORT_HTML, html_page

    sections = []
    for model in results.models:
        page = out_dir / model.name / REPORT_HTML
        if model.status == Status.OK and page.exists():
            text = page.read_text(encoding="utf-8")
            body = text[text.index("<body>") + len("<body>") : text.rindex("</body>")]
            sections.append(f"<section>{body.replace('<h1>', '<h2>').replace('</h1>', '</h2>')}</section>")
        else:
            sections.append(f"<h2>{html.escape(model.name)}</h2><p>Failed: {html.escape(str(model.error))}</p>")
    gate = results.gate
    gate_html = ""
    if gate:
        verdict = "passed" if gate["passed"] else f"FAILED: {len(gate['regressions'])} regression(s)"
        items = "".join(
            f"<li>{html.escape(r['model'])} / {html.escape(r['variant'])}: {html.escape(r['metric'])} "
            f"{html.escape(str(r['baseline']))} → {html.escape(str(r['current']))} ({html.escape(r['why'])})</li>"
            for r in gate["regressions"]
        )
        gate_html = f"<p><strong>Gate: {verdict}</strong></p><ul>{items}</ul>"
    title = f"effkit bench: {results.suite}"
    description = html.escape(results.description)
    return html_page(title, f"<h1>{html.escape(title)}</h1>\n<p>{description}</p>{gate_html}\n{''.join(sections)}")
