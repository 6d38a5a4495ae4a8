"""effkit: prune, quantize and export Keras classifiers; measure every variant where a device would run it.

`effkit.compress(model, data, *, config)` is the library entry point (`config=CompressConfig(search=SearchConfig())`
for the accuracy-aware search); `effkit compress` the command. Importing
effkit does not import TensorFlow: the heavy stages load it when they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import CompressConfig, Format, LatencyConfig, Precision, PruneConfig, Quant, SearchConfig, SearchGoal
from .errors import EffkitError
from .load import keras_compat  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from .types import Latency, Parity, Report, Step, Variant

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .load.data import Dataset, load_dataset
    from .pipeline import compress

_LAZY = {"compress": "pipeline", "load_dataset": "load.data", "Dataset": "load.data"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'effkit' has no attribute {name!r}")


__all__ = [
    "CompressConfig",
    "Dataset",
    "EffkitError",
    "Format",
    "Latency",
    "LatencyConfig",
    "Parity",
    "Precision",
    "PruneConfig",
    "Quant",
    "Report",
    "SearchConfig",
    "SearchGoal",
    "Step",
    "Variant",
    "compress",
    "load_dataset",
]
