"""The search's judge: the one part that reads accuracy. It scores candidates on the validation split (top-1, the
drop from the user's model, agreement with their Keras model), keeps or drops them against the budget, ranks what
is within it (objective, Pareto front) and confirms the front on the test split, which only it is shown, through
the pipeline's measurer."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import SearchGoal
from ..load.classifier import ModelInfo
from ..report.targets import NOISE_MS, NOISE_SHARE, arena_bytes
from ..runtime.measure import parity, primary_top1
from ..types import Source
from .records import Artifact, Candidate, Decision, Trace

MAX_CONFIRMED = 6  # front candidates measured on test before giving up
LEVEL_MISSES = 2  # candidates of one pruning level that miss on test before the rest of the level is passed over
WITHIN = (Decision.KEPT, Decision.FRONT, Decision.DOMINATED)


@dataclass
class Judge:
    """Validation figures and decisions for one search. `baseline_val_top1` is set once the user's model is scored."""

    info: ModelInfo
    x_val: np.ndarray
    labels: Any  # the validation labels, per output (`Dataset.labels`)
    budget_pp: float  # the accuracy drop allowed, in percentage points
    goal: SearchGoal
    quantized_agreement: float  # % top-1 agreement a quantized artifact needs on test (`ParityConfig`)
    baseline_val_top1: float | None = None
    limits: Any = None  # `config.Limits`: a candidate beyond the p50 or flash bound is not on the front
    target: str | None = None  # "mcu": only full-integer .tflite files are on the front

    # ------------------------------------------------------------------ validation figures
    def top1(self, outputs: list[np.ndarray]) -> float:
        return primary_top1(self.info, outputs, self.labels)

    def primary(self, outputs: list[np.ndarray]) -> np.ndarray:
        return outputs[self.info.heads.index(self.info.primary)]

    def drop(self, top1: float) -> float:
        return round((self.baseline_val_top1 - top1) * 100, 4) if self.baseline_val_top1 is not None else 0.0

    def agreement(self, outputs: np.ndarray, reference: np.ndarray) -> float | None:
        """% of samples with the same top-1 as the reference (`measure.parity`); None for a regression head."""
        agreement = parity(reference, outputs, self.info.primary.kind).top1_agreement
        return None if agreement is None else round(agreement, 3)

    def agreement_needed(self) -> float:
        """The top-1 agreement with its Keras model a candidate needs on validation: the parity bar the test split
        will hold it to, plus one standard error of a proportion at that bar over the validation samples, so that
        a candidate passing by a sample or two on validation does not turn out a mismatch on test."""
        bar = self.quantized_agreement / 100
        samples = max(1, len(self.x_val))
        return round(100 * min(1.0, bar + (bar * (1 - bar) / samples) ** 0.5), 2)

    # ------------------------------------------------------------------ decisions on validation
    def model_decision(self, drop: float) -> tuple[Decision, str]:
        if drop > self.budget_pp + 1e-9:
            return Decision.DROPPED, f"the Keras model already loses {drop:.2f} pp on validation"
        return Decision.KEPT, ""

    def artifact_decision(self, drop: float, agreement: float | None) -> tuple[Decision, str]:
        needed = self.agreement_needed()
        if drop > self.budget_pp + 1e-9:
            return Decision.DROPPED, f"loses {drop:.2f} pp on validation"
        if agreement is not None and agreement < needed:
            return Decision.DROPPED, f"agrees with its Keras model on {agreement:.1f}% < {needed:.1f}% on validation"
        return Decision.KEPT, ""

    # ------------------------------------------------------------------ ranking
    def objective(self, candidate: Candidate) -> float:
        if self.goal == SearchGoal.LATENCY:
            return candidate.p50_ms if candidate.p50_ms is not None else float("inf")
        if self.goal == SearchGoal.FLASH:
            flash = candidate.flash_bytes if candidate.flash_bytes is not None else candidate.size_bytes
            return flash if flash is not None else float("inf")
        return candidate.gzip_bytes if candidate.gzip_bytes is not None else float("inf")

    def best_objective(self, artifacts: Iterable[Artifact], source: Source) -> float:
        kept = [a.candidate for a in artifacts if a.source is source and a.candidate.decision == Decision.KEPT]
        values = [self.objective(candidate) for candidate in kept]
        return min(values, default=float("inf"))

    def front(self, artifacts: Iterable[Artifact], *, without: Collection[str] = ()) -> list[Candidate]:
        """Artifacts within budget that no other beats on both the objective and the validation drop, best
        objective first; `without` leaves out candidates (those already rejected on test)."""
        artifacts = [a for a in artifacts if self.target_refusal(a) is None]
        kept = [a.candidate for a in artifacts if a.candidate.decision in WITHIN and a.candidate.name not in without]
        kept = [c for c in kept if self.beyond_limits(c) is None]
        if self.goal == SearchGoal.LATENCY:
            return self._latency_front(kept)
        front = [
            c
            for c in kept
            if not any(
                (self.objective(o) <= self.objective(c) and o.val_drop_pp <= c.val_drop_pp)
                and (self.objective(o) < self.objective(c) or o.val_drop_pp < c.val_drop_pp)
                for o in kept
            )
        ]
        return sorted(front, key=lambda c: (self.objective(c), c.val_drop_pp))

    def _latency_front(self, kept: list[Candidate]) -> list[Candidate]:
        """The latency goal's front: p50 within timing noise (`report.targets.NOISE_SHARE` and `NOISE_MS`, the rule
        that says a pick is not slower) is a tie, which raw bytes break, so that a file several times larger is never
        chosen for a p50 no runtime can tell apart. First the candidates as fast as the fastest, smallest first; then
        the others by p50."""

        def as_fast(o: Candidate, c: Candidate) -> bool:  # o's p50 is not above c's beyond noise
            return self.objective(o) <= self.objective(c) * (1 + NOISE_SHARE) + NOISE_MS

        def faster(o: Candidate, c: Candidate) -> bool:
            return self.objective(o) * (1 + NOISE_SHARE) + NOISE_MS < self.objective(c)

        def size(c: Candidate) -> float:
            return c.size_bytes if c.size_bytes is not None else float("inf")

        front = [
            c
            for c in kept
            if not any(
                as_fast(o, c)
                and o.val_drop_pp <= c.val_drop_pp
                and size(o) <= size(c)
                and (faster(o, c) or o.val_drop_pp < c.val_drop_pp or size(o) < size(c))
                for o in kept
            )
        ]
        if not front:
            return []
        fastest = min(front, key=self.objective)
        ties = sorted((c for c in front if as_fast(c, fastest)), key=lambda c: (size(c), c.val_drop_pp))
        tied = {c.name for c in ties}
        rest = sorted((c for c in front if c.name not in tied), key=lambda c: (self.objective(c), c.val_drop_pp))
        return ties + rest

    def target_refusal(self, artifact: Artifact) -> str | None:
        """Why the search's target cannot take the artifact, or None (`--target mcu`: full-integer TFLite only;
        whether TFLite Micro runs it is checked when it is measured on test)."""
        if self.target != "mcu":
            return None
        if str(artifact.fmt) != "tflite" or artifact.candidate.settings.get("activations") != "int8":
            return "--target mcu takes full-integer .tflite files only"
        return None

    def beyond_limits(self, candidate: Candidate) -> str | None:
        """Which device limit a candidate exceeds (its quick p50, its flash: raw bytes or TFLite Micro's, its
        TFLite Micro arena with --target mcu), or None."""
        if self.limits is None:
            return None
        flash = candidate.flash_bytes if candidate.flash_bytes is not None else candidate.size_bytes
        return self.limits.exceeded(p50_ms=candidate.p50_ms, flash_bytes=flash, arena_bytes=candidate.arena_bytes)

    def mark_front(self, trace: Trace) -> None:
        on_front = {c.name for c in self.front(trace.artifacts.values())}
        for index, candidate in enumerate(trace.candidates):
            if candidate.kind != "artifact" or candidate.decision != Decision.KEPT:
                continue
            beyond = self.target_refusal(trace.artifacts[candidate.name]) if candidate.name in trace.artifacts else None
            beyond = beyond or self.beyond_limits(candidate)
            if beyond is not None:
                trace.update(index, decision=Decision.DROPPED, reason=beyond)
                continue
            decision = Decision.FRONT if candidate.name in on_front else Decision.DOMINATED
            trace.update(index, decision=decision)

    # ------------------------------------------------------------------ confirmation on test
    def confirm(
        self,
        trace: Trace,
        measure: Callable[[Artifact], Any],
        model_drop: Callable[[Artifact], float | None] | None = None,
    ) -> Any:
        """Measure front candidates on the test split in order, until one is within budget there.

        `measure(artifact)` returns the report Variant (from the pipeline); the first ok one within budget is
        chosen. When the whole front misses, the front of what is left is next, up to `MAX_CONFIRMED` measurements.
        `model_drop(artifact)` is the test drop of the Keras model the artifact was made from: when a candidate
        misses and its model alone already misses, the other candidates of that model are rejected with it,
        unmeasured, since no quantization of a model wins back what the model lost. When two candidates of one
        pruning level (`level_of`) whose models already lose more than half the budget on test have missed, the
        rest of that level is passed over the same way: its validation figures were optimistic. A level whose
        misses are its quantization's (int4 layers, say) keeps its safer candidates.
        Returns the chosen Variant, or None (each rejection is in the trace and in its notes).
        """
        rejected: list[str] = []
        misses: dict[str, int] = {}  # per pruning level, candidates that missed on test
        measured = 0
        while measured < MAX_CONFIRMED and (front := self.front(trace.artifacts.values(), without=rejected)):
            candidate = front[0]
            artifact = trace.artifacts[candidate.name]
            variant = measure(artifact)
            measured += 1
            index = trace.index(candidate.name)
            test_drop = self._test_drop(variant)
            micro = self.micro_refusal(variant)
            if variant.ok and micro is None and test_drop is not None and test_drop <= self.budget_pp + 1e-9:
                trace.update(
                    index, decision=Decision.CHOSEN, variant=variant.name, reason=f"test drop {test_drop:.2f} pp"
                )
                return variant
            why = variant.error if not variant.ok else (micro or f"loses {test_drop:.2f} pp on the test split")
            trace.update(index, decision=Decision.REJECTED, variant=variant.name, reason=why)
            rejected.append(candidate.name)
            trace.notes.append(f"search: {candidate.name} was best on validation but {why}; took the next on the front")
            dropped = model_drop(artifact) if model_drop is not None and variant.ok else None
            if dropped is not None and dropped > self.budget_pp + 1e-9:
                rejected.extend(self._reject_siblings(trace, artifact, dropped, rejected))
            if dropped is not None and dropped > self.budget_pp / 2:  # the model, not its quantization, eats it
                level = self.level_of(trace, artifact.source.name)
                misses[level] = misses.get(level, 0) + 1
                if misses[level] == LEVEL_MISSES:
                    rejected.extend(self._reject_level(trace, level, rejected))
        return None

    def micro_refusal(self, variant: Any) -> str | None:
        """For `--target mcu`: why TFLite Micro does not take the measured variant (its `micro` check), or None."""
        if self.target != "mcu":
            return None
        micro = variant.micro or {}
        if not micro.get("runs"):
            return f"TFLite Micro does not run it: {micro.get('reason') or 'not checked'}"
        if limits := self.limits:
            arena = arena_bytes(variant)  # the LUT copy's, when its flash is what counts
            if limits.arena_bytes is not None and (arena is None or arena > limits.arena_bytes):
                return f"its TFLite Micro arena of {arena} bytes is over the {limits.arena_bytes:,}-byte limit"
        return None

    @staticmethod
    def level_of(trace: Trace, source: str) -> str:
        """The pruning level a source descends from: up its parents past clustering, QAT and the like, to the first
        model that is a level of its own (`s85` for `s85-c16`), or the baseline."""
        by_name = {c.name: c for c in trace.candidates if c.kind == "model"}
        name = source
        while name in by_name and "clusters" in by_name[name].settings and by_name[name].parent:
            name = by_name[name].parent
        return name

    def _reject_level(self, trace: Trace, level: str, rejected: list[str]) -> list[str]:
        """After `LEVEL_MISSES` candidates of one level missed on test, the level's other candidates are rejected
        unmeasured: its validation figures were optimistic, and its siblings share them."""
        names = [name for name, a in trace.artifacts.items() if name not in rejected
                 and self.level_of(trace, a.source.name) == level
                 and trace.candidates[trace.index(name)].decision in (Decision.FRONT, Decision.DOMINATED)]  # fmt: skip
        why = f"{LEVEL_MISSES} candidates of {level} missed on the test split (not measured)"
        for name in names:
            trace.update(trace.index(name), decision=Decision.REJECTED, reason=why)
        if names:
            trace.notes.append(f"search: {LEVEL_MISSES} candidates of {level} missed on the test split: none of its "
                               f"{len(names)} others is measured")  # fmt: skip
        return names

    @staticmethod
    def _reject_siblings(trace: Trace, artifact: Artifact, dropped: float, rejected: list[str]) -> list[str]:
        """The other candidates made from the artifact's model, rejected unmeasured: the model itself misses."""
        source = artifact.source
        siblings = [name for name, a in trace.artifacts.items() if a.source is source and name not in rejected]
        why = f"its model {source.name} loses {dropped:.2f} pp on the test split (not measured)"
        for name in siblings:
            if trace.candidates[trace.index(name)].decision in (Decision.FRONT, Decision.DOMINATED):
                trace.update(trace.index(name), decision=Decision.REJECTED, reason=why)
        if siblings:
            trace.notes.append(f"search: {source.name} loses {dropped:.2f} pp on the test split: none of its "
                               f"{len(siblings)} other candidates is measured")  # fmt: skip
        return siblings

    def confirm_integer(self, trace: Trace, measure: Callable[[Artifact], Any]) -> Any:
        """The best full-integer candidate within budget (what a microcontroller or an int8-only NPU runs), measured
        on test too when the choice was not one, the next one when it misses on test. Returns its Variant, or
        None."""
        measured = (Decision.FRONT, Decision.DOMINATED, Decision.CHOSEN, Decision.REJECTED)
        integer = [
            a
            for a in trace.artifacts.values()
            if a.candidate.settings.get("activations") == "int8"
            and a.candidate.decision in measured
            and not (a.candidate.decision == Decision.REJECTED and a.candidate.variant is None)  # its model missed
        ]
        if not integer or any(a.candidate.variant for a in integer):
            return None
        for artifact in sorted(integer, key=lambda a: (self.objective(a.candidate), a.candidate.val_drop_pp)):
            variant = measure(artifact)
            trace.update(trace.index(artifact.candidate.name), variant=variant.name)
            test_drop = self._test_drop(variant)
            if variant.ok and test_drop is not None and test_drop <= self.budget_pp + 1e-9:
                return variant
            why = variant.error if not variant.ok else f"loses {test_drop:.2f} pp on the test split"
            trace.notes.append(f"search: full-integer {artifact.candidate.name} {why}; measured the next")
        return None

    @staticmethod
    def _test_drop(variant: Any) -> float | None:
        return -variant.top1_delta_pp if variant.top1_delta_pp is not None else None
