"""The accuracy-aware search: a driver that orders technique steps and reads validation figures.

- `driver`: `Search`, the order of the moves, the budget, and where artifact tasks run;
- `records`: what was tried (`Candidate`, `Decision`, the `Trace`), the models and files behind it;
- `judge`: validation figures, the objective, the Pareto front, confirmation on test;
- `plans`: per-layer sparsities and quantization plans from the `sensitivity` table;
- `moves` and `artifacts`: the steps that make models and artifacts by calling techniques.
"""

from .driver import Search, copy_artifact
from .plans import layer_targets
from .records import Candidate, Decision

__all__ = ["Candidate", "Decision", "Search", "copy_artifact", "layer_targets"]
