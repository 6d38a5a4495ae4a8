"""The accuracy-aware search: the smallest (or fastest) artifact within the accuracy budget.

A driver, not a technique. It orders technique steps, each of which makes a model or an artifact from another one:

- `prune.prune` / `prune_native.prune_keras3` with per-layer targets from the sensitivity table (non-uniform
  sparsity), level after level, each continuing from the previous level's model;
- `cluster.cluster`: sparsity-preserving weight clustering of the sparsest models within budget;
- `quantize.litert.quantize_litert_plan`: per-layer int8 / int4 / float weights, chosen from sensitivity;
- `qat.quantization_aware`: the QAT fallback when full-integer PTQ of the chosen model misses the budget.

It reads only the validation split to decide: every candidate's figure that a decision uses is measured on
validation, and the Dataset it is given has no test split (`Dataset.without_test`). The pipeline then measures
the chosen candidates on the test split (`Search.confirm`), taking the next one on the Pareto front when one
misses the budget there. Candidates are ordered so that a short `--budget` still returns the best found so far;
the trace of everything tried survives an interruption.

Given an executor (`compress --search ... --ray`), the driver makes each model's quantized artifacts as a task of
their own (`make_artifacts`: the float .tflite in, the quantized files and their validation figures out) while it
goes on to fine-tune the next model; the tasks of successive models form a chain, so every decision is the one the
search makes in one process. Their quick latency is timed here, once every task is in and nothing of the search
runs beside it, before the steps that read it.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import interrupt
from .classifier import ModelInfo
from .config import CompressConfig, Format, LatencyConfig, Precision, SearchGoal
from .data import Dataset
from .errors import one_line_reason
from .executor import Executor, Task
from .measure import batch_of, file_sizes, parity, primary_top1, time_latency, weight_sparsity
from .sensitivity import Sensitivity
from .types import Step, known_fields

log = logging.getLogger("effkit")

# Candidates are timed under a short protocol; the chosen ones get the full one when measured on test.
QUICK_LATENCY = LatencyConfig(warmup_runs=3, warmup_seconds=0.02, min_runs=30, min_seconds=0.05, max_seconds=1.0)
SENSITIVITY_SHARE = 0.3  # at most this share of the budget goes to the sensitivity table
MAX_LAYER_SPARSITY = 0.98
FLOAT_LEFT = 0.5  # an int8-weight file above this share of the float file's bytes left its largest weights float
MAX_CONFIRMED = 6  # front candidates measured on test before giving up
MAX_FLOAT_LAYERS = 32  # selective int8 gives up beyond this many float ops
SMALL_LAYER = 0.01  # share of the prunable weights under which an unprobed layer is spared


class Decision:
    KEPT = "kept"  # within budget on validation
    DROPPED = "dropped"  # measured, misses the budget (or agreement) on validation
    FAILED = "failed"  # the step failed; the reason says why
    DOMINATED = "dominated"  # within budget, but another candidate is better on both axes
    FRONT = "front"  # on the Pareto front of everything within budget
    CHOSEN = "chosen"  # confirmed on test and recommended
    REJECTED = "rejected on test"  # chosen on validation, missed the budget on the test split


@dataclass(frozen=True)
class Candidate:
    """One point the search tried: a Keras model (kind `model`) or an artifact (kind `artifact`)."""

    name: str
    kind: str
    parent: str | None  # what it was made from
    settings: dict[str, Any]
    decision: str
    reason: str = ""
    val_top1: float | None = None
    val_drop_pp: float | None = None  # against the user's model on validation; positive = worse
    agreement: float | None = None  # artifacts: % of validation samples with the same top-1 as their Keras model
    size_bytes: int | None = None
    gzip_bytes: int | None = None
    p50_ms: float | None = None
    sparsity: float | None = None
    seconds: float = 0.0
    variant: str | None = None  # the report variant it became, when measured on test

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(**known_fields(cls, data))


@dataclass
class _Source:
    """A Keras model the search made (or the user's), with how it was made."""

    name: str
    model: Any
    steps: tuple[Step, ...]
    layer_sparsity: dict[str, float]
    sparsity: float
    val_top1: float
    val_outputs: np.ndarray  # primary head on validation: what its artifacts must agree with
    clusters: int | None = None
    float_tflite: Path | None = None
    layers: tuple[str, ...] = ()  # every leaf layer's name (`sensitivity.layer_names`): how plans name ops


@dataclass
class _Artifact:
    candidate: Candidate
    path: Path
    source: _Source
    fmt: Format
    quantization: str
    steps: tuple[Step, ...]
    backend: str = "litert"


@dataclass
class Deadline:
    budget_seconds: float | None
    started: float = field(default_factory=time.perf_counter)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def passed(self, share: float = 1.0) -> bool:
        return self.budget_seconds is not None and self.elapsed >= self.budget_seconds * share


class Search:
    """One search over one model. `run()` decides on validation; `confirm()` measures the front on test.

    The trace (`candidates`) grows as the search goes, so a caller that is interrupted still has it.
    """

    def __init__(
        self,
        model: Any,
        dataset: Dataset,
        *,
        info: ModelInfo,
        config: CompressConfig,
        calibration: np.ndarray,
        scratch: Path | None = None,
        cache_dirs: tuple[Path, ...] = (),
        prune_blocker: str | None = None,
        executor: Executor | None = None,
    ):
        if config.search is None:
            raise ValueError("Search needs config.search")
        self.model = model
        self.dataset = dataset.without_test()  # decisions can not read what they must not
        self.info = info
        self.config = config
        self.settings = config.search
        self.budget_pp = config.max_accuracy_drop
        self.calibration = calibration
        self._own_scratch = scratch is None
        self.scratch = Path(tempfile.mkdtemp(prefix="effkit-search-")) if scratch is None else Path(scratch)
        self.cache_dirs = cache_dirs
        self.prune_blocker = prune_blocker
        self.deadline = Deadline(self.settings.budget_seconds)
        self.candidates: list[Candidate] = []
        self.sensitivity: Sensitivity | None = None
        self.artifacts: dict[str, _Artifact] = {}
        self.baseline_val_top1: float | None = None
        self.stopped = "running"
        self._budget_spent = False
        self._floats_needed = 0  # float ops the last selective int8 plan needed: the next source starts there
        self.notes: list[str] = []
        self._names = info.output_names
        self._val_labels = self.dataset.labels("val", self._names)
        self.executor = executor  # None: artifacts made here, in line
        self._pending: list[tuple[_Source, Task]] = []  # artifact tasks not merged yet, in the order submitted
        self._timed_here = True  # False in an artifact task: its quick latency is timed by the driver
        self.task_workers: list[str] = []  # host:pid of each artifact task merged, in order

    def close(self) -> None:
        """Remove the candidates' files (the chosen ones were copied out by then)."""
        if self._own_scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def chosen_variant(self) -> str | None:
        """The report variant of the candidate chosen on test, if any."""
        return next((c.variant for c in self.candidates if c.decision == Decision.CHOSEN), None)

    # ------------------------------------------------------------------ the driver
    def run(self) -> None:
        """Try candidates in order until done or out of budget. Never reads the test split."""
        try:
            baseline = self._baseline_source()
            self.baseline_val_top1 = baseline.val_top1
            self.sensitivity = self._sensitivity(baseline)
            self._artifacts(baseline)
            within = [baseline]
            for source in self._progressive(baseline):
                within.append(source)
            for source in self._clustered(within):
                within.append(source)
            if self.settings.goal == SearchGoal.LATENCY:
                within.extend(self._structured(baseline))
            self._collect()
            self._qat_fallback(within)
            self._onnx_of_best_integer()
            self.stopped = "budget" if self._budget_spent else "done"
        except KeyboardInterrupt:
            self.stopped = "interrupted"
            for _, task in self._pending:
                task.cancel()
            self._pending.clear()
            raise
        finally:
            self._mark_front()

    def _progressive(self, baseline: _Source) -> Iterator[_Source]:
        """Prune level after level, each from the previous level's model, until a level misses the budget."""
        previous = baseline
        for level in self.settings.levels:
            if level <= previous.sparsity + 1e-3:
                continue
            if self._out_of_time():
                return
            targets = layer_targets(level, self.sensitivity, self._prunable(), budget_pp=self.budget_pp)
            name = f"s{round(level * 100):d}"
            source = None
            # A level that misses gets one more try with twice the fine-tune, from the same model: on a few hundred
            # validation samples one miss can be a few samples of noise, or a fine-tune cut short.
            for epochs, suffix in ((self.settings.level_epochs, ""), (2 * self.settings.level_epochs, "-long")):
                source = self._make_source(
                    name + suffix,
                    previous,
                    lambda prev=previous, level=level, targets=targets, epochs=epochs: self._prune(
                        prev, level, targets, epochs=epochs
                    ),
                    settings={"sparsity": level, "layer_targets": targets, "epochs": epochs},
                )
                if source is not None or self.candidates[-1].decision != Decision.DROPPED or self._out_of_time():
                    break
            if source is None:
                return
            yield source
            self._artifacts(source)
            previous = source

    def _clustered(self, within: list[_Source]) -> Iterator[_Source]:
        """Cluster the two sparsest models within budget, at decreasing cluster counts while within budget."""
        for parent in sorted(within[1:], key=lambda s: -s.sparsity)[:2] or within[:1]:
            for clusters in sorted(self.settings.clusters, reverse=True):
                if self._out_of_time():
                    return
                source = self._make_source(
                    f"{parent.name}-c{clusters}",
                    parent,
                    lambda parent=parent, clusters=clusters: self._cluster(parent, clusters),
                    settings={"clusters": clusters, "preserve_sparsity": True},
                )
                if source is None:
                    break  # fewer clusters only costs more
                source.clusters = clusters
                yield source
                self._artifacts(source)

    def _structured(self, baseline: _Source) -> Iterator[_Source]:
        """For the latency goal: 2:4 structured sparsity (at most 2 nonzero in every 4 input channels), the pattern
        checked on the artifact by the export step. XNNPACK on CPUs does not skip the zeros, so this is measured,
        not assumed to be faster."""
        if self._out_of_time():
            return
        source = self._make_source(
            "s2of4",
            baseline,
            lambda: self._prune_m_by_n(baseline, (2, 4)),
            settings={"m_by_n": "2:4"},
        )
        if source is not None:
            yield source
            self._artifacts(source)

    def _prune_m_by_n(self, parent: _Source, m_by_n: tuple[int, int]):
        from .errors import ModelError
        from .prune import prune

        if self.prune_blocker is not None:
            raise ModelError(f"m-of-n pruning needs tfmot, which cannot prune this model: {self.prune_blocker}")
        result = prune(parent.model, self.dataset, info=self.info, config=self._fine_tune_config(
            self.settings.level_epochs), seed=self.config.seed, m_by_n=m_by_n)  # fmt: skip
        return _Made("prune", result.model, result.step_params)

    def _qat_fallback(self, within: list[_Source]) -> None:
        """Full-integer artifacts: when PTQ of the best model within budget misses it, train with QAT (keeping
        its sparsity or clusters) and convert. `force_qat` runs it regardless."""
        if not self.settings.qat and not self.settings.force_qat:
            return
        integer = [a for a in self.artifacts.values() if a.candidate.settings.get("activations") == "int8"]
        if not within or self._out_of_time():
            return
        best = min(within, key=lambda s: self._best_objective(s))
        ptq = [a for a in integer if a.source is best]
        if not self.settings.force_qat and any(a.candidate.decision == Decision.KEPT for a in ptq):
            return
        reason = "forced" if self.settings.force_qat else "post-training int8 of the chosen model misses the budget"
        log.info("search: QAT fallback for %s (%s)", best.name, reason)
        started = time.perf_counter()
        name = f"{best.name}-qat"
        try:
            from .qat import convert_qat, quantization_aware

            preserve = "clusters" if best.clusters else ("sparsity" if best.sparsity > 0.05 else "none")
            result = quantization_aware(
                best.model,
                self.dataset,
                info=self.info,
                preserve=preserve,
                config=self._fine_tune_config(self.settings.cluster_epochs),
                seed=self.config.seed,
            )
            path = self.scratch / f"{name}.tflite"
            params = convert_qat(result, path, calibration=self.calibration)
        except Exception as error:
            self._failed(name, "artifact", best.name, {"qat": True, "why": reason}, error, started)
            return
        steps = (
            *best.steps,
            Step("qat", {**result.step_params(), "why": reason}),
            Step("export", {"format": "tflite", "backend": "converter", "mode": "int8", **params}),
        )
        settings = {"qat": True, "preserve": preserve, "activations": "int8", "weights": "int8", "why": reason}
        self._measure_artifact(name, best, path, Format.TFLITE, "int8", steps, settings, started, backend="converter")

    def _onnx_of_best_integer(self) -> None:
        """The best full-integer TFLite candidate's per-layer decisions in ONNX Runtime: the same model exported to
        ONNX and quantized static QDQ int8, its float layers mapped to `nodes_to_exclude`."""
        from .config import Quant
        from .export.onnx import export_onnx
        from .quantize.onnxruntime import onnx_nodes_for_layers, quantize_onnx

        integer = [
            a
            for a in self.artifacts.values()
            if a.fmt == Format.TFLITE
            and a.candidate.decision == Decision.KEPT
            and a.candidate.settings.get("activations") == "int8"
            and "layers" in a.candidate.settings
        ]
        if Format.ONNX not in self.config.formats or not integer or self._out_of_time():
            return
        best = min(integer, key=lambda a: (self.objective(a.candidate), a.candidate.val_drop_pp))
        source, floats = best.source, [k for k, v in best.candidate.settings["layers"].items() if v == "float"]
        name = f"{best.candidate.name}-onnx"
        settings = {"activations": "int8", "weights": "int8", "float_layers": floats, "from_plan": best.candidate.name}
        started = time.perf_counter()
        float_onnx, path = self.scratch / f"{source.name}-float.onnx", self.scratch / f"{name}.onnx"
        try:
            export_onnx(source.model, float_onnx)
            exclude = onnx_nodes_for_layers(float_onnx, floats, keras_layers=list(source.layers)) if floats else []
            params = quantize_onnx(float_onnx, path, quantization=Quant.INT8, calibration=self.calibration,
                                   config=self.config.onnx_quant, nodes_to_exclude=exclude)  # fmt: skip
        except KeyboardInterrupt:
            raise
        except Exception as error:
            self._failed(name, "artifact", source.name, settings, error, started)
            return
        steps = (*source.steps, Step("export", {"format": "onnx", "backend": "tf2onnx"}),
                 Step("quantize", {"mode": "int8", "format": "onnx", "backend": "onnxruntime", **params}))  # fmt: skip
        self._measure_artifact(name, source, path, Format.ONNX, "int8", steps, settings, started,
                               backend="onnxruntime")  # fmt: skip

    # ------------------------------------------------------------------ sources (Keras models)
    def _baseline_source(self) -> _Source:
        from .sensitivity import layer_names

        outputs = self._keras_val(self.model)
        overall, per_layer = weight_sparsity(self.model)
        top1 = self._val_top1(outputs)
        log.info(
            "search: baseline validation top-1 %.2f%%, budget %.2f pp (%s)",
            top1 * 100,
            self.budget_pp,
            self.settings.goal,
        )
        source = _Source("baseline", self.model, (), per_layer, overall, top1, self._primary(outputs),
                         layers=tuple(layer_names(self.model)))  # fmt: skip
        self._record(
            Candidate(
                "baseline",
                "model",
                None,
                {"sparsity": round(overall, 4)},
                Decision.KEPT,
                val_top1=top1,
                val_drop_pp=0.0,
                sparsity=round(overall, 4),
            )
        )
        return source

    def _make_source(self, name: str, parent: _Source, make: Callable[[], Any], *, settings: dict) -> _Source | None:
        """Run one model-making step; record it; None when it failed or its model misses the budget."""
        from .sensitivity import layer_names

        started = time.perf_counter()
        try:
            result = make()
        except KeyboardInterrupt:
            raise
        except Exception as error:
            self._failed(name, "model", parent.name, settings, error, started)
            return None
        outputs = self._keras_val(result.model)
        top1 = self._val_top1(outputs)
        drop = self._drop(top1)
        overall, per_layer = weight_sparsity(result.model)
        decision, reason = Decision.KEPT, ""
        if drop > self.budget_pp + 1e-9:
            decision, reason = Decision.DROPPED, f"the Keras model already loses {drop:.2f} pp on validation"
        self._record(
            Candidate(
                name,
                "model",
                parent.name,
                settings,
                decision,
                reason,
                top1,
                drop,
                sparsity=round(overall, 4),
                seconds=_since(started),
            )
        )
        if decision != Decision.KEPT:
            return None
        step = Step(result.stage, result.step_params())
        return _Source(
            name,
            result.model,
            (*parent.steps, step),
            per_layer,
            overall,
            top1,
            self._primary(outputs),
            clusters=parent.clusters,
            layers=tuple(layer_names(result.model)),
        )

    def _prune(self, parent: _Source, level: float, targets: dict[str, float], *, epochs: int):
        from .prune import prune
        from .prune_native import prune_keras3

        pruner = prune_keras3 if self.prune_blocker is not None else prune
        result = pruner(
            parent.model,
            self.dataset,
            info=self.info,
            sparsity=level,
            config=self._fine_tune_config(epochs),
            seed=self.config.seed,
            layer_targets=targets,
            start=parent.layer_sparsity,
        )
        return _Made("prune", result.model, result.step_params)

    def _cluster(self, parent: _Source, clusters: int):
        from .cluster import cluster

        result = cluster(
            parent.model,
            self.dataset,
            info=self.info,
            clusters=clusters,
            config=self._fine_tune_config(self.settings.cluster_epochs),
            seed=self.config.seed,
            preserve_sparsity=True,
        )
        return _Made("cluster", result.model, result.step_params)

    def _fine_tune_config(self, epochs: int):
        return replace(self.config.prune, epochs=epochs, patience=max(2, epochs // 3))

    # ------------------------------------------------------------------ artifacts
    def _artifacts(self, source: _Source) -> None:
        """The source's quantized .tflite candidates: made here, or submitted as a task (`make_artifacts`) that
        starts once the previous source's task is done, since its selective int8 starts where that one ended."""
        if self._out_of_time() or not self._float_tflite(source):
            return
        if self.executor is None:
            self._quantized_artifacts(source)
            self._converter_if_needed(source)
            return
        remote = copy.copy(self)  # what the task reads: no Keras model, no training data, nothing made so far
        remote.model, remote.executor, remote._pending = None, None, []
        remote.artifacts, remote.candidates, remote.notes = {}, [], []
        remote.cache_dirs, remote._timed_here = (), False
        remote.dataset = self.dataset.only_validation()
        state = replace(source, model=None, float_tflite=None)
        previous = self._pending[-1][1] if self._pending else None
        budget = self.deadline.budget_seconds
        remaining = None if budget is None else budget - self.deadline.elapsed
        float_tflite = source.float_tflite.read_bytes()
        task = self.executor.submit(make_artifacts, remote, state, float_tflite, remaining, previous)
        self._pending.append((source, task))
        log.info("search: %s's artifacts submitted", source.name)

    def _float_tflite(self, source: _Source) -> bool:
        """The source's float .tflite, which every plan quantizes; False when it cannot be converted (recorded)."""
        from .export.tflite import export_tflite

        if source.float_tflite is not None:
            return True
        started = time.perf_counter()
        source.float_tflite = self.scratch / f"{source.name}-float.tflite"
        try:
            export_tflite(source.model, source.float_tflite)
        except Exception as error:
            self._failed(f"{source.name}-tflite", "artifact", source.name, {}, error, started)
            source.float_tflite = None
            return False
        return True

    def _quantized_artifacts(self, source: _Source) -> None:
        """The source's quantized .tflite candidates, each plan chosen from the sensitivity table: what needs only
        the float .tflite, not the Keras model."""
        for label, plan in self._plans(source):
            if self._out_of_time():
                return
            self._quantized(source, label, plan)
        a8 = self.artifacts.get(f"{source.name}-a8")
        if a8 is not None and a8.candidate.decision == Decision.DROPPED:
            self._selective_int8(source, a8)

    def _converter_if_needed(self, source: _Source) -> None:
        w8 = self.artifacts.get(f"{source.name}-w8")
        if w8 is not None and w8.candidate.size_bytes > FLOAT_LEFT * source.float_tflite.stat().st_size:
            self._converter_dynamic(source)

    def _merge(self, source: _Source, task: Task) -> None:
        """A finished artifact task's candidates into the trace, in the order it made them, and its files into the
        scratch folder; then what needs the Keras model (the converter's int8 weights)."""
        try:
            batch: ArtifactBatch = task.result()
        except KeyboardInterrupt:
            raise
        except Exception as error:  # the task failed outright (its worker died past its retries): its plans did
            self._failed(f"{source.name}-artifacts", "artifact", source.name, {}, error, time.perf_counter())
            return
        for candidate in batch.candidates:
            self._record(candidate)
            made = batch.made.get(candidate.name)
            if made is None:
                continue
            fmt, quantization, steps, backend = made
            path = self.scratch / f"{candidate.name}.{Format(fmt).value}"
            path.write_bytes(batch.files[candidate.name])
            artifact = _Artifact(candidate, path, source, Format(fmt), quantization, steps, backend)
            self.artifacts[candidate.name] = artifact
        self.notes.extend(batch.notes)
        self.task_workers.append(batch.worker)
        self._floats_needed = batch.floats_needed
        self._budget_spent = self._budget_spent or batch.budget_spent
        self._converter_if_needed(source)

    def _merge_ready(self) -> None:
        """Merge the tasks that are done, oldest first, up to the first still running (the trace keeps its order)."""
        while self._pending and self._pending[0][1].done():
            self._merge(*self._pending.pop(0))

    def _collect(self) -> None:
        """Wait for every artifact task, merge them, and time the candidates they made with nothing else running."""
        while self._pending:
            self._merge(*self._pending.pop(0))
        for name, artifact in list(self.artifacts.items()):
            if artifact.candidate.p50_ms is not None or artifact.candidate.decision == Decision.FAILED:
                continue
            try:
                p50 = self._quick_p50(artifact.path, artifact.fmt)
            except KeyboardInterrupt:
                raise
            except Exception as error:
                self.notes.append(f"search: could not time {name}: {one_line_reason(error)}")
                continue
            self._update(self._index(name), p50_ms=p50)

    def _converter_dynamic(self, source: _Source) -> None:
        """When the LiteRT quantizer's int8-weight plan leaves most of the file float (it quantizes no GATHER in
        dynamic mode, and Keras embeddings convert to GATHER), the converter's dynamic-range quantization does."""
        from .config import Quant
        from .quantize.tflite_converter import quantize_tflite
        from .runtime.delegation import xnnpack_summary

        name = f"{source.name}-w8c"
        settings = {
            "weights": "int8",
            "activations": "float",
            "why": "the LiteRT int8-weight plan left it mostly float",
        }
        started = time.perf_counter()
        path = self.scratch / f"{name}.tflite"
        try:
            quantize_tflite(source.model, path, quantization=Quant.DYNAMIC)
        except KeyboardInterrupt:
            raise
        except Exception as error:
            self._failed(name, "artifact", source.name, settings, error, started)
            return
        step = {"mode": "dynamic", "format": "tflite", "backend": "converter", "xnnpack": xnnpack_summary(path)}
        steps = (*source.steps, Step("quantize", step))
        self._measure_artifact(name, source, path, Format.TFLITE, "dynamic", steps, settings, started,
                               backend="converter")  # fmt: skip

    def _selective_int8(self, source: _Source, uniform: _Artifact) -> None:
        """Full-integer int8 that misses the budget: leave the ops that add the most error in float, 1, 2, 4...
        of them, until a plan is within budget. The ranking comes from the LiteRT quantizer's validator (each op's
        input SNR over its output SNR) on validation inputs, with ops measured fragile alone first."""
        from .quantize.litert import LayerPlan, noise_ranking

        try:
            ranking = noise_ranking(source.float_tflite, uniform.path, self.dataset.x_val[:64],
                                    keras_layers=list(source.layers))  # fmt: skip
        except Exception as error:
            self.notes.append(f"could not rank {source.name}'s int8 ops by error: {one_line_reason(error)}")
            return
        fragile = self._fragile_layers()
        order = list(dict.fromkeys([*fragile, *(layer for layer, _ in ranking)]))
        count = max(1, len(fragile) + 1, self._floats_needed)
        while count <= min(len(order), MAX_FLOAT_LAYERS):
            if self._out_of_time():
                return
            layers = tuple((layer, Precision.FLOAT) for layer in order[:count])
            label = f"a8-f{count}"
            why = f"uniform int8 {uniform.candidate.reason}; the {count} op(s) adding the most error stay float"
            plan = LayerPlan(weights=Precision.INT8, activations="int8", layers=layers)
            self._quantized(source, label, plan, why=why)
            made = self.artifacts.get(f"{source.name}-{label}")
            if made is not None and made.candidate.decision == Decision.KEPT:
                self._floats_needed = count
                return
            count *= 2

    def _plans(self, source: _Source):
        """(label, LayerPlan): int8 weights; int4 where sensitivity allows; full-integer for latency and MCUs."""
        from .quantize.litert import LayerPlan

        fragile = self._fragile_layers()
        float_layers = tuple((layer, Precision.FLOAT) for layer in fragile)
        int4_layers = tuple((layer, Precision.INT4) for layer in self._int4_layers() if layer not in fragile)
        yield "w8", LayerPlan(weights=Precision.INT8, activations="float", layers=float_layers)
        if int4_layers:
            yield "w4", LayerPlan(weights=Precision.INT8, activations="float", layers=float_layers + int4_layers)
        yield "a8", LayerPlan(weights=Precision.INT8, activations="int8", layers=float_layers)

    def _fragile_layers(self) -> list[str]:
        """Layers whose op alone, quantized to int8, costs more than half the budget: they stay float."""
        if self.sensitivity is None:
            return []
        return [
            row.layer
            for row in self.sensitivity.layers
            if row.int8_drop_pp is not None and row.int8_drop_pp > self.budget_pp / 2
        ]

    def _int4_layers(self) -> list[str]:
        """Layers measured to take int4 weights alone within `int4_max_drop` pp."""
        if self.sensitivity is None:
            return []
        return [
            row.layer
            for row in self.sensitivity.layers
            if row.int4_supported and row.int4_drop_pp is not None and row.int4_drop_pp <= self.settings.int4_max_drop
        ]

    def _quantized(self, source: _Source, label: str, plan, *, why: str | None = None) -> None:
        from .quantize.litert import quantize_litert_plan
        from .runtime.delegation import xnnpack_summary

        name = f"{source.name}-{label}"
        started = time.perf_counter()
        path = self.scratch / f"{name}.tflite"
        settings = {
            "weights": str(plan.weights),
            "activations": plan.activations,
            "layers": {layer: str(precision) for layer, precision in plan.layers},
            **({"why": why} if why else {}),
        }
        try:
            params = quantize_litert_plan(
                source.float_tflite,
                path,
                plan=plan,
                calibration=self.calibration,
                keras_layers=list(source.layers),
            )
        except KeyboardInterrupt:
            raise
        except Exception as error:
            self._failed(name, "artifact", source.name, settings, error, started)
            return
        quantization = "int8" if plan.activations == "int8" else ("int4" if label == "w4" else "dynamic")
        steps = (
            *source.steps,
            Step("export", {"format": "tflite", "backend": "converter"}),
            Step(
                "quantize",
                {
                    "mode": quantization,
                    "format": "tflite",
                    "backend": "litert",
                    **params,
                    "xnnpack": xnnpack_summary(path),
                },
            ),
        )
        structured = next((step.params for step in source.steps if step.params.get("m_by_n")), None)
        if structured is not None:  # the m-of-n pattern, checked on the artifact itself
            from .export.tflite import m_by_n_check

            m, n = (int(part) for part in structured["m_by_n"].split(":"))
            check = m_by_n_check(path, m=m, n=n, layers=tuple(structured["m_by_n_layers"]))
            steps += (Step("check", check),)
            settings["m_by_n_held"] = check["pattern_held"]
        self._measure_artifact(name, source, path, Format.TFLITE, quantization, steps, settings, started)

    def _measure_artifact(
        self, name, source, path, fmt, quantization, steps, settings, started, *, backend: str = "litert"
    ) -> None:
        from .runtime import open_runner

        try:
            runner = open_runner(path, fmt, threads=self.config.latency.threads[0], outputs=self._names)
            outputs = runner.predict(self.dataset.x_val)
            top1 = self._val_top1(outputs)
            agreement = _agreement(self._primary(outputs), source.val_outputs, self.info)
            size, gzip = file_sizes(path)
            p50 = self._quick_p50(path, fmt, runner) if self._timed_here else None
        except KeyboardInterrupt:
            raise
        except Exception as error:
            self._failed(name, "artifact", source.name, settings, error, started)
            return
        drop = self._drop(top1)
        decision, reason = Decision.KEPT, ""
        needed = self.agreement_needed()
        if drop > self.budget_pp + 1e-9:
            decision, reason = Decision.DROPPED, f"loses {drop:.2f} pp on validation"
        elif agreement is not None and agreement < needed:
            decision = Decision.DROPPED
            reason = f"agrees with its Keras model on {agreement:.1f}% < {needed:.1f}% on validation"
        candidate = Candidate(
            name,
            "artifact",
            source.name,
            settings,
            decision,
            reason,
            top1,
            drop,
            agreement,
            size,
            gzip,
            p50,
            round(source.sparsity, 4),
            _since(started),
        )
        self._record(candidate)
        self.artifacts[name] = _Artifact(candidate, path, source, fmt, quantization, steps, backend)

    def _quick_p50(self, path: Path, fmt: Format, runner: Any = None) -> float:
        """The candidate's median latency under the short protocol, at the headline batch and thread count."""
        from .runtime import open_runner

        if runner is None:
            runner = open_runner(path, fmt, threads=self.config.latency.threads[0], outputs=self._names)
        x = batch_of(self.dataset.x_val, self.config.latency.batch)
        return round(time_latency(runner.bind(x), config=QUICK_LATENCY, batch=len(x), threads=runner.threads).p50, 5)

    def agreement_needed(self) -> float:
        """The top-1 agreement with its Keras model a candidate needs on validation: the parity bar the test split
        will hold it to, plus one standard error of a proportion at that bar over the validation samples, so that
        a candidate passing by a sample or two on validation does not turn out a mismatch on test."""
        bar = self.config.parity.quantized_agreement / 100
        samples = max(1, len(self.dataset.x_val))
        return round(100 * min(1.0, bar + (bar * (1 - bar) / samples) ** 0.5), 2)

    # ------------------------------------------------------------------ the front and the choice
    def objective(self, candidate: Candidate) -> float:
        if self.settings.goal == SearchGoal.LATENCY:
            return candidate.p50_ms if candidate.p50_ms is not None else float("inf")
        return candidate.gzip_bytes if candidate.gzip_bytes is not None else float("inf")

    def _best_objective(self, source: _Source) -> float:
        values = [
            self.objective(a.candidate)
            for a in self.artifacts.values()
            if a.source is source and a.candidate.decision == Decision.KEPT
        ]
        return min(values, default=float("inf"))

    def front(self, *, without: Collection[str] = ()) -> list[Candidate]:
        """Artifacts within budget that no other beats on both the objective and the validation drop, best
        objective first; `without` leaves out candidates (those already rejected on test)."""
        within = (Decision.KEPT, Decision.FRONT, Decision.DOMINATED)
        kept = [
            a.candidate
            for a in self.artifacts.values()
            if a.candidate.decision in within and a.candidate.name not in without
        ]
        front = [
            c
            for c in kept
            if not any(
                (self.objective(o) <= self.objective(c) and o.val_drop_pp <= c.val_drop_pp)
                and (self.objective(o) < self.objective(c) or o.val_drop_pp < c.val_drop_pp)
                for o in kept
            )
        ]
        return sorted(front, key=lambda c: (self.objective(c), c.val_drop_pp))

    def _mark_front(self) -> None:
        on_front = {c.name for c in self.front()}
        for index, candidate in enumerate(self.candidates):
            if candidate.kind != "artifact" or candidate.decision != Decision.KEPT:
                continue
            decision = Decision.FRONT if candidate.name in on_front else Decision.DOMINATED
            self._update(index, decision=decision)

    def confirm(self, measure: Callable[[_Artifact], Any]) -> Any:
        """Measure front candidates on the test split in order, until one is within budget there.

        `measure(artifact)` returns the report Variant (from the pipeline); the first ok one within budget is
        chosen. When the whole front misses, the front of what is left is next, up to `MAX_CONFIRMED` measurements.
        Returns the chosen Variant, or None (each rejection is in the trace and in `notes`).
        """
        rejected: list[str] = []
        while len(rejected) < MAX_CONFIRMED and (front := self.front(without=rejected)):
            candidate = front[0]
            variant = measure(self.artifacts[candidate.name])
            index = self._index(candidate.name)
            test_drop = -variant.top1_delta_pp if variant.top1_delta_pp is not None else None
            if variant.ok and test_drop is not None and test_drop <= self.budget_pp + 1e-9:
                self._update(
                    index, decision=Decision.CHOSEN, variant=variant.name, reason=f"test drop {test_drop:.2f} pp"
                )
                return variant
            why = variant.error if not variant.ok else f"loses {test_drop:.2f} pp on the test split"
            self._update(index, decision=Decision.REJECTED, variant=variant.name, reason=why)
            rejected.append(candidate.name)
            self.notes.append(f"search: {candidate.name} was best on validation but {why}; took the next on the front")
        return None

    def confirm_integer(self, measure: Callable[[_Artifact], Any]) -> Any:
        """The best full-integer candidate within budget (what a microcontroller or an int8-only NPU runs), measured
        on test too when the choice was not one, the next one when it misses on test. Returns its Variant, or
        None."""
        integer = [
            a
            for a in self.artifacts.values()
            if a.candidate.settings.get("activations") == "int8"
            and a.candidate.decision in (Decision.FRONT, Decision.DOMINATED, Decision.CHOSEN, Decision.REJECTED)
        ]
        if not integer or any(a.candidate.variant for a in integer):
            return None
        for artifact in sorted(integer, key=lambda a: (self.objective(a.candidate), a.candidate.val_drop_pp)):
            variant = measure(artifact)
            self._update(self._index(artifact.candidate.name), variant=variant.name)
            test_drop = -variant.top1_delta_pp if variant.top1_delta_pp is not None else None
            if variant.ok and test_drop is not None and test_drop <= self.budget_pp + 1e-9:
                return variant
            why = variant.error if not variant.ok else f"loses {test_drop:.2f} pp on the test split"
            self.notes.append(f"search: full-integer {artifact.candidate.name} {why}; measured the next")
        return None

    # ------------------------------------------------------------------ helpers
    def _out_of_time(self) -> bool:
        """The budget is spent, and there is something to show for it: the first artifact within budget is always
        made, however short the budget."""
        interrupt.check()
        self._merge_ready()
        kept = any(a.candidate.decision == Decision.KEPT for a in self.artifacts.values())
        if self.deadline.passed() and kept:
            self._budget_spent = True
        return self._budget_spent

    def _sensitivity(self, baseline: _Source) -> Sensitivity | None:
        from .export.tflite import export_tflite
        from .sensitivity import cache_path, measure_sensitivity, model_hash, read_cache, write_cache

        digest = model_hash(
            self.model,
            self.dataset,
            settings={"probe": list(self.settings.probe_sparsities), "calibration": len(self.calibration)},
        )
        cached = read_cache([cache_path(folder, digest) for folder in self.cache_dirs], digest)
        if cached is not None:
            log.info("search: sensitivity read from the cache (%s)", digest[:16])
            return cached
        started = time.perf_counter()
        try:
            baseline.float_tflite = self.scratch / "baseline-float.tflite"
            export_tflite(self.model, baseline.float_tflite)
            table = measure_sensitivity(
                self.model,
                self.dataset,
                info=self.info,
                float_tflite=baseline.float_tflite,
                calibration=self.calibration,
                probe_sparsities=self.settings.probe_sparsities,
                digest=digest,
                out_of_time=lambda: self.deadline.passed(SENSITIVITY_SHARE),
            )
        except KeyboardInterrupt:
            raise
        except Exception as error:  # without the table the search still runs, with uniform settings
            log.warning("search: sensitivity failed, continuing with uniform settings: %s", one_line_reason(error))
            self.notes.append(f"sensitivity could not be measured: {one_line_reason(error)}")
            return None
        if self.cache_dirs and table.complete:
            write_cache(cache_path(self.cache_dirs[0], digest), table)
        log.info("search: sensitivity of %d layers in %.1fs", len(table.layers), time.perf_counter() - started)
        return table

    def _prunable(self) -> list[tuple[str, int]]:
        from .sensitivity import prunable_layers

        return prunable_layers(self.model)

    def _keras_val(self, model: Any) -> list[np.ndarray]:
        from .runtime import open_runner

        return open_runner(model, Format.KERAS, outputs=self._names).predict(self.dataset.x_val)

    def _val_top1(self, outputs: list[np.ndarray]) -> float:
        return primary_top1(self.info, outputs, self._val_labels)

    def _primary(self, outputs: list[np.ndarray]) -> np.ndarray:
        return outputs[self.info.heads.index(self.info.primary)]

    def _drop(self, top1: float) -> float:
        return round((self.baseline_val_top1 - top1) * 100, 4) if self.baseline_val_top1 is not None else 0.0

    def _failed(self, name: str, kind: str, parent: str | None, settings: dict, error: BaseException, started: float):
        """Record a step that failed: it costs only its own candidate."""
        reason = one_line_reason(error)
        self._record(Candidate(name, kind, parent, settings, Decision.FAILED, reason, seconds=_since(started)))

    def _record(self, candidate: Candidate) -> None:
        self.candidates.append(candidate)
        # A Ctrl-C that landed in a finalizer (LiteRT's Interpreter.__del__) was swallowed there: honour it here.
        interrupt.check()
        shown = "" if candidate.val_top1 is None else f" val top-1 {candidate.val_top1 * 100:.2f}%"
        size = "" if candidate.gzip_bytes is None else f" gzip {candidate.gzip_bytes / 1024:.1f} KiB"
        log.info("search: %-22s %-8s%s%s %s", candidate.name, candidate.decision, shown, size, candidate.reason)

    def _index(self, name: str) -> int:
        return next(i for i, c in enumerate(self.candidates) if c.name == name)

    def _update(self, index: int, **changes) -> None:
        self.candidates[index] = replace(self.candidates[index], **changes)
        if self.candidates[index].name in self.artifacts:
            self.artifacts[self.candidates[index].name].candidate = self.candidates[index]

    def trace(self) -> dict[str, Any]:
        """The report's `search` section."""
        return {
            "goal": str(self.settings.goal),
            "max_accuracy_drop": self.budget_pp,
            "budget_seconds": self.settings.budget_seconds,
            "seconds": round(self.deadline.elapsed, 2),
            "stopped": self.stopped,
            "baseline_val_top1": self.baseline_val_top1,
            "decided_on": "validation",
            "front": [c.name for c in self.front()],
            "chosen": next((c.name for c in self.candidates if c.decision == Decision.CHOSEN), None),
            "candidates": [c.to_dict() for c in self.candidates],
        }


@dataclass(frozen=True)
class ArtifactBatch:
    """What an artifact task returns: the candidates it tried, in order, and the files of those it made."""

    candidates: list[Candidate]
    made: dict[str, tuple[str, str, tuple[Step, ...], str]]  # name: (format, quantization, steps, backend)
    files: dict[str, bytes]
    notes: list[str]
    floats_needed: int
    budget_spent: bool
    worker: str  # host:pid of the process that made them


def make_artifacts(
    search: Search, source: _Source, float_tflite: bytes, remaining: float | None, previous: ArtifactBatch | None
) -> ArtifactBatch:
    """An artifact task: the source's quantized candidates, made and measured on validation where the task runs,
    from a copy of the search without its Keras models. `previous` is the previous source's batch: its selective
    int8 ended where this one starts. Nothing is timed here: the driver times the candidates once all are in."""
    scratch = Path(tempfile.mkdtemp(prefix="effkit-search-task-"))
    try:
        search.scratch = scratch
        search.deadline = Deadline(remaining)
        if previous is not None:
            search._floats_needed = previous.floats_needed
            search._budget_spent = search._budget_spent or previous.budget_spent
        source.float_tflite = scratch / f"{source.name}-float.tflite"
        source.float_tflite.write_bytes(float_tflite)
        search._quantized_artifacts(source)
        made = {name: (str(a.fmt), a.quantization, a.steps, a.backend) for name, a in search.artifacts.items()}
        files = {name: a.path.read_bytes() for name, a in search.artifacts.items()}
        worker = f"{socket.gethostname()}:{os.getpid()}"
        return ArtifactBatch(
            search.candidates, made, files, search.notes, search._floats_needed, search._budget_spent, worker
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass(frozen=True)
class _Made:
    """What a model-making step returns to the driver: its stage name, the model, and its step parameters."""

    stage: str
    model: Any
    step_params: Callable[[], dict[str, Any]]


def layer_targets(
    level: float, sensitivity: Sensitivity | None, layers: list[tuple[str, int]], *, budget_pp: float
) -> dict[str, float]:
    """Per-layer sparsities whose weighted mean is `level`, the least sensitive layers pruned most.

    A layer's share is `level * lam * g`, where `g = 1 / (1 + drop / budget)` from the mean of its pruning curve (1
    when unmeasured) and `lam` is found by bisection so that the weighted mean is the level. It is capped by what
    its curve showed within budget (`_tolerated`): a layer goes past the level only as far as it was seen to hold,
    and up to 0.98 only when it held at the highest probe. An unprobed layer under 1% of the weights is capped at
    half; without a table, every layer gets the level.
    """
    if sensitivity is None or not layers:
        return {name: level for name, _ in layers}
    weights = np.array([count for _, count in layers], dtype=float)
    drops, caps = [], []
    for name, count in layers:
        row = sensitivity.row(name)
        measured = row is not None and row.prune_drop_pp is not None
        drops.append(max(0.0, row.prune_drop_pp) if measured else 0.0)
        if measured:
            caps.append(_tolerated(row, level, budget_pp))
        else:  # an unprobed layer too small to matter for size keeps at most half its weights pruned
            caps.append(MAX_LAYER_SPARSITY if count >= SMALL_LAYER * weights.sum() else min(level, 0.5))
    tolerance = 1.0 / (1.0 + np.array(drops) / max(budget_pp, 0.1))
    cap = np.array(caps)

    def mean(lam: float) -> float:
        return float(np.sum(weights * np.minimum(cap, level * lam * tolerance)) / weights.sum())

    low, high = 0.0, 1.0 / max(level, 1e-6) / max(tolerance.min(), 1e-6)
    if mean(high) < level:  # even every layer at the cap does not reach the level
        low = high
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if mean(middle) < level else (low, middle)
    shares = np.minimum(cap, level * high * tolerance)
    return {name: round(float(share), 4) for (name, _), share in zip(layers, shares, strict=True)}


def _tolerated(row, level: float, budget_pp: float) -> float:
    """The most a layer may be pruned at this level: beyond the level only as far as its pruning curve showed it
    within budget (past the highest probe only when it held there too), never extrapolated from the mean alone."""
    if not row.prune_curve:
        return MAX_LAYER_SPARSITY
    probes = sorted((float(sparsity), drop) for sparsity, drop in row.prune_curve.items())
    held = [sparsity for sparsity, drop in probes if drop <= budget_pp]
    highest = max(held, default=0.0)
    if probes and highest == probes[-1][0]:
        return MAX_LAYER_SPARSITY
    return min(MAX_LAYER_SPARSITY, max(level, highest))


def _agreement(outputs: np.ndarray, reference: np.ndarray, info: ModelInfo) -> float | None:
    """% of samples with the same top-1 as the reference (`measure.parity`); None for a regression head."""
    agreement = parity(reference, outputs, info.primary.kind).top1_agreement
    return None if agreement is None else round(agreement, 3)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 2)


def copy_artifact(source: Path, destination: Path) -> Path:
    """A chosen candidate's file into the output folder, atomically."""
    from .files import atomic_output

    with atomic_output(destination) as temporary:
        shutil.copyfile(source, temporary)
    return destination
