"""The model moves: each makes a candidate by calling a technique, then has the judge score it on validation.
`Workshop` holds what they need (the Keras models, the training and validation data, the settings): pruning,
clustering, m-of-n pruning and QAT fine-tunes make `Source`s; the float .tflite, the converter's dynamic range and
the ONNX twin of an int8 plan make artifacts, measured by the `ArtifactMaker`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..config import CompressConfig, Format, Quant
from ..errors import ModelError
from ..isolation import Isolation
from ..load.classifier import ModelInfo
from ..load.data import Dataset
from ..runtime.measure import weight_sparsity
from ..techniques.made import Made
from ..techniques.train import FINE_TUNE_KEYS
from ..types import Source, Step
from .artifacts import ArtifactMaker
from .budget import Costs, Deadline
from .judge import Judge
from .records import Artifact, Candidate, Decision, Trace, since
from .sensitivity import layer_names

log = logging.getLogger("effkit")

FLOAT_LEFT = 0.5  # an int8-weight file above this share of the float file's bytes left its largest weights float


@dataclass
class Workshop:
    """The moves that need the Keras model and the training data; what they make is recorded in `trace`."""

    dataset: Dataset  # train and validation only: no move may read the test split
    info: ModelInfo
    config: CompressConfig
    judge: Judge
    trace: Trace
    maker: ArtifactMaker  # measures what the moves make, in line
    prune_blocker: str | None = None  # why tfmot cannot prune the model (Keras 3 prunes it natively then)
    isolation: Isolation = field(default_factory=lambda: Isolation(enabled=False))  # where fine-tunes run
    deadline: Deadline | None = None  # the search's: fine-tunes stop in time for their model's artifacts
    costs: Costs = field(default_factory=Costs)  # what this run measured: each fine-tune adds its seconds per epoch

    def keras_val(self, model: Any) -> list[np.ndarray]:
        from ..runtime import open_runner

        return open_runner(model, Format.KERAS, outputs=self.info.output_names).predict(self.dataset.x_val)

    def baseline(self, model: Any) -> Source:
        """The user's model as the first source, scored on validation."""
        outputs = self.keras_val(model)
        overall, per_layer = weight_sparsity(model)
        top1 = self.judge.top1(outputs)
        self.judge.baseline_val_top1 = top1
        log.info(
            "search: baseline validation top-1 %.2f%%, budget %.2f pp (%s)",
            top1 * 100,
            self.judge.budget_pp,
            self.judge.goal,
        )
        source = Source("baseline", model, (), overall, val_outputs=self.judge.primary(outputs), val_top1=top1,
                        layer_sparsity=per_layer, layers=tuple(layer_names(model)))  # fmt: skip
        sparsity = round(overall, 4)
        self.trace.record(
            Candidate(
                "baseline",
                "model",
                None,
                {"sparsity": sparsity},
                Decision.KEPT,
                val_top1=top1,
                val_drop_pp=0.0,
                sparsity=sparsity,
            )
        )
        return source

    def source(self, name: str, parent: Source, make: Callable[[], Made], *, settings: dict) -> Source | None:
        """Run one model-making step; record it; None when it failed or its model misses the budget."""
        started = time.perf_counter()
        try:
            result = make()
        except KeyboardInterrupt:
            raise
        except Exception as error:
            self.trace.failed(name, "model", parent.name, settings, error, started)
            return None
        outputs = self.keras_val(result.model)
        top1 = self.judge.top1(outputs)
        drop = self.judge.drop(top1)
        overall, per_layer = weight_sparsity(result.model)
        decision, reason = self.judge.model_decision(drop)
        step = result.step()
        params = step.params
        self.costs.learn_fine_tune(step.stage, time.perf_counter() - started, params.get("epochs") or 0)
        tune = {key: params[key] for key in FINE_TUNE_KEYS if key in params}
        self.trace.record(
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
                seconds=since(started),
                fine_tune=tune or None,
            )
        )
        if decision != Decision.KEPT:
            return None
        return Source(
            name,
            result.model,
            (*parent.steps, step),
            overall,
            val_outputs=self.judge.primary(outputs),
            val_top1=top1,
            layer_sparsity=per_layer,
            clusters=parent.clusters,
            layers=tuple(layer_names(result.model)),
        )

    # ------------------------------------------------------------------ model-making steps (techniques)
    def prune(self, parent: Source, level: float, targets: dict[str, float], *, epochs: int) -> Made:
        from ..techniques.prune import prune
        from ..techniques.prune_native import prune_keras3

        pruner = prune_keras3 if self.prune_blocker is not None else prune
        result, isolation = self.isolation.run(
            f"prune {level:.0%} fine-tune",
            pruner,
            parent.model,
            self.dataset,
            info=self.info,
            sparsity=level,
            config=self.fine_tune_config(epochs),
            seed=self.config.seed,
            layer_targets=targets,
            start=parent.layer_sparsity,
            deadline=self.stop_at(),
        )
        return result.isolated(isolation)

    def prune_m_by_n(self, parent: Source, m_by_n: tuple[int, int], *, epochs: int) -> Made:
        from ..techniques.prune import prune

        if self.prune_blocker is not None:
            raise ModelError(f"m-of-n pruning needs tfmot, which cannot prune this model: {self.prune_blocker}")
        result, isolation = self.isolation.run(
            f"prune {m_by_n[0]}:{m_by_n[1]} fine-tune",
            prune,
            parent.model,
            self.dataset,
            info=self.info,
            config=self.fine_tune_config(epochs),
            seed=self.config.seed,
            m_by_n=m_by_n,
            deadline=self.stop_at(),
        )
        return result.isolated(isolation)

    def cluster(self, parent: Source, clusters: int, *, epochs: int) -> Made:
        from ..techniques.cluster import cluster

        result, isolation = self.isolation.run(
            f"cluster {clusters} fine-tune",
            cluster,
            parent.model,
            self.dataset,
            info=self.info,
            clusters=clusters,
            config=self.fine_tune_config(epochs),
            seed=self.config.seed,
            preserve_sparsity=True,
            deadline=self.stop_at(),
        )
        return result.isolated(isolation)

    def stop_at(self) -> float | None:
        """When a fine-tune must stop (wall clock): in time for its model's artifacts before the budget's end."""
        return None if self.deadline is None else self.deadline.wall_end(keep=self.costs.artifacts_reserve())

    def prune_channels(self, parent: Source, share: float, shares: dict[str, float], *, epochs: int) -> Made:
        """Structured pruning (`techniques.structured.prune_channels`) of `parent` with per-group shares."""
        from ..techniques.structured import prune_channels

        result, isolation = self.isolation.run(
            f"channels {share:.0%} fine-tune",
            prune_channels,
            parent.model,
            self.dataset,
            info=self.info,
            share=share,
            config=self.fine_tune_config(epochs),
            seed=self.config.seed,
            group_shares=shares,
            deadline=self.stop_at(),
        )
        return result.isolated(isolation)

    def channel_costs(self, model: Any, out_of_time: Callable[[], bool]) -> dict[str, dict]:
        """Each channel group's cost curve on validation (`structured.group_costs`), by group."""
        from ..techniques.structured import group_costs

        return group_costs(model, self.dataset, self.info, out_of_time=out_of_time)

    def fine_tune_config(self, epochs: int):
        return replace(self.config.prune, epochs=epochs, patience=max(2, epochs // 3))

    # ------------------------------------------------------------------ artifacts that need the Keras model
    def float_tflite(self, source: Source) -> bool:
        """The source's float .tflite, which every plan quantizes; False when it cannot be converted (recorded)."""
        from ..export.tflite import export_tflite

        if source.float_tflite is not None:
            return True
        started = time.perf_counter()
        source.float_tflite = self.maker.scratch / f"{source.name}-float.tflite"
        try:
            export_tflite(source.model, source.float_tflite)
        except Exception as error:
            self.trace.failed(f"{source.name}-tflite", "artifact", source.name, {}, error, started)
            source.float_tflite = None
            return False
        return True

    def converter_if_needed(self, source: Source) -> None:
        w8 = self.trace.artifacts.get(f"{source.name}-w8")
        if w8 is not None and w8.candidate.size_bytes > FLOAT_LEFT * source.float_tflite.stat().st_size:
            self.converter_dynamic(source)

    def converter_dynamic(self, source: Source) -> None:
        """When the LiteRT quantizer's int8-weight plan leaves most of the file float (it quantizes no GATHER in
        dynamic mode, and Keras embeddings convert to GATHER), the converter's dynamic-range quantization does."""
        from ..quantize.tflite_converter import quantize_tflite
        from ..runtime.delegation import xnnpack_summary

        name = f"{source.name}-w8c"
        settings = {
            "weights": "int8",
            "activations": "float",
            "why": "the LiteRT int8-weight plan left it mostly float",
        }
        started = time.perf_counter()
        path = self.maker.scratch / f"{name}.tflite"
        try:
            quantize_tflite(source.model, path, quantization=Quant.DYNAMIC)
        except KeyboardInterrupt:
            raise
        except Exception as error:
            self.trace.failed(name, "artifact", source.name, settings, error, started)
            return
        step = {"mode": "dynamic", "format": "tflite", "backend": "converter", "xnnpack": xnnpack_summary(path)}
        steps = (*source.steps, Step("quantize", step))
        self.maker.measure(name, source, path, Format.TFLITE, "dynamic", steps, settings, started,
                           backend="converter")  # fmt: skip

    def qat(self, best: Source, *, reason: str, epochs: int) -> None:
        """Train `best` with QAT (keeping its sparsity or clusters) and convert it to a full-integer .tflite."""
        log.info("search: QAT fallback for %s (%s)", best.name, reason)
        started = time.perf_counter()
        name = f"{best.name}-qat"
        try:
            from ..techniques.qat import qat_int8

            preserve = "clusters" if best.clusters else ("sparsity" if best.sparsity > 0.05 else "none")
            path = self.maker.scratch / f"{name}.tflite"
            trained, isolation = self.isolation.run(
                f"{name} fine-tune",
                qat_int8,
                best.model,
                self.dataset,
                path,
                info=self.info,
                preserve=preserve,
                config=self.fine_tune_config(epochs),
                seed=self.config.seed,
                calibration=self.maker.calibration,
                deadline=self.stop_at(),
            )
        except Exception as error:
            self.trace.failed(name, "artifact", best.name, {"qat": True, "why": reason}, error, started)
            return
        self.costs.learn_fine_tune("qat", time.perf_counter() - started, trained.qat_params.get("epochs") or 0)
        steps = (
            *best.steps,
            Step("qat", {**trained.qat_params, "why": reason, **isolation}),
            Step.of_file(Format.TFLITE, "converter", "int8", trained.file_params),
        )
        settings = {"qat": True, "preserve": preserve, "activations": "int8", "weights": "int8", "why": reason}
        self.maker.measure(name, best, path, Format.TFLITE, "int8", steps, settings, started, backend="converter")

    def onnx_of(self, plan: Artifact) -> None:
        """A full-integer TFLite candidate's per-layer decisions in ONNX Runtime: the same model exported to ONNX
        and quantized static QDQ int8, its float layers mapped to `nodes_to_exclude`."""
        from ..export.onnx import export_onnx
        from ..quantize.onnxruntime import onnx_nodes_for_layers, quantize_onnx

        source, floats = plan.source, [k for k, v in plan.candidate.settings["layers"].items() if v == "float"]
        name = f"{plan.candidate.name}-onnx"
        settings = {"activations": "int8", "weights": "int8", "float_layers": floats, "from_plan": plan.candidate.name}
        started = time.perf_counter()
        scratch = self.maker.scratch
        float_onnx, path = scratch / f"{source.name}-float.onnx", scratch / f"{name}.onnx"
        try:
            export_onnx(source.model, float_onnx)
            exclude = onnx_nodes_for_layers(float_onnx, floats, keras_layers=list(source.layers)) if floats else []
            params = quantize_onnx(float_onnx, path, quantization=Quant.INT8, calibration=self.maker.calibration,
                                   config=self.config.onnx_quant, nodes_to_exclude=exclude)  # fmt: skip
        except KeyboardInterrupt:
            raise
        except Exception as error:
            self.trace.failed(name, "artifact", source.name, settings, error, started)
            return
        quantized = Step.of_file(Format.ONNX, "onnxruntime", "int8", params)
        steps = (*source.steps, Step.of_file(Format.ONNX, "tf2onnx"), quantized)
        self.maker.measure(name, source, path, Format.ONNX, "int8", steps, settings, started,
                           backend="onnxruntime")  # fmt: skip
