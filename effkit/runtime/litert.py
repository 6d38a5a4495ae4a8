"""Run .tflite files with the LiteRT interpreter (`ai_edge_litert`), XNNPACK on, as a device would."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..console import silenced
from ..errors import StageError, first_line
from .base import Runner, chunks


class LiteRTRunner(Runner):
    def __init__(self, path: Path, *, threads: int = 1):
        self.path = Path(path)
        self.threads = threads
        self._by_batch: dict[int, Any] = {}
        try:
            interpreter = self._interpreter()
        except (RuntimeError, ValueError) as error:
            raise StageError(f"LiteRT cannot load {self.path.name}: {first_line(error)}") from error
        self.input = interpreter.get_input_details()[0]
        self.output = interpreter.get_output_details()[0]
        self._by_batch[int(self.input["shape"][0])] = interpreter

    def _interpreter(self, batch: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
        if batch is not None:
            detail = interpreter.get_input_details()[0]
            interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]], strict=False)
        with silenced():  # applying the XNNPACK delegate prints an INFO line on stderr, once per process
            interpreter.allocate_tensors()
        return interpreter

    def _for_batch(self, batch: int):
        if batch not in self._by_batch:
            self._by_batch[batch] = self._interpreter(batch)
        return self._by_batch[batch]

    @property
    def runtime(self) -> dict[str, Any]:
        # The default (AUTO) op resolver applies the XNNPACK delegate wherever it has kernels.
        return {"engine": "litert", "op_resolver": "auto (XNNPACK)", "num_threads": self.threads}

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float samples -> the input tensor's type, with its scale and zero point when it is quantized."""
        dtype = self.input["dtype"]
        scale, zero_point = self.input["quantization"]
        if np.issubdtype(dtype, np.integer) and scale:
            info = np.iinfo(dtype)
            return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)
        return np.ascontiguousarray(x, dtype=dtype)

    def dequantize_output(self, y: np.ndarray) -> np.ndarray:
        scale, zero_point = self.output["quantization"]
        if np.issubdtype(y.dtype, np.integer) and scale:
            return (y.astype(np.float32) - zero_point) * scale
        return y.astype(np.float32, copy=False)

    def _run(self, interpreter, prepared: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(self.input["index"], prepared)
        interpreter.invoke()
        return interpreter.get_tensor(self.output["index"])

    def predict(self, x: np.ndarray) -> np.ndarray:
        outputs = []
        for chunk in chunks(x):
            try:
                interpreter = self._for_batch(len(chunk))
            except (RuntimeError, ValueError):  # a graph with a fixed batch: run sample by sample
                interpreter = self._for_batch(int(self.input["shape"][0]))
                outputs.extend(self._run(interpreter, self.quantize_input(sample[None])) for sample in chunk)
                continue
            outputs.append(self._run(interpreter, self.quantize_input(chunk)))
        return self.dequantize_output(np.concatenate(outputs))

    def bind(self, x: np.ndarray) -> Callable[[], Any]:
        interpreter = self._for_batch(len(x))
        prepared = self.quantize_input(x)
        return lambda: self._run(interpreter, prepared)
