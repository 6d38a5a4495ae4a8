"""Running a suite: every model through `compress`, into one SuiteResult (the in-memory reports ride along)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from ..errors import EffkitError, first_line
from ..files import write_text
from ..progress import bar as progress_bar
from ..report import environment
from ..results import ModelResult, SuiteResult
from ..types import Report
from .render import write_results
from .suite import Suite, SuiteModel

log = logging.getLogger("effkit")


def run_suite(suite: Suite, out_dir: str | Path) -> SuiteResult:
    """Compress every model of the suite into `out_dir/<model>/` and return the results (also in results.json).

    A model that cannot be loaded, trained or compressed is recorded with its error; the others still run.
    """
    from ..pipeline import compress

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
                    source = Path(model.path) if model.path else reference_file(model, out_dir, seed=suite.seed)
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


def reference_file(model: SuiteModel, out_dir: Path, *, seed: int) -> Path:
    """The reference model's file under `out_dir/models/`, trained now (Keras 3) or reused from an earlier run with
    the same training and data: what effkit bench and bench/peer_tfmot.py both start from."""
    from .. import __version__, keras_compat
    from .. import models as reference_models
    from ..data import load_dataset

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
    trained = reference_models.train_reference(
        model.reference, dataset, generation=keras_compat.KERAS_3, seed=seed, epochs=model.epochs
    )
    keras_compat.save_model(trained, path)
    write_text(path.with_suffix(".json"), json.dumps(training, indent=2) + "\n")
    return path
