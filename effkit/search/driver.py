"""The accuracy-aware search: the smallest (or fastest) artifact within the accuracy budget.

A driver, not a technique. It orders technique steps, each of which makes a model or an artifact from another one:

- `prune.prune` / `prune_native.prune_keras3` with per-layer targets from the sensitivity table (non-uniform
  sparsity), level after level, each continuing from the previous level's model;
- `cluster.cluster`: sparsity-preserving weight clustering of the sparsest models within budget;
- `quantize.litert.quantize_litert_plan`: per-layer int8 / int4 / float weights, chosen from sensitivity;
- `qat.quantization_aware`: the QAT fallback when full-integer PTQ of the chosen model misses the budget.

It reads only the validation split to decide: every candidate's figure that a decision uses is measured on
validation, and the Dataset it is given has no test split (`Dataset.without_test`). The pipeline then measures
the chosen candidates on the test split (`Search.confirm`), taking the next one on the Pareto front when one
misses the budget there. Candidates are ordered so that a short `--budget` still returns the best found so far;
the trace of everything tried survives an interruption.

Given a task pool (`compress --search ... --ray`), the driver makes each model's quantized artifacts as a task of
their own (`make_artifacts`: the float .tflite in, the quantized files and their validation figures out) while it
goes on to fine-tune the next model; the tasks of successive models form a chain, so every decision is the one the
search makes in one process. Their quick latency is timed here, once every task is in and nothing of the search
runs beside it, before the steps that read it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CompressConfig, Format, SearchGoal
from ..errors import one_line_reason
from ..isolation import Isolation
from ..load.classifier import ModelInfo
from ..load.data import Dataset
from ..tasks import TaskPool
from ..types import Source
from .artifacts import ArtifactMaker
from .budget import CONFIRMS_RESERVED, Costs, Deadline, affordable_epochs
from .dispatch import Dispatch
from .judge import Judge
from .moves import Workshop
from .plans import channel_shares, layer_targets
from .records import Artifact, Candidate, Decision, Trace
from .sensitivity import Sensitivity, prunable_layers, table_for

log = logging.getLogger("effkit")

SENSITIVITY_SHARE = 0.3  # at most this share of the budget goes to the sensitivity table
MIN_PRUNE_EPOCHS = 2  # a pruning fine-tune shorter than this has no epoch after its ramp


class Search:
    """One search over one model. `run()` decides on validation; `confirm()` measures the front on test.

    The trace (`candidates`) grows as the search goes, so a caller that is interrupted still has it.
    """

    def __init__(
        self,
        model: Any,
        dataset: Dataset,
        *,
        info: ModelInfo,
        config: CompressConfig,
        calibration: np.ndarray,
        scratch: Path | None = None,
        cache_dirs: tuple[Path, ...] = (),
        prune_blocker: str | None = None,
        tasks: TaskPool | None = None,
        isolation: Isolation | None = None,
        started: float | None = None,
        confirm_seconds: float = 0.0,
    ):
        if config.search is None:
            raise ValueError("Search needs config.search")
        self.model = model
        self.dataset = dataset.without_test()  # decisions can not read what they must not
        self.config = config
        self.settings = config.search
        self._own_scratch = scratch is None
        self.scratch = Path(tempfile.mkdtemp(prefix="effkit-search-")) if scratch is None else Path(scratch)
        self.cache_dirs = cache_dirs
        self.began = time.perf_counter()
        self.deadline = Deadline(  # from the start of compress, less the time measuring on test will need
            self.settings.budget_seconds,
            started=self.began if started is None else started,
            reserve_seconds=CONFIRMS_RESERVED * confirm_seconds,
        )
        self.costs = Costs()
        self.shortened = False  # a fine-tune ran fewer epochs than asked, to fit the budget
        self.stopped = "running"
        self.tried = Trace()  # every candidate tried, the artifacts' files, the notes
        self.judge = Judge(
            info=info,
            x_val=self.dataset.x_val,
            labels=self.dataset.labels("val", info.output_names),
            budget_pp=config.max_accuracy_drop,
            goal=self.settings.goal,
            quantized_agreement=config.parity.quantized_agreement,
            limits=config.limits,
            target=self.settings.target,
        )
        self.maker = ArtifactMaker(
            judge=self.judge,
            trace=self.tried,
            calibration=calibration,
            sensitivity=None,
            int4_max_drop=self.settings.int4_max_drop,
            threads=config.latency.threads[0],
            batch=config.latency.batch,
            scratch=self.scratch,
            deadline=self.deadline,
            on_check=lambda: self.dispatch.merge_ready(),
            micro_flash=self.settings.target == "mcu",
        )
        self.workshop = Workshop(
            self.dataset,
            info,
            config,
            self.judge,
            self.tried,
            self.maker,
            prune_blocker=prune_blocker,
            isolation=isolation or Isolation(enabled=False),
            deadline=self.deadline,
            costs=self.costs,
        )
        self.dispatch = Dispatch(  # where each model's artifacts are made: here, or in tasks (`tasks`)
            tasks, maker=self.maker, workshop=self.workshop, trace=self.tried, costs=self.costs, deadline=self.deadline
        )

    # ------------------------------------------------------------------ what the pipeline and the report read
    @property
    def task_workers(self) -> list[str]:
        """host:pid of each artifact task merged, in order (none when artifacts are made here)."""
        return self.dispatch.workers

    @property
    def candidates(self) -> list[Candidate]:
        return self.tried.candidates

    @property
    def artifacts(self) -> dict[str, Artifact]:
        return self.tried.artifacts

    @property
    def notes(self) -> list[str]:
        return self.tried.notes

    @property
    def sensitivity(self) -> Sensitivity | None:
        """The per-layer table the plans read (None until measured, or when it could not be)."""
        return self.maker.sensitivity

    @property
    def baseline_val_top1(self) -> float | None:
        return self.judge.baseline_val_top1

    def front(self, *, without: Collection[str] = ()) -> list[Candidate]:
        return self.judge.front(self.artifacts.values(), without=without)

    def agreement_needed(self) -> float:
        return self.judge.agreement_needed()

    def confirm(
        self, measure: Callable[[Artifact], Any], model_drop: Callable[[Artifact], float | None] | None = None
    ) -> Any:
        """Measure the front on the test split until one is within budget there (`Judge.confirm`)."""
        return self.judge.confirm(self.tried, measure, model_drop)

    def confirm_integer(self, measure: Callable[[Artifact], Any]) -> Any:
        """The best full-integer candidate, measured on test too (`Judge.confirm_integer`)."""
        return self.judge.confirm_integer(self.tried, measure)

    def close(self) -> None:
        """Remove the candidates' files (the chosen ones were copied out by then)."""
        if self._own_scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def chosen_variant(self) -> str | None:
        """The report variant of the candidate chosen on test, if any."""
        chosen = self.tried.chosen()
        return chosen.variant if chosen is not None else None

    # ------------------------------------------------------------------ the driver
    def run(self) -> None:
        """Try candidates in order until done or out of budget. Never reads the test split."""
        try:
            baseline = self.workshop.baseline(self.model)
            self.maker.sensitivity = self._sensitivity(baseline)
            self.dispatch.artifacts(baseline)
            within = [baseline]
            if self.settings.goal == SearchGoal.FLASH:  # zeros and shared values save no raw byte: fewer channels do
                within.extend(self._channels(baseline))
                if self.settings.target == "mcu":  # ...except in TFLite Micro, which reads LUT-compressed weights
                    within.extend(list(self._clustered(within, smallest=True)))
            else:
                if self.settings.goal == SearchGoal.LATENCY:  # what runs faster in XNNPACK first: fewer channels
                    within.extend(self._channels(baseline))
                    within.extend(self._structured(baseline))
                for source in self._progressive(baseline):
                    within.append(source)
                for source in self._clustered(within):
                    within.append(source)
            self.dispatch.collect()
            self._qat_fallback(within)
            self._onnx_of_best_integer()
            self.stopped = "budget" if self.maker.budget_spent or self.shortened else "done"
        except KeyboardInterrupt:
            self.stopped = "interrupted"
            self.dispatch.cancel()
            raise
        finally:
            self.judge.mark_front(self.tried)

    def _out_of_time(self) -> bool:
        return self.maker.out_of_time()

    def _epochs(self, kind: str, name: str, epochs: int, *, minimum: int) -> int:
        """The epochs a fine-tune can have in the time left (`budget.affordable_epochs`): fewer when the full
        count does not fit, 0 when its minimum does not (then the budget counts as spent). Noted either way."""
        granted, why = affordable_epochs(self.deadline, self.costs, kind, epochs, minimum=minimum)
        if why:
            self.notes.append(f"search: {name}: {why}")
            log.info("search: %s: %s", name, why)
        if granted == 0:
            self.maker.budget_spent = True
        elif granted < epochs:
            self.shortened = True
        return granted

    def _progressive(self, baseline: Source) -> Iterator[Source]:
        """Prune level after level, each from the previous level's model, until a level misses the budget."""
        previous = baseline
        for level in self.settings.levels:
            if level <= previous.sparsity + 1e-3:
                continue
            if self._out_of_time():
                return
            targets = layer_targets(
                level, self.sensitivity, prunable_layers(self.model), budget_pp=self.judge.budget_pp
            )
            source = self._level(
                f"s{round(level * 100):d}",
                previous,
                "prune",
                minimum=MIN_PRUNE_EPOCHS,
                make=lambda epochs, prev=previous, level=level, targets=targets: self.workshop.prune(
                    prev, level, targets, epochs=epochs
                ),
                settings={"sparsity": level, "layer_targets": targets},
            )
            if source is None:
                return
            yield source
            self.dispatch.artifacts(source)
            previous = source

    def _level(self, name: str, previous: Source, kind: str, *, minimum: int, make, settings: dict) -> Source | None:
        """One level's fine-tune (`make(epochs)`), priced first (`_epochs`); a level whose model misses gets one
        more try with twice the fine-tune, from the same model: on a few hundred validation samples one miss can be
        a few samples of noise, or a fine-tune cut short. The kept source, or None."""
        for epochs, suffix in ((self.settings.level_epochs, ""), (2 * self.settings.level_epochs, "-long")):
            epochs = self._epochs(kind, name + suffix, epochs, minimum=minimum)
            if epochs == 0:
                return None
            source = self.workshop.source(
                name + suffix, previous, lambda epochs=epochs: make(epochs), settings={**settings, "epochs": epochs}
            )
            if source is not None or self.candidates[-1].decision != Decision.DROPPED or self._out_of_time():
                return source
        return None

    def _clustered(self, within: list[Source], *, smallest: bool = False) -> Iterator[Source]:
        """Cluster the two sparsest models within budget (`smallest`: the two kept last, the fewest channels), at
        decreasing cluster counts while within budget."""
        parents = within[1:][::-1] if smallest else sorted(within[1:], key=lambda s: -s.sparsity)
        for parent in parents[:2] or within[:1]:
            for clusters in sorted(self.settings.clusters, reverse=True):
                if self._out_of_time():
                    return
                name = f"{parent.name}-c{clusters}"
                epochs = self._epochs("cluster", name, self.settings.cluster_epochs, minimum=1)
                if epochs == 0:
                    return
                source = self.workshop.source(
                    name,
                    parent,
                    lambda parent=parent, clusters=clusters, epochs=epochs: self.workshop.cluster(
                        parent, clusters, epochs=epochs
                    ),
                    settings={"clusters": clusters, "preserve_sparsity": True},
                )
                if source is None:
                    break  # fewer clusters only costs more
                source.clusters = clusters
                yield source
                self.dispatch.artifacts(source)

    def _structured(self, baseline: Source) -> Iterator[Source]:
        """For the latency goal: 2:4 structured sparsity (at most 2 nonzero in every 4 input channels), the pattern
        checked on the artifact by the export step. XNNPACK on CPUs does not skip the zeros, so this is measured,
        not assumed to be faster."""
        if self._out_of_time():
            return
        epochs = self._epochs("prune", "s2of4", self.settings.level_epochs, minimum=MIN_PRUNE_EPOCHS)
        if epochs == 0:
            return
        source = self.workshop.source(
            "s2of4",
            baseline,
            lambda: self.workshop.prune_m_by_n(baseline, (2, 4), epochs=epochs),
            settings={"m_by_n": "2:4"},
        )
        if source is not None:
            yield source
            self.dispatch.artifacts(source)

    def _channels(self, baseline: Source) -> Iterator[Source]:
        """For the latency and flash goals: structured pruning, whole channels removed, so that the model is smaller
        and faster where it runs. Each level is that share of what the goal counts in the probed groups' channels:
        for flash the parameters they carry (a channel of a convolution before a Flatten carries far more than a
        unit of the Dense after it), for latency their multiply-accumulates. It is taken where removing them alone
        cost least on validation (`plans.channel_shares`, from each group's measured curve), and goes on from the
        previous level's model. A level that misses gets one more try with twice the fine-tune; the levels stop
        at the first that misses twice."""
        from ..techniques.structured import MAX_SHARE

        per = "params" if self.settings.goal == SearchGoal.FLASH else "macs"

        costs = None
        previous, before, done = baseline, {}, 0.0
        for level in self.settings.channel_shares:
            name = f"ch{round(level * 100):d}"
            if self._out_of_time():
                return
            if costs is None:
                try:
                    costs = self.workshop.channel_costs(self.model, self._out_of_time)
                except Exception as error:  # a model whose graph the surgery cannot read: no channels candidates
                    self.notes.append(f"search: no structured pruning: {one_line_reason(error)}")
                    return
                if not costs:
                    self.notes.append("search: no structured pruning: no channel group can shrink")
                    return
            absolute = channel_shares(level, costs, most=MAX_SHARE, per=per)
            shares = {g: round(max(0.0, 1 - (1 - a) / (1 - before.get(g, 0.0))), 4) for g, a in absolute.items()}
            share = round(1 - (1 - level) / (1 - done), 4)  # of the previous model's channels, for unprobed groups
            source = self._level(
                name,
                previous,
                "prune_channels",
                minimum=1,
                make=lambda epochs, prev=previous, share=share, shares=shares: self.workshop.prune_channels(
                    prev, share, shares, epochs=epochs
                ),
                settings={"channels": level, "counted": per, "group_shares": absolute},
            )
            if source is None:
                return
            yield source
            self.dispatch.artifacts(source)
            previous, before, done = source, absolute, level

    def _qat_fallback(self, within: list[Source]) -> None:
        """Full-integer artifacts: when PTQ of the best model within budget misses it, train with QAT (keeping
        its sparsity or clusters) and convert. `force_qat` runs it regardless."""
        if not self.settings.qat and not self.settings.force_qat:
            return
        integer = [a for a in self.artifacts.values() if a.candidate.settings.get("activations") == "int8"]
        if not within or self._out_of_time():
            return
        best = min(within, key=lambda s: self.judge.best_objective(self.artifacts.values(), s))
        ptq = [a for a in integer if a.source is best]
        if not self.settings.force_qat and any(a.candidate.decision == Decision.KEPT for a in ptq):
            return
        reason = "forced" if self.settings.force_qat else "post-training int8 of the chosen model misses the budget"
        epochs = self._epochs("qat", f"{best.name}-qat", self.settings.cluster_epochs, minimum=1)
        if epochs:
            self.workshop.qat(best, reason=reason, epochs=epochs)

    def _onnx_of_best_integer(self) -> None:
        """The best full-integer TFLite candidate's per-layer decisions in ONNX Runtime (`Workshop.onnx_of`)."""
        integer = [
            a
            for a in self.artifacts.values()
            if a.fmt == Format.TFLITE
            and a.candidate.decision == Decision.KEPT
            and a.candidate.settings.get("activations") == "int8"
            and "layers" in a.candidate.settings
        ]
        if Format.ONNX not in self.config.formats or not integer or self._out_of_time():
            return
        best = min(integer, key=lambda a: (self.judge.objective(a.candidate), a.candidate.val_drop_pp))
        self.workshop.onnx_of(best)

    def _sensitivity(self, baseline: Source) -> Sensitivity | None:
        float_tflite = self.scratch / "baseline-float.tflite"
        table = table_for(
            self.model,
            self.dataset,
            info=self.judge.info,
            float_tflite=float_tflite,
            calibration=self.maker.calibration,
            probe_sparsities=self.settings.probe_sparsities,
            cache_dirs=self.cache_dirs,
            out_of_time=lambda: self.deadline.share_passed(SENSITIVITY_SHARE),
            notes=self.notes,
        )
        if float_tflite.exists():  # measured here: the float .tflite the baseline's plans quantize
            baseline.float_tflite = float_tflite
        return table

    def trace(self) -> dict[str, Any]:
        """The report's `search` section."""
        chosen = self.tried.chosen()
        return {
            "goal": str(self.settings.goal),
            "max_accuracy_drop": self.judge.budget_pp,
            "budget_seconds": self.settings.budget_seconds,
            "seconds": round(time.perf_counter() - self.began, 2),
            "stopped": self.stopped,
            "baseline_val_top1": self.judge.baseline_val_top1,
            "decided_on": "validation",
            "front": [c.name for c in self.front()],
            "chosen": chosen.name if chosen is not None else None,
            "candidates": [c.to_dict() for c in self.candidates],
        }


def copy_artifact(source: Path, destination: Path) -> Path:
    """A chosen candidate's file into the output folder, atomically."""
    from ..files import atomic_output

    with atomic_output(destination) as temporary:
        shutil.copyfile(source, temporary)
    return destination
