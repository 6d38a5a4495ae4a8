"""Per-layer sensitivity: what one layer alone costs on the validation split when it is pruned (its smallest
weights zeroed at a few sparsities, no fine-tune), or when its op is quantized to int8 or to int4 while everything
else stays float32.

The search reads this table to decide per-layer sparsity targets, which layers take int4 weights and which stay
float. Pruning is measured on the Keras model (the layer's smallest weights zeroed, no fine-tune); quantization
with the LiteRT quantizer's per-op recipes on the float .tflite, run by LiteRT. Only the validation split is read.

The table is cached in the output folder under a hash of the model's weights, the validation split and the
settings, so a re-run does not pay for it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import interrupt
from ..config import Format, Precision
from ..errors import one_line_reason
from ..load.classifier import ModelInfo
from ..load.data import Dataset
from ..runtime.measure import PRUNABLE_WEIGHTS, leaf_layers, primary_top1, weight_name
from ..types import known_fields

log = logging.getLogger("effkit")

CACHE = "cache"  # under the output folder
CACHE_VERSION = 1
MAX_PROBED_LAYERS = 32


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer's row: its size and the validation drop (percentage points, positive = worse) of each change
    applied to it alone. None: not measured (no such op in the .tflite, the quantizer refused, or out of time)."""

    layer: str
    weights: int  # prunable weights (kernel, embeddings...) in the layer
    op: str | None = None  # the TFLite op its weights went into
    prune_curve: dict[str, float] | None = None  # {sparsity: drop} with this layer alone pruned, no fine-tune
    prune_drop_pp: float | None = None  # the mean of the curve: one figure to rank and allocate by
    int8_drop_pp: float | None = None  # static int8 weights and activations of this op alone
    int4_drop_pp: float | None = None  # int4 weights (channelwise) of this op alone, float activations
    int4_supported: bool | None = None  # whether the quantizer takes int4 for this op (else it would get int8)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerSensitivity:
        return cls(**known_fields(cls, data))

    @property
    def score(self) -> float:
        """How much this layer alone costs across every change tried (pp, each drop counted from 0)."""
        return sum(max(0.0, d) for d in (self.prune_drop_pp, self.int8_drop_pp, self.int4_drop_pp) if d is not None)


@dataclass(frozen=True)
class Sensitivity:
    """The table, with what it was measured against."""

    model_hash: str
    val_top1: float  # the float32 model's validation top-1 every drop is relative to
    probe_sparsities: tuple[float, ...]
    layers: tuple[LayerSensitivity, ...]
    seconds: float
    complete: bool = True  # False when the budget ran out before every row was measured
    cached: bool = False  # read from an earlier run's cache

    def row(self, layer: str) -> LayerSensitivity | None:
        return next((row for row in self.layers if row.layer == layer), None)

    def ranked(self) -> list[LayerSensitivity]:
        """Most sensitive first."""
        return sorted(self.layers, key=lambda row: -row.score)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layers": [row.to_dict() for row in self.layers]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sensitivity:
        values = known_fields(cls, data)
        values["layers"] = tuple(LayerSensitivity.from_dict(row) for row in data.get("layers", ()))
        values["probe_sparsities"] = tuple(values.get("probe_sparsities") or ())
        return cls(**values)


def model_hash(model: Any, dataset: Dataset, *, settings: dict[str, Any]) -> str:
    """sha256 of the model's weights (in layer order), the validation split and the settings."""
    digest = hashlib.sha256(json.dumps({"v": CACHE_VERSION, **settings}, sort_keys=True).encode())
    for weight in model.weights:
        digest.update((getattr(weight, "path", None) or weight.name).encode())
        digest.update(np.ascontiguousarray(np.asarray(weight.numpy())).tobytes())
    digest.update(dataset.digest("val").encode())
    return digest.hexdigest()


def cache_path(out_dir: Path, digest: str) -> Path:
    return Path(out_dir) / CACHE / f"sensitivity-{digest[:16]}.json"


def read_cache(paths: Iterable[Path], digest: str) -> Sensitivity | None:
    """The first complete cached table with this hash among `paths` (this output folder's, then siblings')."""
    for path in paths:
        try:
            table = Sensitivity.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if table.model_hash == digest and table.complete:
            return replace(table, cached=True)
    return None


