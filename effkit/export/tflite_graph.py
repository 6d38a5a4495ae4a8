"""What a .tflite holds, read from its flatbuffer: the main graph's ops, their tensors, types and constant data.

The interpreter cannot tell this: it reports an int4 tensor as int8 and hides ops a delegate replaced. Quantizers
check what they wrote with it; `runtime.delegation` reads the original op list with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    type: str  # the schema's TensorType name: FLOAT32, INT8, INT4, ...
    shape: tuple[int, ...]
    constant: bool  # backed by data in the file (weights, biases), not computed
    data_bytes: int  # size of that data in the file

    @property
    def elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass(frozen=True)
class OpInfo:
    index: int
    op: str  # the schema's BuiltinOperator name: CONV_2D, FULLY_CONNECTED, DENSIFY, ...
    inputs: tuple[int, ...]  # tensor indices; -1 for an optional input left out
    outputs: tuple[int, ...]
    custom_code: str = ""  # a CUSTOM op's name (`TFLM_DECODE`, `FlexConv2D`); empty for builtin ops


@dataclass(frozen=True)
class TfliteGraph:
    """The main subgraph (index 0) of a .tflite file."""

    ops: tuple[OpInfo, ...]
    tensors: tuple[TensorInfo, ...]
    inputs: tuple[int, ...] = ()  # the graph's input tensor indices, in the flatbuffer's order
    outputs: tuple[int, ...] = ()

    def scope(self, op: OpInfo) -> str:
        """The op's output tensor names joined by ';', which is what the LiteRT quantizer's recipe regexes search
        (`litert_quantizer.utils.tfl_flatbuffer_utils.get_op_scope`, trailing ';' included)."""
        names = [self.tensors[i].name for i in op.outputs if i >= 0 and self.tensors[i].name]
        if not names:
            names = [self.tensors[i].name for i in op.inputs if i >= 0 and self.tensors[i].name]
        return ";".join(names) + (";" if names else "")

    def weight(self, op: OpInfo) -> TensorInfo | None:
        """The op's weight: its largest constant input of at least two dimensions (a kernel, an embedding table),
        or None for an op without one."""
        constants = [self.tensors[i] for i in op.inputs if i >= 0 and self.tensors[i].constant]
        kernels = [t for t in constants if len(t.shape) >= 2]
        return max(kernels, key=lambda t: t.elements, default=None)


@cache
def _names(enum_class: type) -> dict[int, str]:
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_") and type(value) is int}


def read_graph(path: Path) -> TfliteGraph:
    """The main subgraph of the .tflite at `path`."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    op_names, type_names = _names(schema.BuiltinOperator), _names(schema.TensorType)
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    custom = [_text(code.customCode) for code in model.operatorCodes]
    subgraph = model.subgraphs[0]
    tensors = []
    for index, tensor in enumerate(subgraph.tensors):
        data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
        size = 0 if data is None else len(data)
        shape = tuple(int(d) for d in tensor.shape) if tensor.shape is not None else ()
        name = _text(tensor.name)
        tensors.append(TensorInfo(index, name, type_names.get(tensor.type, str(tensor.type)), shape, size > 0, size))
    ops = tuple(
        OpInfo(
            index,
            op_names.get(codes[op.opcodeIndex], f"CODE_{codes[op.opcodeIndex]}"),
            tuple(int(i) for i in (op.inputs if op.inputs is not None else ())),
            tuple(int(i) for i in (op.outputs if op.outputs is not None else ())),
            custom[op.opcodeIndex],
        )
        for index, op in enumerate(subgraph.operators or ())
    )
    inputs = tuple(int(i) for i in (subgraph.inputs if subgraph.inputs is not None else ()))
    outputs = tuple(int(i) for i in (subgraph.outputs if subgraph.outputs is not None else ()))
    return TfliteGraph(ops, tuple(tensors), inputs, outputs)


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")
