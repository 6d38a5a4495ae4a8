"""What every runtime offers the measuring stage: batched predictions and one bound call to time."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

EVAL_BATCH = 256  # samples per call when predicting a whole split


class Runner(ABC):
    """A loaded artifact (or Keras model) ready to run on the CPU."""

    threads: int  # what its latency figures were measured with

    @abstractmethod
    def predict(self, x: np.ndarray) -> list[np.ndarray]:
        """Float outputs for every sample of `x`, one array per model output in the Keras model's order
        (quantized outputs are dequantized)."""

    @abstractmethod
    def bind(self, x: np.ndarray) -> Callable[[], Any]:
        """A call that runs one inference on the batch `x`, its input already converted: what latency times."""

    @property
    @abstractmethod
    def runtime(self) -> dict[str, Any]:
        """The engine and the settings its figures were measured with."""

    @property
    @abstractmethod
    def input_spec(self) -> tuple[tuple[int, ...], np.dtype]:
        """The input's shape without the batch dimension, and the dtype the caller's samples should have."""


def chunks(x: np.ndarray, size: int = EVAL_BATCH):
    for start in range(0, len(x), size):
        yield x[start : start + size]
