"""Run a bundle's artifact on a device: LiteRT for .tflite, ONNX Runtime for .onnx, numpy around them.

Inputs go in as effkit measured them (the values given to `effkit compress`); this module casts or quantizes them
with `tensors.quantize`, the code the measurement used, and dequantizes outputs the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .manifest import FORMATS, BundleError, check_artifact, first_line, read_manifest
from .quiet import silenced
from .tensors import dequantize, probabilities, quantize
from .verify import Verdict, verify_model


class _LiteRT:
    def __init__(self, path: Path, threads: int):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise BundleError("this bundle holds a .tflite file: install ai-edge-litert to run it") from None
        self._make = lambda: Interpreter(model_path=str(path), num_threads=threads)
        try:
            with silenced():  # LiteRT's XNNPACK INFO line, printed from C++ on stderr
                interpreter = self._make()
                interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as error:
            raise BundleError(f"LiteRT cannot load {path.name}: {first_line(error)}") from None
        self._by_batch = {int(interpreter.get_input_details()[0]["shape"][0]): interpreter}
        self.input = interpreter.get_input_details()[0]
        self.outputs = interpreter.get_output_details()

    def _for_batch(self, batch: int):
        if batch not in self._by_batch:
            with silenced():
                interpreter = self._make()
                interpreter.resize_tensor_input(self.input["index"], [batch, *self.input["shape"][1:]], strict=False)
                interpreter.allocate_tensors()
            self._by_batch[batch] = interpreter
        return self._by_batch[batch]

    def run(self, x: np.ndarray, order: list[int]) -> list[np.ndarray]:
        try:
            interpreter = self._for_batch(len(x))
        except (RuntimeError, ValueError):  # a graph with a fixed batch: sample by sample
            runs = [self.run(sample[None], order) for sample in x]
            return [np.concatenate([run[i] for run in runs]) for i in range(len(order))]
        interpreter.set_tensor(self.input["index"], quantize(x, self.input["dtype"], *self.input["quantization"]))
        interpreter.invoke()
        details = [self.outputs[i] for i in order]
        return [dequantize(interpreter.get_tensor(d["index"]), *d["quantization"]) for d in details]

    def output_names(self) -> list[str]:
        return [detail["name"] for detail in self.outputs]

    def bind(self, x: np.ndarray):
        """One call on `x`, inputs prepared once: what effkit's latency times (set, invoke, read the outputs)."""
        interpreter = self._for_batch(len(x))
        prepared = quantize(x, self.input["dtype"], *self.input["quantization"])
        index, outputs = self.input["index"], [detail["index"] for detail in self.outputs]

        def call():
            interpreter.set_tensor(index, prepared)
            interpreter.invoke()
            return [interpreter.get_tensor(i) for i in outputs]

        return call


ORT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def ort_session(path: Path, *, threads: int, optimization: str = "all"):
    """An ONNX Runtime CPU session as effkit measures with it: `threads` intra-op threads, sequential execution, the
    given graph optimization level. Raises what ONNX Runtime raises."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_LEVELS[optimization])
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class _OnnxRuntime:
    _TYPES: ClassVar[dict[str, type]] = {
        "tensor(float)": np.float32,
        "tensor(int32)": np.int32,
        "tensor(int64)": np.int64,
    }

    def __init__(self, path: Path, threads: int, optimization: str):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise BundleError("this bundle holds an .onnx file: install onnxruntime to run it") from None
        try:
            self.session = ort_session(path, threads=threads, optimization=optimization)
        except Exception as error:  # ORT raises its own Fail/InvalidGraph types
            raise BundleError(f"ONNX Runtime cannot load {path.name}: {first_line(error)}") from None
        self.input = self.session.get_inputs()[0]
        self.dtype = self._TYPES.get(self.input.type, np.float32)

    def run(self, x: np.ndarray, order: list[int]) -> list[np.ndarray]:
        names = [output.name for output in self.session.get_outputs()]
        outputs = self.session.run([names[i] for i in order], {self.input.name: np.ascontiguousarray(x, self.dtype)})
        return [np.asarray(y).astype(np.float32, copy=False) for y in outputs]

    def output_names(self) -> list[str]:
        return [output.name for output in self.session.get_outputs()]

    def bind(self, x: np.ndarray):
        """One call on `x`, its feed prepared once, as effkit's latency times it."""
        names, feed = self.output_names(), {self.input.name: np.ascontiguousarray(x, self.dtype)}
        return lambda: self.session.run(names, feed)