def write_cache(path: Path, table: Sensitivity) -> None:
    from ..files import write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(table.to_dict(), indent=1) + "\n")


def measure_sensitivity(
    model: Any,
    dataset: Dataset,
    *,
    info: ModelInfo,
    float_tflite: Path,
    calibration: np.ndarray,
    probe_sparsities: tuple[float, ...],
    digest: str,
    out_of_time: Callable[[], bool] = lambda: False,
    max_layers: int = MAX_PROBED_LAYERS,
) -> Sensitivity:
    """Measure every layer's row, largest layers first, until done or `out_of_time()`.

    Args:
        model: the Keras model (either generation) the search starts from.
        dataset: its validation split is the only one read.
        info: which head is primary, and its kind.
        float_tflite: the model as float32 .tflite, which the per-op quantization starts from.
        calibration: representative samples (training split) for the static int8 rows.
        probe_sparsities: the shares of a layer's weights zeroed, one at a time, for its pruning curve.
        digest: the model hash the table is filed under.
        out_of_time: checked before each measurement; rows not reached keep None.
        max_layers: only the largest layers are probed (they hold the bytes worth saving); the others keep None.
    """
    from ..quantize.litert import quantizable_layers

    started = time.perf_counter()
    ops = {op.layer: op for op in quantizable_layers(float_tflite, keras_layers=layer_names(model))}
    rows = [
        LayerSensitivity(
            layer=name,
            weights=count,
            op=getattr(ops.get(name), "op", None),
            int4_supported=getattr(ops.get(name), "supports_int4", None),
        )
        for name, count in prunable_layers(model)
    ]
    rows.sort(key=lambda row: -row.weights)
    complete = True
    measured = []
    with tempfile.TemporaryDirectory(prefix="effkit-sens-") as scratch:
        probe = _Probe(model, dataset, info, float_tflite, calibration, Path(scratch))
        for index, row in enumerate(rows):
            interrupt.check()  # a Ctrl-C swallowed by a finalizer stops the table here
            if index >= max_layers:
                row = replace(row, error=f"not probed: only the {max_layers} largest layers are")
            elif out_of_time():
                complete = False
                row = replace(row, error="not probed: the search budget's share for sensitivity ran out")
            else:
                row = probe.measure(row, probe_sparsities)
                log.info(
                    "sensitivity %-24s %7d weights  prune %s  int8 %s  int4 %s",
                    row.layer,
                    row.weights,
                    *(_shown(d) for d in (row.prune_drop_pp, row.int8_drop_pp, row.int4_drop_pp)),
                )
            measured.append(row)
    return Sensitivity(
        model_hash=digest,
        val_top1=probe.keras_top1,
        probe_sparsities=tuple(probe_sparsities),
        layers=tuple(measured),
        seconds=round(time.perf_counter() - started, 2),
        complete=complete,
    )


