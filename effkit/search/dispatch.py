"""Where the search's artifacts are made: here, in line, or as tasks of a pool (`compress --search ... --ray`).

Each kept model's quantized .tflite candidates are made by `artifacts.make_artifacts`: here when there is no pool,
else as a task that starts once the previous model's task is done, since its selective int8 starts where that one
ended (the tasks form a chain, so every decision is the one a search in one process makes). Finished tasks are
merged oldest first, so the trace keeps its order; their quick latency is timed here once every task is in
(`collect`), with nothing of the search running beside it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from ..config import Format
from ..errors import one_line_reason
from ..tasks import Task, TaskPool
from ..types import Source
from .artifacts import ArtifactBatch, ArtifactMaker, make_artifacts
from .budget import Costs, Deadline
from .moves import Workshop
from .records import Artifact, Decision, Trace

log = logging.getLogger("effkit")


class Dispatch:
    """Makes each model's artifacts where they run, and merges what tasks made into the trace."""

    def __init__(
        self,
        tasks: TaskPool | None,
        *,
        maker: ArtifactMaker,
        workshop: Workshop,
        trace: Trace,
        costs: Costs,
        deadline: Deadline,
    ):
        self.tasks = tasks  # None: artifacts made here, in line
        self.maker = maker
        self.workshop = workshop
        self.trace = trace
        self.costs = costs
        self.deadline = deadline
        self.pending: list[tuple[Source, Task]] = []  # artifact tasks not merged yet, in the order submitted
        self.workers: list[str] = []  # host:pid of each artifact task merged, in order

    def artifacts(self, source: Source) -> None:
        """The source's quantized .tflite candidates: made here, or submitted as a task (`make_artifacts`).
        Every kept model gets at least its first plan, however late (its time was reserved before its fine-tune)."""
        started = time.perf_counter()
        if not self.workshop.float_tflite(source):
            return
        if self.tasks is None:
            self.maker.quantized_artifacts(source)
            self.workshop.converter_if_needed(source)
            self.costs.learn_artifacts(time.perf_counter() - started)
            return
        state = replace(source, model=None, float_tflite=None)  # no Keras model travels
        previous = self.pending[-1][1] if self.pending else None
        remaining = None if self.deadline.budget_seconds is None else self.deadline.left()
        float_tflite = source.float_tflite.read_bytes()
        task = self.tasks.submit(make_artifacts, self.maker.for_task(), state, float_tflite, remaining, previous)
        self.pending.append((source, task))
        log.info("search: %s's artifacts submitted", source.name)

    def merge_ready(self) -> None:
        """Merge the tasks that are done, oldest first, up to the first still running (the trace keeps its order)."""
        while self.pending and self.pending[0][1].done():
            self._merge(*self.pending.pop(0))

    def collect(self) -> None:
        """Wait for every artifact task, merge them, and time the candidates they made with nothing else running."""
        while self.pending:
            self._merge(*self.pending.pop(0))
        for name, artifact in list(self.trace.artifacts.items()):
            if artifact.candidate.p50_ms is not None or artifact.candidate.decision == Decision.FAILED:
                continue
            try:
                p50 = self.maker.quick_p50(artifact.path, artifact.fmt)
            except KeyboardInterrupt:
                raise
            except Exception as error:
                self.trace.notes.append(f"search: could not time {name}: {one_line_reason(error)}")
                continue
            self.trace.update(self.trace.index(name), p50_ms=p50)

    def cancel(self) -> None:
        """Cancel every task not merged yet (the search was interrupted)."""
        for _, task in self.pending:
            task.cancel()
        self.pending.clear()

    def _merge(self, source: Source, task: Task) -> None:
        """A finished artifact task's candidates into the trace, in the order it made them, and its files into the
        scratch folder; then what needs the Keras model (the converter's int8 weights)."""
        try:
            batch: ArtifactBatch = task.result()
        except KeyboardInterrupt:
            raise
        except Exception as error:  # the task failed outright (its worker died past its retries): its plans did
            self.trace.failed(f"{source.name}-artifacts", "artifact", source.name, {}, error, time.perf_counter())
            return
        for candidate in batch.candidates:
            self.trace.record(candidate)
            made = batch.made.get(candidate.name)
            if made is None:
                continue
            fmt, quantization, steps, backend = made
            path = self.maker.scratch / f"{candidate.name}.{Format(fmt).value}"
            path.write_bytes(batch.files[candidate.name])
            self.trace.artifacts[candidate.name] = Artifact(
                candidate, path, source, Format(fmt), quantization, steps, backend
            )
        self.trace.notes.extend(batch.notes)
        self.costs.learn_artifacts(sum(c.seconds or 0.0 for c in batch.candidates))
        self.workers.append(batch.worker)
        self.maker.floats_needed = batch.floats_needed
        self.maker.budget_spent = self.maker.budget_spent or batch.budget_spent
        self.workshop.converter_if_needed(source)
