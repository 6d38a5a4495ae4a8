"""The records of a bench run: one SuiteResult of ModelResults of VariantResults. `results.json` is their JSON.

Frozen dataclasses with a dict round trip and no framework imports, like `types.py`; the gate compares these
records, never the files they were written to. `results.json` is a contract CI parses (schema_version 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..cpu import CpuFingerprint
from ..types import Report, Status, Variant, known_fields

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class VariantResult:
    """What results.json keeps of one variant: a flat row, latency also as a ratio to the model's reference."""

    name: str
    format: str
    quantization: str
    backend: str
    status: Status = Status.OK
    error: str | None = None
    top1: float | None = None
    top1_delta_pp: float | None = None
    correct: str | None = None  # per-sample correctness (`stats.pack_correct`)
    size_bytes: int | None = None
    gzip_bytes: int | None = None
    p50_ms: float | None = None
    latency_ratio: float | None = None  # p50 / the reference artifact's p50 in the same run
    latency_ratio_first: float | None = None  # the in-run ratio, when the gate timed this one again
    latency_rounds: tuple[float, ...] = ()  # the ratios of the gate's alternating re-timing rounds
    load_ms: float | None = None
    memory_mb: dict[str, float] | None = None
    latency_grid: tuple[dict[str, Any], ...] = ()
    # What its steps chose for the CPU it was made on (ONNX Runtime's integer types): another CPU makes another
    # artifact from the same settings. None in results from before effkit recorded it.
    chosen_for_cpu: dict[str, str] | None = None

    @classmethod
    def of(cls, variant: Variant, reference: Variant | None) -> VariantResult:
        latency = variant.latency_ms
        ratio = round(latency.p50 / reference.latency_ms.p50, 4) if latency and reference else None
        return cls(
            name=variant.name,
            format=str(variant.format),
            quantization=str(variant.quantization),
            backend=str(variant.backend),
            status=Status(variant.status),
            error=variant.error,
            top1=variant.top1,
            top1_delta_pp=variant.top1_delta_pp,
            correct=variant.correct,
            size_bytes=variant.size_bytes,
            gzip_bytes=variant.gzip_bytes,
            p50_ms=latency.p50 if latency else None,
            latency_ratio=ratio,
            load_ms=variant.load_ms,
            memory_mb=variant.memory_mb,
            latency_grid=tuple(
                {"batch": g.batch, "threads": g.threads, "p50_ms": g.p50, "throughput": g.throughput}
                for g in (variant.latency_grid or ((latency,) if latency else ()))
            ),
            chosen_for_cpu={
                k: str(v) for step in variant.steps for k, v in step.params.get("chosen_for_cpu", {}).items()
            },
        )

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["status"] = str(self.status)
        data["latency_grid"] = [dict(g) for g in self.latency_grid]
        if self.latency_ratio_first is None:
            del data["latency_ratio_first"]
        if self.latency_rounds:
            data["latency_rounds"] = list(self.latency_rounds)
        else:
            del data["latency_rounds"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VariantResult:
        values = known_fields(cls, data)
        values["status"] = Status(values.get("status", Status.OK))
        values["latency_grid"] = tuple(values.get("latency_grid") or ())
        values["latency_rounds"] = tuple(values.get("latency_rounds") or ())
        for name in ("format", "quantization", "backend"):
            values.setdefault(name, "")
        return cls(**values)


@dataclass(frozen=True)
class ModelResult:
    """One model of a suite: its variants, or why it could not be run."""

    name: str
    data: str = ""
    status: Status = Status.OK
    error: str | None = None
    reference: str | None = None  # the reference classifier from models/, or
    path: str | None = None  # the model file
    report: str | None = None  # its report.json, relative to the results folder
    baseline_top1: float | None = None
    test_samples: int | None = None
    test_digest: str | None = None  # `Dataset.test_digest`: paired accuracy tests need the same split
    recommended: str | None = None
    latency_reference: str | None = None
    variants: tuple[VariantResult, ...] = ()

    @classmethod
    def of(cls, report: Report, *, name: str, data: str, reference: str | None, path: str | None,
           latency_reference: str) -> ModelResult:  # fmt: skip
        chosen = next((v for v in report.variants if v.name == latency_reference and v.latency_ms), None)
        return cls(
            name=name,
            data=data,
            reference=reference,
            path=path,
            report=f"{name}/report.json",
            baseline_top1=report.baseline["top1"],
            test_samples=report.data.get("test"),
            test_digest=report.data.get("test_digest"),
            recommended=report.recommended,
            latency_reference=latency_reference if chosen else None,
            variants=tuple(VariantResult.of(v, chosen) for v in report.variants),
        )

    @classmethod
    def failed(cls, *, name: str, data: str, error: str) -> ModelResult:
        return cls(name=name, data=data, status=Status.FAILED, error=error)

    def variant(self, name: str) -> VariantResult | None:
        return next((v for v in self.variants if v.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["status"] = str(self.status)
        data["variants"] = [v.to_dict() for v in self.variants]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelResult:
        values = known_fields(cls, data)
        values["status"] = Status(values.get("status", Status.OK))
        values["variants"] = tuple(VariantResult.from_dict(v) for v in values.get("variants") or ())
        return cls(**values)


@dataclass(frozen=True)
class SuiteResult:
    """A suite's run: every model's results, the machine, the thresholds, and the gate's verdict once judged.

    `reports` holds the in-memory reports of the models run in this process (not written): the gate's latency
    confirmation reads them instead of the files.
    """

    suite: str
    models: tuple[ModelResult, ...]
    description: str = ""
    complete: bool = True
    seconds: float | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    reports: Mapping[str, Report] = field(default_factory=dict, compare=False, repr=False)

    @property
    def cpu(self) -> CpuFingerprint | None:
        """The CPU the run's latencies were measured on; None for results from before fingerprints, or timed on
        nodes whose CPUs differ (`RayExecutor.environment`)."""
        recorded = self.environment.get("fingerprint")
        return CpuFingerprint.from_dict(recorded) if recorded else None

    @property
    def cpu_class(self) -> str | None:
        """The kernel class of the CPU the run was measured on; None when `cpu` is."""
        cpu = self.cpu
        return cpu.isa_class if cpu else None

    def model(self, name: str) -> ModelResult | None:
        return next((m for m in self.models if m.name == name), None)

    def with_variant(self, model: str, variant: str, **changes: Any) -> SuiteResult:
        """A copy with one variant's fields changed (records are never changed in place)."""
        models = tuple(
            replace(m, variants=tuple(replace(v, **changes) if v.name == variant else v for v in m.variants))
            if m.name == model
            else m
            for m in self.models
        )
        return replace(self, models=models)

    def not_ok(self) -> list[str]:
        """Models that failed and variants that are not ok, as `model/variant` names."""
        names = [m.name for m in self.models if m.status != Status.OK]
        for model in self.models:
            names += [f"{model.name}/{v.name}" for v in model.variants if v.status != Status.OK]
        return names

    def to_dict(self) -> dict[str, Any]:
        data = {
            "schema_version": self.schema_version,
            "suite": self.suite,
            "description": self.description,
            "complete": self.complete,
            "seconds": self.seconds,
            "environment": self.environment,
            "thresholds": self.thresholds,
            "models": [m.to_dict() for m in self.models],
        }
        if self.gate is not None:
            data["gate"] = self.gate
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SuiteResult:
        values = known_fields(cls, data)
        values.pop("reports", None)
        values.setdefault("suite", "")
        values["models"] = tuple(ModelResult.from_dict(m) for m in values.get("models") or ())
        return cls(**values)
