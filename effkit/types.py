"""The records that flow through the pipeline. Frozen dataclasses, dict/JSON round-trip, no framework imports.

`report.json` is a contract that users' CI parses: field names here are that contract (schema_version 1).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from .errors import StageError

SCHEMA_VERSION = 1
BASELINE_SOURCE = "baseline"  # the user's model, before any technique; pruned sources are "pruned50" etc.


def variant_name(source: str, fmt: str, quantization: str | None = None, suffix: str = "") -> str:
    """`baseline-tflite-int8-litert`: the one spelling of a variant's name (`baseline-keras` without quantization)."""
    return f"{source}-{fmt}" if quantization is None else f"{source}-{fmt}-{quantization}{suffix}"


# Compression ratios and latency ratios are relative to the user's model as a float32 .tflite.
REFERENCE_VARIANT = variant_name(BASELINE_SOURCE, "tflite", "none")


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"
    MISMATCH = "mismatch"


def known_fields(cls, data: dict[str, Any]) -> dict[str, Any]:
    """Keep only the keys `cls` knows, so newer reports with extra fields still load."""
    names = {f.name for f in fields(cls)}
    return {key: value for key, value in data.items() if key in names}


@dataclass(frozen=True)
class Step:
    """One thing done to make a variant: `prune`, `export`, `quantize`. `params` are what it was told and measured."""

    stage: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, **self.params}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        params = {key: value for key, value in data.items() if key != "stage"}
        return cls(stage=data["stage"], params=params)

    @classmethod
    def of_file(cls, fmt: str, backend: str, mode: str | None = None, params: dict[str, Any] | None = None) -> Step:
        """The step that writes an artifact file, the same wherever it is made (a recipe of the grid, the search,
        a QAT model's int8 file): `export` for float32 (`mode` None or "none"), `quantize` otherwise. Its own keys
        (mode, format, backend) come first, and `params` may not rename them.

        Raises:
            StageError: `params` holds a key named like the step's own.
        """
        own = {"format": str(fmt), "backend": str(backend)}
        if mode is not None and str(mode) != "none":
            own = {"mode": str(mode), **own}
        params = params or {}
        clash = sorted(params.keys() & {*own, "stage"})
        if clash:
            raise StageError(f"the {backend} producer returned parameters named like the step's own: {clash}")
        return cls("quantize" if "mode" in own else "export", {**own, **params})


@dataclass
class Source:
    """A Keras model artifacts are made from: the user's (the baseline) or one a technique made, with the steps that
    made it. The grid measures its artifacts on test against `test_outputs`; the search judges them on validation
    against `val_outputs`. The search fills in the float .tflite its plans quantize once it is made."""

    name: str
    model: Any
    steps: tuple[Step, ...]
    sparsity: float  # measured share of zeros in its prunable kernels
    test_outputs: Any = None  # every head on the test split: what the grid's artifacts must reproduce
    val_outputs: Any = None  # primary head on validation: what the search's artifacts must agree with
    val_top1: float | None = None
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    clusters: int | None = None
    float_tflite: Any = None  # a Path, once made
    layers: tuple[str, ...] = ()  # every leaf layer's name (`sensitivity.layer_names`): how plans name ops

    @property
    def pruned_to_pattern(self) -> bool:
        """Pruned to an m-of-n pattern (its `prune` step names it, and the layers that hold it)."""
        return any(step.params.get("m_by_n") for step in self.steps)


@dataclass(frozen=True)
class Latency:
    """Latency figures in milliseconds under one protocol, with the batch and threads they were measured at."""

    p50: float
    p90: float
    p99: float
    mean: float
    stdev: float
    min: float
    batch: int
    threads: int
    runs: int
    throughput: float | None = None  # samples per second at the mean latency
    runtime: dict[str, Any] | None = None  # the engine and its settings, e.g. ONNX Runtime's graph optimization

    @classmethod
    def from_seconds(
        cls, seconds: list[float], *, batch: int, threads: int, runtime: dict[str, Any] | None = None
    ) -> Latency:
        """The figures of `seconds` per call (`edge.timing.summarize`, what a device computes too)."""
        from .edge.timing import summarize

        return cls(**summarize(seconds, batch=batch), batch=batch, threads=threads, runtime=runtime)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Latency:
        return cls(**known_fields(cls, data))


@dataclass(frozen=True)
class Parity:
    """How closely an artifact's outputs follow the Keras reference on the whole test split."""

    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float | None  # percent of test samples with the same predicted class; None for regression

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Parity:
        return cls(**known_fields(cls, data))