class _Probe:
    """Measures one layer's changes on the validation split, against the float model in Keras and in LiteRT."""

    def __init__(self, model, dataset: Dataset, info: ModelInfo, float_tflite: Path, calibration, scratch: Path):
        self.model = model
        self.dataset = dataset
        self.info = info
        self.float_tflite = float_tflite
        self.calibration = calibration
        self.scratch = scratch
        self.labels = dataset.labels("val", info.output_names)
        self.keras_top1 = self.top1(model, Format.KERAS)
        self.tflite_top1 = self.top1(float_tflite, Format.TFLITE)

    def top1(self, artifact: Any, fmt: Format) -> float:
        from ..runtime import open_runner

        outputs = open_runner(artifact, fmt, outputs=self.info.output_names).predict(self.dataset.x_val)
        return primary_top1(self.info, outputs, self.labels)

    def measure(self, row: LayerSensitivity, sparsities: tuple[float, ...]) -> LayerSensitivity:
        curve = {f"{s:g}": _drop(self.keras_top1, self.hard_pruned(row.layer, s)) for s in sparsities}
        row = replace(row, prune_curve=curve, prune_drop_pp=round(float(np.mean(list(curve.values()))), 4))
        if row.op is None:
            return row
        try:
            int8 = _drop(self.tflite_top1, self.quantized(row.layer, Precision.INT8))
            int4 = _drop(self.tflite_top1, self.quantized(row.layer, Precision.INT4)) if row.int4_supported else None
        except Exception as error:  # one layer the quantizer refuses costs only its row
            return replace(row, error=one_line_reason(error))
        return replace(row, int8_drop_pp=int8, int4_drop_pp=int4)

    def hard_pruned(self, layer_name: str, sparsity: float) -> float:
        """Validation top-1 with this layer's smallest `sparsity` share of prunable weights zeroed; restored after."""
        layer = next(layer for layer in leaf_layers(self.model) if layer.name == layer_name)
        originals = layer.get_weights()
        pruned = []
        for weight, values in zip(layer.weights, originals, strict=True):
            if weight_name(weight) in PRUNABLE_WEIGHTS and values.size:
                keep = max(round(values.size * (1.0 - sparsity)), 1)
                threshold = np.sort(np.abs(values), axis=None)[-keep]
                values = np.where(np.abs(values) >= threshold, values, 0).astype(values.dtype)
            pruned.append(values)
        try:
            layer.set_weights(pruned)
            return self.top1(self.model, Format.KERAS)
        finally:
            layer.set_weights(originals)

    def quantized(self, layer: str, precision: Precision) -> float:
        """Validation top-1 of the .tflite with only this layer's op quantized: static int8, or int4 weights."""
        from ..quantize.litert import LayerPlan, quantize_litert_plan

        activations = "int8" if precision == Precision.INT8 else "float"
        plan = LayerPlan(weights=Precision.FLOAT, activations=activations, layers=((layer, precision),))
        path = self.scratch / f"{len(list(self.scratch.iterdir()))}-{precision}.tflite"
        quantize_litert_plan(
            self.float_tflite, path, plan=plan, calibration=self.calibration, keras_layers=layer_names(self.model)
        )
        return self.top1(path, Format.TFLITE)


def prunable_layers(model: Any) -> list[tuple[str, int]]:
    """(layer name, prunable weight count) of each leaf layer holding a kernel or embeddings, nested models too."""
    found = []
    for layer in leaf_layers(model):
        count = sum(int(np.prod(w.shape)) for w in layer.weights if weight_name(w) in PRUNABLE_WEIGHTS)
        if count:
            found.append((layer.name, count))
    return found


def layer_names(model: Any) -> list[str]:
    """Every leaf layer's name, nested models' too: how the quantizer reads Keras names from a .tflite's scopes."""
    return [layer.name for layer in leaf_layers(model)]


def _drop(reference: float, value: float) -> float:
    return round((reference - value) * 100, 4)


def _shown(drop: float | None) -> str:
    return "   -   " if drop is None else f"{drop:+6.2f}pp"


def table_for(
    model: Any,
    dataset: Dataset,
    *,
    info: ModelInfo,
    float_tflite: Path,
    calibration: np.ndarray,
    probe_sparsities: tuple[float, ...],
    cache_dirs: tuple[Path, ...],
    out_of_time: Callable[[], bool],
    notes: list[str],
) -> Sensitivity | None:
    """The model's sensitivity table: read from the first cache folder that holds it, or measured (the float
    .tflite written to `float_tflite` on the way) and cached in the first folder when complete. None when it cannot
    be measured: the search then runs with uniform settings, and `notes` says why."""
    from ..export.tflite import export_tflite

    digest = model_hash(model, dataset, settings={"probe": list(probe_sparsities), "calibration": len(calibration)})
    cached = read_cache([cache_path(folder, digest) for folder in cache_dirs], digest)
    if cached is not None:
        log.info("search: sensitivity read from the cache (%s)", digest[:16])
        return cached
    started = time.perf_counter()
    try:
        export_tflite(model, float_tflite)
        table = measure_sensitivity(
            model,
            dataset,
            info=info,
            float_tflite=float_tflite,
            calibration=calibration,
            probe_sparsities=probe_sparsities,
            digest=digest,
            out_of_time=out_of_time,
        )
    except KeyboardInterrupt:
        raise
    except Exception as error:  # without the table the search still runs, with uniform settings
        log.warning("search: sensitivity failed, continuing with uniform settings: %s", one_line_reason(error))
        notes.append(f"sensitivity could not be measured: {one_line_reason(error)}")
        return None
    if cache_dirs and table.complete:
        write_cache(cache_path(cache_dirs[0], digest), table)
    log.info("search: sensitivity of %d layers in %.1fs", len(table.layers), time.perf_counter() - started)
    return table
