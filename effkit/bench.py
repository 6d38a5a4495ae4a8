"""effkit bench: run a suite of models through `compress`, collect one results.json, gate it against a baseline.

A suite is a TOML file (see bench/suites/): the compress settings shared by its models, the gate's thresholds,
and the models, each a reference classifier from models/ (trained here, or reused from an earlier run in the same
output folder) or a model file, with its data.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .config import CompressConfig
from .errors import ConfigError, EffkitError, InputError, first_line
from .files import write_text
from .gate import Thresholds, compare, regressions_markdown
from .progress import bar as progress_bar
from .report import environment, machine_line, markdown_table
from .results import SCHEMA_VERSION, ModelResult, SuiteResult
from .types import REFERENCE_VARIANT, Report, Status

log = logging.getLogger("effkit")

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RESULTS_HTML = "report.html"


@dataclass(frozen=True)
class SuiteModel:
    """One entry of a suite: a reference model (trained from models/) or a model file, and its data."""

    name: str
    data: str
    reference: str | None = None
    path: str | None = None
    epochs: int | None = None  # training epochs for a reference model (each phase); None: its training plan's
    compress: dict[str, Any] = field(default_factory=dict)  # overrides of the suite's [compress] settings


@dataclass(frozen=True)
class Suite:
    name: str
    models: tuple[SuiteModel, ...]
    compress: dict[str, Any]
    thresholds: Thresholds
    seed: int = 0
    description: str = ""
    path: Path | None = None

    def config_for(self, model: SuiteModel) -> CompressConfig:
        merged = _merge(self.compress, model.compress)
        merged.setdefault("seed", self.seed)
        try:
            config = CompressConfig.from_dict(merged)
        except (TypeError, ValueError, AttributeError) as error:
            raise ConfigError(
                f"suite {self.name}: bad [compress] settings for {model.name}: {first_line(error)}"
            ) from None
        config.validate()
        return config


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file.

    Raises:
        InputError: the file is missing or not TOML.
        ConfigError: unknown keys, unknown reference models, or settings compress would refuse.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"suite not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid TOML: {first_line(error)}") from None
    _known(data, {"name", "description", "seed", "compress", "thresholds", "models"}, where=str(path))
    models = []
    for index, entry in enumerate(data.get("models", ())):
        where = f"{path} models[{index}]"
        _known(entry, {f.name for f in fields(SuiteModel)}, where=where)
        if bool(entry.get("reference")) == bool(entry.get("path")):
            raise ConfigError(f"{where}: give exactly one of reference (a model from models/) or path")
        if entry.get("reference"):
            import effkit_models

            effkit_models.get(entry["reference"])  # fails with the list of known names
        name = str(entry.get("name") or entry.get("reference") or Path(entry["path"]).stem)
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ConfigError(f"{where}: model name {name!r} must be a plain folder name (it names the output folder)")
        default_data = "digits" if entry.get("path") else _reference_data(entry["reference"])
        models.append(SuiteModel(**{**entry, "name": name, "data": entry.get("data", default_data)}))
    if not models:
        raise ConfigError(f"{path} lists no [[models]]")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: model names must be unique, got {names}")
    thresholds = data.get("thresholds", {})
    if not isinstance(thresholds, dict) or not isinstance(data.get("compress", {}), dict):
        raise ConfigError(f"{path}: [thresholds] and [compress] must be tables")
    _known(thresholds, {f.name for f in fields(Thresholds)}, where=f"{path} [thresholds]")
    try:
        suite = Suite(
            name=str(data.get("name", path.stem)),
            description=str(data.get("description", "")),
            seed=int(data.get("seed", 0)),
            compress=data.get("compress", {}),
            thresholds=Thresholds(**thresholds),
            models=tuple(models),
            path=path,
        )
        for model in suite.models:  # refuse bad settings now, not after an hour of benchmarking
            suite.config_for(model)
    except (TypeError, ValueError, AttributeError) as error:
        raise ConfigError(f"{path}: {first_line(error)}") from None
    return suite


def _reference_data(reference: str) -> str:
    import effkit_models

    return effkit_models.get(reference).OFFLINE_DATA


def _known(data: dict, known: set[str], *, where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


# --------------------------------------------------------------------------------------------------------------------
# Running a suite


def run_suite(suite: Suite, out_dir: str | Path) -> SuiteResult:
    """Compress every model of the suite into `out_dir/<model>/` and return the results (also in results.json).

    A model that cannot be loaded, trained or compressed is recorded with its error; the others still run.
    """
    from .pipeline import compress

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    entries: list[ModelResult] = []
    reports: dict[str, Report] = {}
    complete = False
    try:
        with progress_bar(f"suite {suite.name}: models", len(suite.models)) as advance:
            for model in suite.models:
                log.info("bench %s: model %s on %s", suite.name, model.name, model.data)
                try:
                    config = suite.config_for(model)
                    source = Path(model.path) if model.path else _trained(model, out_dir, seed=suite.seed)
                    report = compress(
                        source, model.data, config=config, out_dir=out_dir / model.name, name=model.name, overwrite=True
                    )
                except EffkitError as error:
                    log.warning("bench %s: %s failed: %s", suite.name, model.name, first_line(error))
                    entries.append(ModelResult.failed(name=model.name, data=model.data, error=first_line(error)))
                    advance(1)
                    continue
                reports[model.name] = report
                entries.append(
                    ModelResult.of(
                        report,
                        name=model.name,
                        data=model.data,
                        reference=model.reference,
                        path=model.path,
                        latency_reference=suite.thresholds.latency_reference,
                    )
                )
                advance(1)
        complete = True
    finally:
        results = SuiteResult(
            suite=suite.name,
            description=suite.description,
            complete=complete,
            seconds=round(time.perf_counter() - started, 1),
            environment=environment(),
            thresholds=suite.thresholds.to_dict(),
            models=tuple(entries),
            reports=reports,
        )
        if not complete:  # interrupted or crashed: keep the models measured so far, marked incomplete
            write_results(results, out_dir, step_summary=False)
    return results


def _trained(model: SuiteModel, out_dir: Path, *, seed: int) -> Path:
    """The reference model's file, trained now or reused from an earlier run with the same training and data."""
    import effkit_models

    from . import __version__, keras_compat
    from .data import load_dataset

    training = {
        "reference": model.reference,
        "data": model.data,
        "epochs": model.epochs,
        "seed": seed,
        "effkit": __version__,
    }
    key = hashlib.sha256(json.dumps(training, sort_keys=True).encode()).hexdigest()[:12]
    path = out_dir / "models" / f"{model.reference}-{key}.keras"
    if path.exists():
        log.info("bench: reusing %s", path)
        return path
    dataset = load_dataset(model.data, seed=seed)
    trained = effkit_models.train_reference(
        model.reference, dataset, generation=keras_compat.KERAS_3, seed=seed, epochs=model.epochs
    )
    keras_compat.save_model(trained, path)
    write_text(path.with_suffix(".json"), json.dumps(training, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------------------------------------------------
# Writing results


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

    from .report import REPORT_HTML, html_page

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


def gate(results: SuiteResult, baseline_path: Path, thresholds: Thresholds, out_dir: Path) -> SuiteResult:
    """Compare with a baseline results.json; returns a copy of `results` that holds the verdict under `gate`.

    Latency is judged only when the baseline was measured on a CPU of this run's class (see `baseline_to_read`);
    otherwise latency changes are listed as not comparable. A latency regression is confirmed before it counts:
    noise on a shared 2-core machine comes in bursts of a few seconds, which can hit a variant and spare its
    reference. The suspect and its reference are timed again in alternation (`confirm_latency`), and the median
    of those ratios is judged instead.

    Raises:
        InputError: the baseline is missing, not JSON, or holds nothing to compare with.
    """
    baseline = read_baseline(baseline_path)
    comparable = baseline.cpu_class is not None and baseline.cpu_class == results.cpu_class
    verdict = compare(results, baseline, thresholds, latency_comparable=comparable)
    suspects = [(r["model"], r["variant"]) for r in verdict.regressions if r["metric"] == "latency_ratio"]
    if suspects:
        log.info("bench: timing %d latency suspect(s) again against their reference", len(suspects))
        for model_name, variant_name in suspects:
            model = results.model(model_name)
            first = model.variant(variant_name).latency_ratio
            folder = Path(out_dir) / model_name
            report = results.reports.get(model_name) or Report.from_json((folder / "report.json").read_text("utf-8"))
            confirmed = confirm_latency(report, folder, variant_name, model.latency_reference)
            results = results.with_variant(model_name, variant_name, latency_ratio=confirmed, latency_ratio_first=first)
        verdict = compare(results, baseline, thresholds, latency_comparable=comparable)
    why = (
        f"both runs on {results.cpu_class}"
        if comparable
        else f"the baseline was measured on {baseline.cpu_class or 'an unrecorded CPU class'}, this run on "
        f"{results.cpu_class}; keep a baseline for this class with --update-baseline"
    )
    return replace(
        results,
        gate={
            "baseline": str(baseline_path),
            "passed": not verdict.regressions,
            "regressions": verdict.regressions,
            "not_counted": verdict.not_counted,
            "latency_compared": comparable,
            "latency_why": why,
        },
    )


def read_baseline(path: Path) -> SuiteResult:
    """A baseline results.json that holds something to compare with.

    Raises:
        InputError: missing, not JSON, another schema, or no model with measured variants.
    """
    if not path.is_file():
        raise InputError(f"baseline not found: {path}; create one with --update-baseline")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"baseline {path} is not JSON: {first_line(error)}") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{path} is not an effkit bench results file (schema {SCHEMA_VERSION})")
    try:
        baseline = SuiteResult.from_dict(data)
    except (TypeError, ValueError, AttributeError) as error:
        raise InputError(f"baseline {path} is not a readable results file: {first_line(error)}") from None
    measured = [
        model
        for model in baseline.models
        if any(v.name and (v.top1 is not None or v.gzip_bytes) for v in model.variants)
    ]
    if not measured:
        raise InputError(f"baseline {path} holds no measured model to compare with; recreate it with --update-baseline")
    return baseline


def class_baseline(path: Path, cpu_class: str) -> Path:
    """Where the baseline for one CPU class lives beside the suite's: `quick.json` -> `quick.x86_64-avx2.json`."""
    return path.with_name(f"{path.stem}.{cpu_class}{path.suffix}")


def baseline_to_read(path: Path, cpu_class: str) -> Path:
    """The baseline to gate against: the one kept for this CPU class when it exists, else the one given."""
    own = class_baseline(path, cpu_class)
    return own if own.is_file() else path


def baseline_to_write(path: Path, cpu_class: str) -> Path:
    """Where --update-baseline writes: the given file when it is new or from this CPU class (or unrecorded), else
    this class's own file beside it, so that another class's baseline is never replaced."""
    if not path.is_file():
        return path
    try:
        recorded = SuiteResult.from_dict(json.loads(path.read_text(encoding="utf-8"))).cpu_class
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, AttributeError):
        recorded = None
    return path if recorded in (None, cpu_class) else class_baseline(path, cpu_class)


