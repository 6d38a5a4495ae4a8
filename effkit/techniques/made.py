"""The one shape every technique returns: the Keras model it made, and the step that made it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from ..types import Step


@dataclass(frozen=True)
class Made:
    """A technique's new model and its step. Each technique's result adds what it measured (as fields) and says
    what its step records (`step_params`); `STAGE` names the step."""

    STAGE: ClassVar[str] = ""

    model: Any
    # What running it isolated added (`Isolation.run`: nothing unless its child crashed), recorded with the step.
    isolation: dict[str, Any] = field(default_factory=dict, kw_only=True)

    def step_params(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} does not say what its step records")

    def step(self) -> Step:
        """The step this result adds to a model's steps."""
        return Step(self.STAGE, {**self.step_params(), **self.isolation})

    def isolated(self, isolation: dict[str, Any]) -> Made:
        """This result with what its isolation added."""
        return replace(self, isolation=dict(isolation))
