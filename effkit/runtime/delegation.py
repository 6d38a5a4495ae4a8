"""Which ops of a .tflite the LiteRT interpreter hands to XNNPACK, and which run on its builtin kernels.

Read from the interpreter itself, set up as `LiteRTRunner` sets it up (the AUTO op resolver, whose one default
delegate is XNNPACK). Applying a delegate appends one DELEGATE node per partition it takes; its inputs are the
partition's inputs (weights included) and its outputs the partition's outputs. The original nodes stay listed, so
walking back from a partition's outputs to its inputs finds the nodes it replaced; every other node runs on a
builtin kernel. A size saving that the runtime undoes is flagged: int4 weights on an op XNNPACK did not take, and
sparse tensors that DENSIFY expands at load.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ..console import silenced
from ..errors import StageError, first_line

DELEGATE = "DELEGATE"


def xnnpack_coverage(tflite_path: Path) -> dict[str, Any]:
    """Which ops XNNPACK runs and which fall back to builtin kernels, counted by op type, with notes.

    Returns:
        {"delegated": {op: count}, "fallback": {op: count}, "partitions": number of XNNPACK partitions,
        "fallback_ops": [{"op", "scope", "weights"}] for ops with constant weights that fall back,
        "int4_weights": {"delegated": n, "fallback": n}, "densified": number of DENSIFY ops, "notes": [...]}.

    Raises:
        StageError: LiteRT cannot load the file.
    """
    from ai_edge_litert.interpreter import Interpreter

    from ..export.tflite_graph import read_graph

    try:
        interpreter = Interpreter(model_path=str(tflite_path), num_threads=1)
        with silenced():  # applying XNNPACK prints an INFO line on stderr
            interpreter.allocate_tensors()
        nodes = interpreter._get_ops_details()  # the public API has no view of the execution plan
        graph = read_graph(tflite_path)
    except Exception as error:  # RuntimeError, ValueError, struct.error from a broken flatbuffer...
        raise StageError(f"LiteRT cannot load {Path(tflite_path).name}: {first_line(error)}") from error
    original = [node for node in nodes if node["op_name"] != DELEGATE]
    partitions = [node for node in nodes if node["op_name"] == DELEGATE]
    if len(original) != len(graph.ops):
        raise StageError(
            f"{Path(tflite_path).name}: the interpreter lists {len(original)} ops, the file {len(graph.ops)}"
        )
    delegated = _replaced_nodes(original, partitions)
    counts = {"delegated": Counter(), "fallback": Counter()}
    int4 = {"delegated": 0, "fallback": 0}
    fallback_ops = []
    for op in graph.ops:
        where = "delegated" if op.index in delegated else "fallback"
        counts[where][op.op] += 1
        weight = graph.weight(op)
        if weight is not None and weight.type == "INT4":
            int4[where] += 1
        if where == "fallback" and weight is not None:
            fallback_ops.append({"op": op.op, "scope": graph.scope(op).split(";")[0], "weights": weight.type})
    densified = counts["delegated"]["DENSIFY"] + counts["fallback"]["DENSIFY"]
    return {
        "delegated": dict(counts["delegated"]),
        "fallback": dict(counts["fallback"]),
        "partitions": len(partitions),
        "fallback_ops": fallback_ops,
        "int4_weights": int4,
        "densified": densified,
        "notes": _notes(fallback_ops, densified),
    }


def xnnpack_summary(tflite_path: Path) -> dict[str, Any]:
    """What a TFLite step records: how many ops XNNPACK runs, what falls back to builtin kernels, and notes on
    savings that do not materialise at run time."""
    coverage = xnnpack_coverage(tflite_path)
    summary = {"delegated_ops": sum(coverage["delegated"].values()), "fallback": coverage["fallback"]}
    return {**summary, "notes": coverage["notes"]} if coverage["notes"] else summary


def _replaced_nodes(original: list[dict], partitions: list[dict]) -> set[int]:
    """The original nodes each DELEGATE node replaced: from its outputs back to its inputs."""
    producer = {int(tensor): node["index"] for node in original for tensor in node["outputs"] if tensor >= 0}
    by_index = {node["index"]: node for node in original}
    replaced: set[int] = set()
    for partition in partitions:
        boundary = {int(tensor) for tensor in partition["inputs"]}
        pending = [int(tensor) for tensor in partition["outputs"]]
        seen: set[int] = set()
        while pending:
            tensor = pending.pop()
            if tensor in boundary or tensor in seen or tensor not in producer:
                continue
            seen.add(tensor)
            index = producer[tensor]
            if index not in replaced:
                replaced.add(index)
                pending += [int(t) for t in by_index[index]["inputs"] if t >= 0]
    return replaced


def _notes(fallback_ops: list[dict], densified: int) -> list[str]:
    notes = []
    int4_by_op = Counter(op["op"] for op in fallback_ops if op["weights"] == "INT4")
    for op, count in sorted(int4_by_op.items()):
        notes.append(
            f"{count} int4 {op} op(s) not delegated to XNNPACK: they run on LiteRT's builtin kernel, which expands "
            "int4 weights to int8 to compute; the file is smaller, but expect no int4 speed-up for them"
        )
    other = Counter(op["op"] for op in fallback_ops if op["weights"] != "INT4")
    if other:
        shown = ", ".join(f"{count} {op}" for op, count in sorted(other.items()))
        notes.append(f"weighted ops on builtin kernels, not XNNPACK: {shown}")
    if densified:
        notes.append(
            f"{densified} DENSIFY op(s): sparse tensors are expanded to dense at load, so the saving is in the file "
            "only, not in memory or compute"
        )
    return notes