def confirm_latency(
    report: Report, model_dir: Path, variant_name: str, reference_name: str, *, rounds: int = 7
) -> float:
    """The median over `rounds` alternating timings of p50(variant) / p50(reference), at the report's headline
    batch size and thread count, on the same input samples compress timed (its latency_input.npy)."""
    import statistics

    import numpy as np

    from .config import Format, LatencyConfig
    from .measure import time_latency
    from .outdir import LATENCY_INPUT
    from .runtime import open_runner

    headline = report.variant(reference_name).latency_ms
    samples = np.load(model_dir / LATENCY_INPUT, allow_pickle=False)[: headline.batch]
    protocol = LatencyConfig(warmup_runs=10, warmup_seconds=0.05, min_runs=100, min_seconds=0.15)
    optimization = report.config.get("latency", {}).get("ort_optimization", "all")
    runners = []
    for name in (variant_name, reference_name):
        variant = report.variant(name)
        runner = open_runner(
            model_dir / variant.path, Format(variant.format), threads=headline.threads, ort_optimization=optimization
        )
        runners.append(runner.bind(samples))
    ratios = []
    for _ in range(rounds):
        timed = [
            time_latency(call, config=protocol, batch=headline.batch, threads=headline.threads).p50 for call in runners
        ]
        ratios.append(timed[0] / timed[1])
    return round(statistics.median(ratios), 4)
