"""The search's time: the deadline `--budget` sets, and the prices of its steps, learnt from what this run measured.

The budget counts from the start of `compress`. Before the end, time is reserved for what must follow whatever
the search does: measuring the chosen candidates on the test split (`Deadline.reserve_seconds`, priced from the
grid's variants), and making and measuring the artifacts of the last model a fine-tune makes (`Costs.artifacts`,
priced from the baseline's). A fine-tune is priced before it starts from the seconds per epoch its kind took so far
in this run; it runs fewer epochs when the full count does not fit, is not started when its minimum does not, and
stops at its deadline (checked after every training step) with its best weights. No framework imports: the
deadline travels to fine-tune children and artifact tasks as a plain number.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

CONFIRMS_RESERVED = 3  # variants measured on test after the search: the pick, one rejected on test, the best integer
ARTIFACTS_MARGIN = 1.5  # a later source's artifacts can need more rungs of the float ladder than the baseline's
UNMEASURED_FACTOR = 2.0  # a fine-tune kind not run yet is priced at this multiple of pruning's seconds per epoch


@dataclass
class Deadline:
    """The budget's end, less the time reserved for measuring the chosen candidates on test."""

    budget_seconds: float | None
    started: float = field(default_factory=time.perf_counter)
    reserve_seconds: float = 0.0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        """Seconds before the reserve begins (infinite without a budget)."""
        if self.budget_seconds is None:
            return math.inf
        return self.budget_seconds - self.reserve_seconds - self.elapsed

    def passed(self) -> bool:
        return self.left() <= 0

    def share_passed(self, share: float) -> bool:
        """Whether `share` of the whole budget has gone (the sensitivity table's cap)."""
        return self.budget_seconds is not None and self.elapsed >= self.budget_seconds * share

    def wall_end(self, keep: float = 0.0) -> float | None:
        """The wall-clock time (`time.time()`) by which a fine-tune must stop so that `keep` seconds remain before
        the reserve: a plain number, valid in a child process too. None without a budget."""
        if self.budget_seconds is None:
            return None
        return time.time() + self.left() - keep


@dataclass
class Costs:
    """What this run has measured so far, to price the next step."""

    artifacts: float | None = None  # seconds to make and measure one source's quantized artifacts
    per_epoch: dict[str, float] = field(default_factory=dict)  # a fine-tune's wall seconds per epoch, set-up included

    def learn_artifacts(self, seconds: float) -> None:
        self.artifacts = seconds if self.artifacts is None else max(self.artifacts, seconds)

    def learn_fine_tune(self, kind: str, seconds: float, epochs: int) -> None:
        """A finished fine-tune's wall time (its whole step) over the epochs it ran; the slowest seen counts."""
        if epochs > 0 and seconds > 0:
            self.per_epoch[kind] = max(self.per_epoch.get(kind, 0.0), seconds / epochs)

    def artifacts_reserve(self) -> float:
        return 0.0 if self.artifacts is None else self.artifacts * ARTIFACTS_MARGIN

    def epoch_price(self, kind: str) -> float | None:
        if kind in self.per_epoch:
            return self.per_epoch[kind]
        if "prune" in self.per_epoch:
            return self.per_epoch["prune"] * UNMEASURED_FACTOR
        return None


def affordable_epochs(deadline: Deadline, costs: Costs, kind: str, epochs: int, *, minimum: int) -> tuple[int, str]:
    """How many of `epochs` a fine-tune of `kind` can run before the time reserved for its artifacts: `epochs`
    when they fit or nothing is priced yet, fewer down to `minimum`, or 0 when not even that fits. With why."""
    price = costs.epoch_price(kind)
    left = deadline.left() - costs.artifacts_reserve()
    if price is None or deadline.budget_seconds is None:
        return (epochs, "") if left > 0 else (0, "no time left before the reserve for artifacts and test")
    fits = int(left // price)
    if fits >= epochs:
        return epochs, ""
    if fits >= minimum:
        return fits, f"{fits} of {epochs} epochs: the budget leaves {left:.0f} s at {price:.1f} s per epoch"
    return 0, f"not started: {minimum} epoch(s) at {price:.1f} s each need more than the {max(left, 0):.0f} s left"
