"""Run .onnx files with ONNX Runtime's CPU execution provider."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..config import OrtOptimization
from ..errors import StageError, first_line
from .base import Runner, chunks

_ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
}


class OnnxRuntimeRunner(Runner):
    def __init__(
        self,
        path: Path,
        *,
        threads: int = 1,
        optimization: OrtOptimization = OrtOptimization.ALL,
        outputs: list[str] | None = None,
    ):
        from ..edge.model import ort_session

        self.threads = threads
        self.optimization = OrtOptimization(optimization)
        try:
            self.session = ort_session(path, threads=threads, optimization=self.optimization.value)
        except Exception as error:  # ORT raises its own Fail/InvalidGraph types
            raise StageError(f"ONNX Runtime cannot load {Path(path).name}: {first_line(error)}") from error
        self.input = self.session.get_inputs()[0]
        self.input_dtype = _ONNX_TYPES.get(self.input.type, np.float32)
        available = [output.name for output in self.session.get_outputs()]
        # export_onnx names the graph's outputs after the Keras outputs; older files keep their own order.
        self.output_names = outputs if outputs and set(outputs) <= set(available) else available

    @property
    def runtime(self) -> dict[str, Any]:
        return {
            "engine": "onnxruntime",
            "provider": "CPUExecutionProvider",
            "graph_optimization": str(self.optimization),
            "intra_op_threads": self.threads,
        }

    @property
    def input_spec(self) -> tuple[tuple[int, ...], np.dtype]:
        return tuple(d if isinstance(d, int) else 1 for d in self.input.shape[1:]), np.dtype(self.input_dtype)

    def predict(self, x: np.ndarray) -> list[np.ndarray]:
        runs = [self.session.run(self.output_names, {self.input.name: self._prepared(chunk)}) for chunk in chunks(x)]
        return [np.concatenate([run[i] for run in runs]).astype(np.float32, copy=False) for i in range(len(runs[0]))]

    def bind(self, x: np.ndarray) -> Callable[[], Any]:
        feed = {self.input.name: self._prepared(x)}
        return lambda: self.session.run(self.output_names, feed)

    def _prepared(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=self.input_dtype)
