"""Float samples to a tensor's type and back: the one place effkit (de)quantizes, when it measures and on a device.

A quantized tensor maps a real value r to round(r / scale + zero_point), clipped to its integer type; an integer
tensor without a scale (token ids) keeps its values.
"""

from __future__ import annotations

import numpy as np

from .manifest import BundleError


def quantize(x: np.ndarray, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    """Samples as the input tensor takes them: quantized when the tensor is, else only cast."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer) and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)
    return np.ascontiguousarray(x, dtype=dtype)


def dequantize(y: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """An output tensor's values as float32: dequantized when the tensor is quantized."""
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32, copy=False)


def probabilities(outputs: np.ndarray, kind: str) -> np.ndarray:
    """Per-class probabilities from one head's outputs (N, units); a one-unit head becomes two classes."""
    if kind == "regression":
        raise BundleError("a regression output has no classes to rank")
    y = outputs.astype(np.float64).reshape(len(outputs), -1)
    if kind in ("logits", "binary_logit"):
        y = np.exp(y - y.max(axis=1, keepdims=True)) if kind == "logits" else 1.0 / (1.0 + np.exp(-y))
        if kind == "logits":
            y /= y.sum(axis=1, keepdims=True)
    if y.shape[1] == 1:
        y = np.concatenate([1.0 - y, y], axis=1)
    return y
