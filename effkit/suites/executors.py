"""Where a suite's models are compressed: in this process, one after another, or on a Ray cluster in parallel.

Both executors take the same `ModelJob`s and yield one `ModelOutcome` per job, and both leave the same output
folders: `out_dir/<model>/` with its artifacts, report.json, report.md and report.html, written by this process
under temporary names (`files.atomic_output`). `InProcess` is what `effkit bench` always did. `RayExecutor`
(`effkit.suites.ray`, imported only when asked for, so effkit runs without Ray) fans the production work out and
times every artifact in a task that holds its node alone.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config import CompressConfig
from ..errors import EffkitError, first_line
from ..tasks import TaskPool
from ..types import Latency, Report, Status, Variant
from .suite import SuiteModel

log = logging.getLogger("effkit")


@dataclass(frozen=True)
class ModelJob:
    """One model of a suite to compress: its entry (where its file is, or which reference classifier to train, and
    its data) with the settings resolved for it and the suite's seed."""

    model: SuiteModel
    config: CompressConfig
    seed: int = 0  # the reference's training seed

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def data(self) -> str:
        return self.model.data

    @property
    def path(self) -> str | None:
        """A model file or SavedModel folder, or None for a reference classifier."""
        return self.model.path

    @property
    def reference(self) -> str | None:
        """A reference classifier from models/, trained (or reused) under out_dir/models/."""
        return self.model.reference

    @property
    def epochs(self) -> int | None:
        """The reference's training epochs (None: its plan's)."""
        return self.model.epochs


@dataclass(frozen=True)
class ModelOutcome:
    """A job's report, or the one line saying why it has none."""

    job: ModelJob
    report: Report | None = None
    error: str | None = None


class Executor(TaskPool, ABC):
    """Runs `compress` for each job into `out_dir/<job.name>/`; as a `TaskPool`, it also runs a search's artifact
    tasks. Use as a context manager."""

    @abstractmethod
    def run(
        self, jobs: Sequence[ModelJob], out_dir: Path, *, made: Callable[[ModelJob, int], None] | None = None
    ) -> Iterator[ModelOutcome]:
        """Yield each job's outcome as it finishes (in any order). A job whose model cannot be loaded, trained or
        compressed yields its error; the others go on. Stopping the iteration (Ctrl-C) stops what is still running.

        An executor that times apart from making calls `made(job, variants)` once a job's variants are made."""

    def environment(self) -> dict[str, Any]:
        """The machine the latency figures were measured on, for results.json: the gate compares CPU classes."""
        from ..report.render import environment

        return environment()

    def __enter__(self) -> Executor:
        return self


class InProcess(Executor):
    """Every job in this process, one after another: training, compressing and timing as `compress` does them."""

    def run(
        self, jobs: Sequence[ModelJob], out_dir: Path, *, made: Callable[[ModelJob, int], None] | None = None
    ) -> Iterator[ModelOutcome]:
        from .. import pipeline
        from ..models import reference_file

        for job in jobs:
            log.info("model %s on %s", job.name, job.data)
            try:
                source = (
                    Path(job.path)
                    if job.path
                    else reference_file(job.reference, job.data, out_dir, epochs=job.epochs, seed=job.seed)
                )
                report = pipeline.compress(
                    source, job.data, config=job.config, out_dir=out_dir / job.name, name=job.name, overwrite=True
                )
            except EffkitError as error:
                yield ModelOutcome(job, error=first_line(error))
                continue
            yield ModelOutcome(job, report=report)


@dataclass(frozen=True)
class Timing:
    """What a timing task measured of one variant: its latency grid (headline first) and load time, or an error."""

    grid: tuple[Latency, ...] = ()
    load_ms: float | None = None
    error: str | None = None


def with_timings(report: Report, timings: dict[str, Timing], *, environment: dict[str, Any]) -> Report:
    """The report of `compress(time_latency=False)` with the latency its timing task measured: the same report
    `compress` writes when it times in line. The recommendation (whose tie-break is latency), the speed notes and
    the environment (the timing node's: the figures depend on its CPU) follow the timed variants."""
    from ..cpu import CpuFingerprint
    from ..report.recommend import recommendations, runtime_notes
    from ..report.render import speed_notes

    variants = [_timed(variant, timings.get(variant.name)) for variant in report.variants]
    recommended, by_target = recommendations(
        variants,
        max_accuracy_drop=float(report.config["max_accuracy_drop"]),
        search_pick=report.recommended if report.search is not None else None,
        limits=_limits(report.config),
    )
    old_runtime = set(runtime_notes(list(report.variants), report.recommended))
    kept = [note for note in report.notes if note not in old_runtime]
    cpu = CpuFingerprint.from_dict(environment["fingerprint"])
    notes = (*speed_notes(variants, cpu), *kept, *runtime_notes(variants, recommended))
    return replace(
        report,
        variants=tuple(variants),
        recommended=recommended,
        recommended_by_target=by_target,
        notes=notes,
        environment=environment,
    )


def _limits(config: dict):
    """The run's device limits from its report's config (older reports have none)."""
    from ..config import Limits

    return Limits(**(config.get("limits") or {}))


def _timed(variant: Variant, timing: Timing | None) -> Variant:
    if timing is None:
        return variant
    if timing.error is not None:
        log.warning("%-30s FAILED: %s", variant.name, timing.error)
        # As `compress` records a variant whose measuring failed: how it was made, and why, without figures.
        return Variant(
            name=variant.name,
            format=variant.format,
            quantization=variant.quantization,
            backend=variant.backend,
            path=variant.path,
            steps=variant.steps,
            status=Status.FAILED,
            error=timing.error,
        )
    return replace(
        variant,
        latency_ms=timing.grid[0],
        latency_grid=timing.grid if len(timing.grid) > 1 else None,
        load_ms=timing.load_ms if variant.load_ms is not None else None,
    )