@dataclass(frozen=True)
class Variant:
    """One artifact and what was measured of it. `steps` record how it was made, in order."""

    name: str
    format: str
    quantization: str
    backend: str
    status: Status = Status.OK
    error: str | None = None
    sparsity: float | None = None  # measured share of zeros in the prunable kernels
    path: str | None = None  # relative to the report's folder
    size_bytes: int | None = None
    gzip_bytes: int | None = None
    top1: float | None = None
    top1_delta_pp: float | None = None
    compression_raw: float | None = None  # float32 TFLite raw bytes / this raw bytes
    compression_gzip: float | None = None  # float32 TFLite gzip bytes / this gzip bytes
    latency_ms: Latency | None = None  # at the first batch size and thread count
    latency_grid: tuple[Latency, ...] | None = None  # every batch size x thread count, when more than one
    load_ms: float | None = None  # loading the artifact into its runtime, ready to run
    memory_mb: dict[str, float] | None = None  # {"peak", "model"}: the runtime's peak RSS in a process of its own
    parity: Parity | None = None  # of the primary (first classification) head
    heads: dict[str, dict[str, Any]] | None = None  # multi-output models: per head {"top1"|"mae", "parity"}
    steps: tuple[Step, ...] = ()
    correct: str | None = None  # primary head's per-sample top-1 correctness on the test split (`stats.pack_correct`)
    # TFLite files: whether TFLite Micro runs it (`micro.MicroCheck.to_dict()`), and `lut` when clustered weights
    # were LUT-compressed for it (`micro.lut_compress`, its path relative to the report's folder)
    micro: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["latency_ms"] = self.latency_ms.to_dict() if self.latency_ms else None
        data["latency_grid"] = [latency.to_dict() for latency in self.latency_grid] if self.latency_grid else None
        data["parity"] = self.parity.to_dict() if self.parity else None
        data["steps"] = [step.to_dict() for step in self.steps]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Variant:
        values = known_fields(cls, data)
        if values.get("latency_ms"):
            values["latency_ms"] = Latency.from_dict(values["latency_ms"])
        if values.get("latency_grid"):
            values["latency_grid"] = tuple(Latency.from_dict(latency) for latency in values["latency_grid"])
        if values.get("parity"):
            values["parity"] = Parity.from_dict(values["parity"])
        values["steps"] = tuple(Step.from_dict(step) for step in values.get("steps") or ())
        values["status"] = Status(values.get("status", Status.OK))
        return cls(**values)


@dataclass(frozen=True)
class Report:
    """Everything `effkit compress` found. `recommended` names the chosen variant, or is None."""

    environment: dict[str, Any]
    config: dict[str, Any]
    model: dict[str, Any]
    data: dict[str, Any]
    baseline: dict[str, Any]
    variants: tuple[Variant, ...]
    recommended: str | None
    complete: bool = True
    notes: tuple[str, ...] = ()  # findings a reader should not miss, e.g. int8 no faster than float32 on this CPU
    search: dict[str, Any] | None = None  # the accuracy-aware search's trace (`search.Search.trace`)
    sensitivity: dict[str, Any] | None = None  # per-layer sensitivity table (`sensitivity.Sensitivity`)
    # the best variant for each deployment target (`targets.TARGETS`: "mobile", "mcu"), None where none qualifies
    recommended_by_target: dict[str, str | None] | None = None
    devices: tuple[dict[str, Any], ...] = ()  # figures timed on devices (`report.devices`, `effkit report --device`)
    schema_version: int = SCHEMA_VERSION

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(f"no variant named {name!r}; known: {', '.join(v.name for v in self.variants)}")

    @property
    def failed(self) -> tuple[Variant, ...]:
        return tuple(v for v in self.variants if v.status == Status.FAILED)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "complete": self.complete,
            "environment": self.environment,
            "config": self.config,
            "model": self.model,
            "data": self.data,
            "baseline": self.baseline,
            "variants": [variant.to_dict() for variant in self.variants],
            "recommended": self.recommended,
            **({"recommended_by_target": self.recommended_by_target} if self.recommended_by_target is not None else {}),
            "notes": list(self.notes),
            **({"search": self.search} if self.search is not None else {}),
            **({"sensitivity": self.sensitivity} if self.sensitivity is not None else {}),
            **({"devices": list(self.devices)} if self.devices else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        values = known_fields(cls, data)
        values["variants"] = tuple(Variant.from_dict(v) for v in data.get("variants", ()))
        values["notes"] = tuple(values.get("notes") or ())
        values["devices"] = tuple(values.get("devices") or ())
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> Report:
        return cls.from_dict(json.loads(text))
