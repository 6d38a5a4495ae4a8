"""Running a suite: every model through `compress`, into one SuiteResult (the in-memory reports ride along)."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from ..errors import ConfigError, EffkitError, first_line
from ..progress import bar as progress_bar
from ..report.results import ModelResult, SuiteResult
from ..types import Report
from .executors import Executor, InProcess, ModelJob, ModelOutcome
from .render import write_results
from .suite import Suite

log = logging.getLogger("effkit")


def run_suite(suite: Suite, out_dir: str | Path, *, executor: Executor | None = None) -> SuiteResult:
    """Compress every model of the suite into `out_dir/<model>/` and return the results (also in results.json).

    `executor` decides where the models run: in this process, one after another (the default), or on a Ray
    cluster (`effkit.ray_executor.RayExecutor`); the results list the models in the suite's order either way. A model
    that cannot be loaded, trained or compressed is recorded with its error; the others still run.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    executor = executor or InProcess()
    started = time.perf_counter()
    entries: dict[str, ModelResult] = {}
    reports: dict[str, Report] = {}
    jobs = []
    for model in suite.models:
        try:
            config = suite.config_for(model)
        except EffkitError as error:
            entries[model.name] = ModelResult.failed(name=model.name, data=model.data, error=first_line(error))
            continue
        jobs.append(ModelJob(model, config, seed=suite.seed))
    by_name = {model.name: model for model in suite.models}
    complete = False
    try:
        # closing(): an interruption stops the executor's work at once, not when the traceback is collected.
        with (
            SuiteProgress(suite.name, jobs) as tally,
            contextlib.closing(executor.run(jobs, out_dir, made=tally.made)) as outcomes,
        ):
            for outcome in outcomes:
                model = by_name[outcome.job.name]
                if outcome.report is None:
                    log.warning("bench %s: %s failed: %s", suite.name, model.name, outcome.error)
                    entries[model.name] = ModelResult.failed(name=model.name, data=model.data, error=outcome.error)
                else:
                    reports[model.name] = outcome.report
                    entries[model.name] = ModelResult.of(
                        outcome.report,
                        name=model.name,
                        data=model.data,
                        reference=model.reference,
                        path=model.path,
                        latency_reference=suite.thresholds.latency_reference,
                    )
                tally.done(outcome)
        complete = True
    finally:
        results = SuiteResult(
            suite=suite.name,
            description=suite.description,
            complete=complete,
            seconds=round(time.perf_counter() - started, 1),
            environment=executor.environment(),
            thresholds=suite.thresholds.to_dict(),
            models=tuple(entries[model.name] for model in suite.models if model.name in entries),
            reports=reports,
        )
        if not complete:  # interrupted or crashed: keep the models measured so far, marked incomplete
            write_results(results, out_dir, step_summary=False)
    return results


class SuiteProgress:
    """Models and variants done and remaining, with an ETA from the variants' pace so far: a bar each on a
    terminal, and one line per finished model always (the only output when stderr is not a terminal, as in CI).

    An executor that makes a model's variants apart from timing them (Ray) reports the making too (`made`). A made
    variant counts as `MAKING` of a variant's work towards the ETA, and its timing as the rest.
    """

    MAKING = 2 / 3  # the quick suite here: timing took 112 of 317 s on Ray

    def __init__(self, suite: str, jobs: list[ModelJob]):
        from ..pipeline import planned_variants

        self.suite = suite
        self.models = len(jobs)
        self.planned = {job.name: planned_variants(job.config) for job in jobs}
        self.variants = sum(self.planned.values())
        self.models_done = 0
        self.variants_done = 0
        self.work = 0.0  # variants' worth of work done, making and timing
        self._made: dict[str, float] = {}
        self.started = time.perf_counter()
        self._bars = contextlib.ExitStack()

    def __enter__(self) -> SuiteProgress:
        self._advance_models = self._bars.enter_context(progress_bar(f"suite {self.suite}: models", self.models))
        self._advance_variants = self._bars.enter_context(progress_bar(f"suite {self.suite}: variants", self.variants))
        return self

    def __exit__(self, *exc) -> None:
        self._bars.close()

    def made(self, job: ModelJob, variants: int) -> None:
        """A model's variants are made and measured; their timing is still to come."""
        self._made[job.name] = variants * self.MAKING
        self.work += self._made[job.name]
        log.info("bench %s: %s made (%d variants), to be timed; ETA %s", self.suite, job.name, variants, self._eta())

    def done(self, outcome: ModelOutcome) -> None:
        made = len(outcome.report.variants) if outcome.report else 0
        counted = max(made, self.planned.get(outcome.job.name, 0))  # a failed model's variants are done too
        self.models_done += 1
        self.variants_done += counted
        self.work += counted - self._made.pop(outcome.job.name, 0.0)
        self._advance_models(1)
        self._advance_variants(counted)
        remaining = max(self.variants - self.variants_done, 0)
        log.info(
            "bench %s: %s %s; models %d/%d done, %d remaining; variants %d/%d done, %d remaining; ETA %s",
            self.suite,
            outcome.job.name,
            "failed" if outcome.report is None else f"done ({made} variants)",
            self.models_done,
            self.models,
            self.models - self.models_done,
            self.variants_done,
            self.variants,
            remaining,
            self._eta() if remaining else "0s",
        )

    def _eta(self) -> str:
        elapsed = time.perf_counter() - self.started
        return _duration(elapsed / self.work * max(self.variants - self.work, 0)) if self.work else "?"


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def executor_for(ray: str | None) -> Executor:
    """`InProcess()` for None; otherwise a `RayExecutor` on a local Ray (`''` or `local`) or the cluster at `ray`
    (`auto`, `ray://host:10001`, `host:6379`).

    Raises:
        ConfigError: Ray is not installed.
    """
    if ray is None:
        return InProcess()
    try:
        from .ray import RayExecutor
    except ImportError as error:
        raise ConfigError(
            f"--ray needs Ray, which is not installed ({first_line(error)}); pip install 'effkit[ray]'"
        ) from None
    return RayExecutor(None if ray in ("", "local") else ray)
