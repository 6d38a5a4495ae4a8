"""The search's records: what it tried (`Candidate`, in a `Trace`), the models and files behind them (`Source`,
`Artifact`), No framework imports: they travel to artifact tasks as they are."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from .. import interrupt
from ..config import Format
from ..errors import one_line_reason
from ..types import Source, Step, known_fields

log = logging.getLogger("effkit")


class Decision(StrEnum):
    KEPT = "kept"  # within budget on validation
    DROPPED = "dropped"  # measured, misses the budget (or agreement) on validation
    FAILED = "failed"  # the step failed; the reason says why
    DOMINATED = "dominated"  # within budget, but another candidate is better on both axes
    FRONT = "front"  # on the Pareto front of everything within budget
    CHOSEN = "chosen"  # confirmed on test and recommended
    REJECTED = "rejected on test"  # chosen on validation, missed the budget on the test split


@dataclass(frozen=True)
class Candidate:
    """One point the search tried: a Keras model (kind `model`) or an artifact (kind `artifact`)."""

    name: str
    kind: str
    parent: str | None  # what it was made from
    settings: dict[str, Any]
    decision: str
    reason: str = ""
    val_top1: float | None = None
    val_drop_pp: float | None = None  # against the user's model on validation; positive = worse
    agreement: float | None = None  # artifacts: % of validation samples with the same top-1 as their Keras model
    size_bytes: int | None = None
    gzip_bytes: int | None = None
    p50_ms: float | None = None
    sparsity: float | None = None
    seconds: float = 0.0
    variant: str | None = None  # the report variant it became, when measured on test
    fine_tune: dict[str, Any] | None = None  # models: the fine-tune's validation agreement at its start and end
    # --target mcu, full-integer .tflite: TFLite Micro's flash, the LUT-compressed copy's bytes when a clustered
    # file has one that runs (TFLite Micro decodes it at run time, into the arena), else its raw bytes; and the
    # arena TFLite Micro measured for what the flash counts
    flash_bytes: int | None = None
    arena_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["decision"] = str(self.decision)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(**known_fields(cls, data))


@dataclass
class Artifact:
    """A file the search made from a source, with its candidate and how it was made."""

    candidate: Candidate
    path: Path
    source: Source
    fmt: Format
    quantization: str
    steps: tuple[Step, ...]
    backend: str = "litert"


@dataclass
class Trace:
    """Everything tried, in order (`candidates`), the files of the artifacts among them, and the notes for the
    report. It grows as the search goes, so that an interrupted caller still has it."""

    candidates: list[Candidate] = field(default_factory=list)
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record(self, candidate: Candidate) -> None:
        self.candidates.append(candidate)
        # A Ctrl-C that landed in a finalizer (LiteRT's Interpreter.__del__) was swallowed there: honour it here.
        interrupt.check()
        shown = "" if candidate.val_top1 is None else f" val top-1 {candidate.val_top1 * 100:.2f}%"
        size = "" if candidate.gzip_bytes is None else f" gzip {candidate.gzip_bytes / 1024:.1f} KiB"
        log.info("search: %-22s %-8s%s%s %s", candidate.name, candidate.decision, shown, size, candidate.reason)

    def failed(self, name: str, kind: str, parent: str | None, settings: dict, error: BaseException, started: float):
        """Record a step that failed: it costs only its own candidate."""
        reason = one_line_reason(error)
        self.record(Candidate(name, kind, parent, settings, Decision.FAILED, reason, seconds=since(started)))

    def index(self, name: str) -> int:
        return next(i for i, c in enumerate(self.candidates) if c.name == name)

    def update(self, index: int, **changes) -> None:
        self.candidates[index] = replace(self.candidates[index], **changes)
        if self.candidates[index].name in self.artifacts:
            self.artifacts[self.candidates[index].name].candidate = self.candidates[index]

    def any_kept(self) -> bool:
        return any(a.candidate.decision == Decision.KEPT for a in self.artifacts.values())

    def chosen(self) -> Candidate | None:
        return next((c for c in self.candidates if c.decision == Decision.CHOSEN), None)


def since(started: float) -> float:
    return round(time.perf_counter() - started, 2)
