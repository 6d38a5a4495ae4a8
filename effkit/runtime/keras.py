"""Run the Keras model itself: the reference every artifact is compared with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..load import keras_compat
from ..load.classifier import output_names, outputs_as_list
from .base import Runner, chunks


class KerasRunner(Runner):
    def __init__(self, model: Any):
        self.model = model
        self.names = output_names(model)

    @property
    def runtime(self) -> dict[str, Any]:
        return {"engine": "tensorflow", "call": "tf.function", "intra_op_threads": self.threads}

    @property
    def input_spec(self) -> tuple[tuple[int, ...], np.dtype]:
        tensor = self.model.inputs[0]
        return tuple(int(d or 1) for d in tensor.shape[1:]), np.dtype(getattr(tensor.dtype, "name", tensor.dtype))

    @property
    def threads(self) -> int:
        """TensorFlow's intra-op pool: 0 means one thread per core."""
        import os

        tf = keras_compat.tensorflow()
        return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1

    def predict(self, x: np.ndarray) -> list[np.ndarray]:
        runs = [outputs_as_list(self.model(chunk, training=False), self.names) for chunk in chunks(x)]
        return [np.concatenate([run[i] for run in runs]) for i in range(len(self.names))]

    def bind(self, x: np.ndarray) -> Callable[[], Any]:
        # A traced tf.function: model.predict costs tens of milliseconds of overhead per call (docs/pitfalls.md).
        tf = keras_compat.tensorflow()
        model = self.model
        function = tf.function(lambda inputs: model(inputs, training=False))
        tensor = tf.constant(x)
        function(tensor)
        return lambda: outputs_as_list(function(tensor), self.names)
