"""Run .tflite files with the LiteRT interpreter (`ai_edge_litert`), XNNPACK on, as a device would."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..console import silenced
from ..edge.tensors import dequantize, quantize
from ..errors import StageError, first_line
from .base import Runner, chunks


class LiteRTRunner(Runner):
    """Outputs come back in the order of `outputs` (the Keras model's output names), matched through the
    .tflite's signature: the flatbuffer's own output order is not the model's."""

    def __init__(self, path: Path, *, threads: int = 1, outputs: list[str] | None = None):
        self.path = Path(path)
        self.threads = threads
        self._by_batch: dict[int, Any] = {}
        try:
            interpreter = self._interpreter()
        except (RuntimeError, ValueError) as error:
            raise StageError(f"LiteRT cannot load {self.path.name}: {first_line(error)}") from error
        self.input = interpreter.get_input_details()[0]
        self.outputs = _ordered_outputs(interpreter, outputs)
        self._by_batch[int(self.input["shape"][0])] = interpreter

    @property
    def output(self) -> dict[str, Any]:
        """The first output's details."""
        return self.outputs[0]

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

    @property
    def input_spec(self) -> tuple[tuple[int, ...], np.dtype]:
        dtype = self.input["dtype"]
        # A quantized input takes float samples (effkit quantizes them); token ids stay integers.
        quantized = np.issubdtype(dtype, np.integer) and self.input["quantization"][0]
        return tuple(int(d) for d in self.input["shape"][1:]), np.dtype(np.float32 if quantized else dtype)

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float samples -> the input tensor's type (`edge.tensors.quantize`: the bundle's loader does the same)."""
        return quantize(x, self.input["dtype"], *self.input["quantization"])

    def dequantize_output(self, y: np.ndarray, detail: dict[str, Any] | None = None) -> np.ndarray:
        return dequantize(y, *(detail or self.output)["quantization"])

    def _run(self, interpreter, prepared: np.ndarray) -> list[np.ndarray]:
        interpreter.set_tensor(self.input["index"], prepared)
        interpreter.invoke()
        return [interpreter.get_tensor(detail["index"]) for detail in self.outputs]

    def predict(self, x: np.ndarray) -> list[np.ndarray]:
        runs: list[list[np.ndarray]] = []
        for chunk in chunks(x):
            try:
                interpreter = self._for_batch(len(chunk))
            except (RuntimeError, ValueError):  # a graph with a fixed batch: run sample by sample
                interpreter = self._for_batch(int(self.input["shape"][0]))
                runs.extend(self._run(interpreter, self.quantize_input(sample[None])) for sample in chunk)
                continue
            runs.append(self._run(interpreter, self.quantize_input(chunk)))
        return [
            self.dequantize_output(np.concatenate([run[i] for run in runs]), detail)
            for i, detail in enumerate(self.outputs)
        ]

    def bind(self, x: np.ndarray) -> Callable[[], Any]:
        interpreter = self._for_batch(len(x))
        prepared = self.quantize_input(x)
        return lambda: self._run(interpreter, prepared)


def _ordered_outputs(interpreter, names: list[str] | None) -> list[dict[str, Any]]:
    """Output details in the order of `names`, matched by the signature's output names when they are there."""
    details = interpreter.get_output_details()
    if not names or len(details) == 1:
        return details
    signatures = interpreter.get_signature_list()
    if len(signatures) == 1:
        by_name = interpreter.get_signature_runner(next(iter(signatures))).get_output_details()
        if set(by_name) == set(names):
            index_to_detail = {detail["index"]: detail for detail in details}
            return [index_to_detail[by_name[name]["index"]] for name in names]
    raise StageError(f"cannot tell which output is which: the .tflite names its outputs {sorted(signatures)}")