class EdgeModel:
    """A loaded bundle. `predict` gives float outputs; `classify` labels with scores; `verify` checks the goldens."""

    def __init__(self, bundle: str | Path, *, threads: int = 1):
        self.bundle = Path(bundle)
        self.manifest = read_manifest(self.bundle)
        path = check_artifact(self.bundle, self.manifest)
        fmt = self.manifest["artifact"]["format"]
        self.runtime = FORMATS[fmt]
        if fmt == "tflite":
            self._engine = _LiteRT(path, threads)
        else:  # the graph optimization the figures were measured with
            latency = self.manifest.get("measured", {}).get("latency_ms") or {}
            level = (latency.get("runtime") or {}).get("graph_optimization", "all")
            self._engine = _OnnxRuntime(path, threads, level if level in ORT_LEVELS else "all")
        self.input = self.manifest["input"]
        self.outputs = self.manifest["outputs"]
        self._order = self._output_order()

    def _output_order(self) -> list[int]:
        """Where each manifest output sits among the runtime's outputs (the manifest records the tensor names)."""
        names = self._engine.output_names()
        try:
            return [names.index(output["tensor"]["name"]) for output in self.outputs]
        except (KeyError, ValueError):
            raise BundleError(
                f"{self.bundle}: the artifact's outputs ({', '.join(names)}) are not the manifest's"
            ) from None

    @property
    def labels(self) -> list[str]:
        """The primary head's class labels."""
        return list(self._primary()["labels"] or [])

    def _primary(self) -> dict[str, Any]:
        return next((o for o in self.outputs if o["kind"] != "regression"), self.outputs[0])

    def _batch(self, x: Any) -> tuple[np.ndarray, bool]:
        """Samples as a batch, and whether one unbatched sample was given."""
        x = np.asarray(x)
        shape = tuple(self.input["shape"][1:])
        single = x.ndim == len(shape)
        if single:
            x = x[None]
        if x.ndim != len(shape) + 1 or any(
            want is not None and got != want for got, want in zip(x.shape[1:], shape, strict=True)
        ):
            wanted = "x".join("?" if d is None else str(d) for d in shape)
            raise BundleError(f"input of shape {x.shape} does not fit the model's {wanted} (one sample or a batch)")
        if x.dtype.kind not in "fiu":
            raise BundleError(f"input of dtype {x.dtype}: expected numbers")
        return x, single

    def predict(self, x: Any) -> np.ndarray | dict[str, np.ndarray]:
        """Float outputs of one sample or a batch: one array, or a dict by output name for several outputs."""
        batch, single = self._batch(x)
        dtype = np.dtype(self.input["dtype"])
        outputs = self._engine.run(batch.astype(dtype, copy=False), self._order)
        if single:
            outputs = [y[0] for y in outputs]
        if len(outputs) == 1:
            return outputs[0]
        return {output["name"]: y for output, y in zip(self.outputs, outputs, strict=True)}

    def bind(self, x: np.ndarray):
        """A call that runs the artifact once on the batch `x`, its inputs prepared once: what latency times."""
        batch, _ = self._batch(x)
        return self._engine.bind(batch.astype(np.dtype(self.input["dtype"]), copy=False))

    def predict_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output of a batch, in the manifest's order."""
        batch, _ = self._batch(x)
        return self._engine.run(batch.astype(np.dtype(self.input["dtype"]), copy=False), self._order)

    def classify(self, x: Any, *, top: int = 3) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
        """The `top` labels with their probabilities, per sample (one list for one unbatched sample)."""
        batch, single = self._batch(x)
        head = self._primary()
        index = self.outputs.index(head)
        scores = probabilities(self.predict_all(batch)[index], head["kind"])
        labels = head.get("labels") or [str(i) for i in range(scores.shape[1])]
        ranked = [
            [(labels[i], float(row[i])) for i in np.argsort(-row, kind="stable")[: max(1, top)]] for row in scores
        ]
        return ranked[0] if single else ranked

    def verify(self) -> Verdict:
        """The golden inputs through this device's runtime, against the outputs effkit recorded."""
        return verify_model(self)


def load(bundle: str | Path, *, threads: int = 1) -> EdgeModel:
    """Load a bundle folder made by `effkit bundle`, after checking its artifact's sha256.

    Raises:
        BundleError: a missing or damaged bundle, a changed artifact, or a runtime that is not installed.
    """
    return EdgeModel(bundle, threads=threads)


def verify(bundle: str | Path, *, threads: int = 1) -> Verdict:
    """Load the bundle (sha256 checked) and run its golden inputs. Raises BundleError for a damaged bundle."""
    return load(bundle, threads=threads).verify()
