"""LUT compression: clustered weights as bit-packed indices into per-channel value tables, which TFLite Micro decodes
at run time (and only TFLite Micro reads)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ...console import captured as capture_output
from ...errors import InputError, first_line
from .interpreter import MAX_LUT_BITS, check

INT8 = 9  # schema TensorType.INT8


def lut_compress(path: Path, out: Path) -> dict[str, Any] | None:
    """TFLite Micro's look-up-table compression of the clustered weights of a full-integer .tflite.

    Every weight tensor (an op's constant input of two or more dimensions) with at most 2**MAX_LUT_BITS distinct
    values in each quantization channel, whose indices and tables take fewer bytes than it does, is rewritten as
    bit-packed indices into per-channel value tables; TFLite Micro decodes them at run time (a DECODE op before
    each, decoded into the arena). The file is then loaded and invoked in TFLite Micro.

    Returns:
        None when no tensor qualifies; else {"path", "flash_bytes" (the compressed file), "raw_bytes" (the input
        file), "tensors" (names), "index_bits" (the widest), "runs", "reason", "arena_bytes" (decoded weights
        included)}.

    Raises:
        InputError: `path` is not a readable .tflite file.
    """
    import numpy as np
    from ai_edge_litert.tools import flatbuffer_utils

    path, out = Path(path), Path(out)
    try:
        model = flatbuffer_utils.read_model(str(path))
    except Exception as error:
        raise InputError(f"{path.name} is not a readable .tflite file: {first_line(error)}") from error
    subgraph = model.subgraphs[0]
    weights = sorted(
        {index for op in subgraph.operators or () for index in (op.inputs if op.inputs is not None else ())}
    )
    chosen: list[tuple[int, int, int | None]] = []  # tensor, index bits, channel axis (None: per tensor)
    names: list[str] = []
    for index in weights:
        if index < 0:
            continue
        tensor = subgraph.tensors[index]
        data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
        shape = tuple(int(d) for d in tensor.shape) if tensor.shape is not None else ()
        if data is None or len(data) == 0 or len(shape) < 2 or tensor.type != INT8:
            continue
        values = np.frombuffer(bytes(data), dtype=np.int8).reshape(shape)
        quantization = tensor.quantization
        scales = quantization.scale if quantization is not None and quantization.scale is not None else ()
        axis = int(quantization.quantizedDimension) if len(scales) > 1 else None
        if axis is not None and axis not in (0, len(shape) - 1):
            continue  # the kernels decode per-channel tables along the first or last axis only
        slices = [values] if axis is None else list(np.moveaxis(values, axis, 0))
        distinct = max(len(np.unique(part)) for part in slices)
        bits = max(1, math.ceil(math.log2(distinct))) if distinct > 1 else 1
        encoded = math.ceil(values.size * bits / 8) + len(slices) * 2**bits
        if bits > MAX_LUT_BITS or encoded >= values.size:
            continue
        chosen.append((index, bits, axis))
        names.append(_text(tensor.name))
    if not chosen:
        return None
    from tflite_micro import compression
    from tflite_micro.tensorflow.lite.micro.compression import spec

    builder = compression.SpecBuilder()
    for index, bits, axis in chosen:
        mode = spec.PerTensor() if axis is None else spec.PerChannel(axis=axis)
        builder.add_tensor(subgraph=0, tensor=index).with_lut(index_bitwidth=bits, mode=mode)
    with capture_output():
        compressed = bytes(compression.compress(path.read_bytes(), builder.build()))
    from ...files import write_bytes

    write_bytes(out, compressed)
    result = check(out)
    return {
        "path": str(out),
        "flash_bytes": len(compressed),
        "raw_bytes": path.stat().st_size,
        "tensors": names,
        "index_bits": max(bits for _, bits, _ in chosen),
        "runs": result.runs,
        "reason": result.reason,
        "arena_bytes": result.arena_bytes,
    }


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")
