"""The variants of one source model: each made by its recipe (export, quantize) from the Keras model, then measured
on the test split in the runtime a device uses (`VariantMaker.measure_variant`, the one measurer of an artifact on
test); pruned, clustered and QAT sources are made here by calling the techniques.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import Backend, Format, Quant
from .errors import ModelError, one_line_reason
from .export.tflite import pattern_check
from .isolation import Isolation
from .load import keras_compat
from .measurer import Measurer, failed_variant
from .recipes import Recipe, RecipeInputs
from .report.outdir import (
    shown_path,
)
from .runtime.measure import (
    weight_sparsity,
)
from .techniques.made import Made
from .types import Source, Status, Step, Variant, variant_name

log = logging.getLogger("effkit")


@dataclass(frozen=True, kw_only=True)
class VariantMaker(Measurer):
    """What every variant of one compress run is made with (its recipes, calibration samples, and where fine-tunes
    run); each is measured as every artifact is (`Measurer`)."""

    recipes: list[Recipe]
    calibration: np.ndarray
    isolation: Isolation = field(default_factory=lambda: Isolation(enabled=False))  # where fine-tunes run

    def pruned_variants(
        self,
        model: Any,
        sparsity: float | None,
        *,
        blocked: str | None = None,
        m_by_n: tuple[int, int] | None = None,
    ) -> Iterator[Variant]:
        """Prune `model` to `sparsity` (or to the m-of-n pattern `m_by_n` instead) and make its variants, then those
        of its clustered copies (`pruned80-c16`) and, with `config.qat`, a quantization-aware-trained int8 TFLite
        variant of each (`pruned80-qat`).

        A failed prune fails all of them, a failed clustering its own source's variants, a failed QAT its one
        variant; never the run. `blocked` says why tfmot cannot prune the model (no faithful tf_keras rebuild of a
        Keras 3 model): `model` is then the Keras 3 model, pruned in Keras 3 itself (to a sparsity; m-of-n pruning
        needs tfmot), and not clustered or QAT-trained.
        """
        from .techniques.prune import prune
        from .techniques.prune_native import prune_keras3

        source_name = f"pruned{m_by_n[0]}of{m_by_n[1]}" if m_by_n else pruned_source_name(sparsity)
        try:
            if m_by_n is not None:
                if blocked is not None:
                    raise ModelError(f"m-of-n pruning needs tfmot, which cannot prune this model: {blocked}")
                target = {"m_by_n": m_by_n}
            else:
                target = {"sparsity": sparsity}
            pruner = prune
            if blocked is not None:
                log.info("%s: pruning the Keras 3 model itself, as tfmot cannot: %s", source_name, blocked)
                pruner = prune_keras3
            result, outputs = self.fine_tuned(source_name, pruner, model, **target)
        except Exception as error:
            reason = one_line_reason(error)
            log.warning("%s: pruning failed: %s", source_name, reason)
            for name in [source_name, *(clustered_source_name(source_name, k) for k in self.config.clusters)]:
                yield from self.failed_source(name, reason)
            return
        pruned = Source(source_name, result.model, (result.step(),), result.sparsity, test_outputs=outputs)
        yield from self.variants_of(pruned)
        if self.config.qat:
            yield self.qat_variant(pruned, preserve="sparsity", blocked=blocked)
        for clusters in self.config.clusters:
            yield from self.clustered_variants(pruned, clusters, blocked=blocked)

    def channel_variants(self, model: Any, share: float) -> Iterator[Variant]:
        """Structured pruning: `share` of every channel group's channels removed (`techniques.structured`), the
        smaller model fine-tuned, and its variants. A model none of whose groups can shrink fails only these."""
        from .techniques.structured import prune_channels

        source_name = channels_source_name(share)
        try:
            result, outputs = self.fine_tuned(source_name, prune_channels, model, share=share)
        except Exception as error:
            reason = one_line_reason(error)
            log.warning("%s: structured pruning failed: %s", source_name, reason)
            no_qat = qat_variant_name(source_name)  # a channels source gets no QAT variant
            yield from (v for v in self.failed_source(source_name, reason) if v.name != no_qat)
            return
        sparsity = weight_sparsity(result.model)[0]
        source = Source(source_name, result.model, (result.step(),), sparsity, test_outputs=outputs)
        yield from self.variants_of(source)

    def clustered_variants(self, pruned: Source, clusters: int, *, blocked: str | None) -> Iterator[Variant]:
        """Cluster a pruned source to `clusters` values per kernel and make its variants (and its QAT variant)."""
        from .techniques.cluster import cluster

        source_name = clustered_source_name(pruned.name, clusters)
        try:
            if blocked is not None:
                raise ModelError(f"tfmot cannot cluster a model it cannot prune: {blocked}")
            result, outputs = self.fine_tuned(source_name, cluster, pruned.model, clusters=clusters)
        except Exception as error:
            reason = one_line_reason(error)
            log.warning("%s: clustering failed: %s", source_name, reason)
            yield from self.failed_source(source_name, reason)
            return
        steps = (*pruned.steps, result.step())
        source = Source(source_name, result.model, steps, result.sparsity, test_outputs=outputs)
        yield from self.variants_of(source)
        if self.config.qat:
            yield self.qat_variant(source, preserve="clusters", blocked=blocked)

    def fine_tuned(self, name: str, technique: Any, model: Any, **options: Any) -> tuple[Made, np.ndarray]:
        """A technique's model, made where fine-tunes run (`isolation`, which it records), and that model's outputs
        on the test split (what the new source's artifacts must reproduce)."""
        result, isolation = self.isolation.run(
            f"{name} fine-tune",
            technique,
            model,
            self.dataset,
            info=self.info,
            config=self.config.prune,
            seed=self.config.seed,
            **options,
        )
        return result.isolated(isolation), self.runner(result.model, Format.KERAS).predict(self.dataset.x_test)

    def qat_variant(self, source: Source, *, preserve: str, blocked: str | None = None) -> Variant:
        """Quantization-aware training of a source that keeps its zeros (or clusters), converted to int8 TFLite and
        measured like any artifact; parity is judged against the QAT Keras model, which the file must reproduce."""
        from .techniques.qat import qat_int8

        name = qat_variant_name(source.name)
        path = self.artifacts / f"{name}.tflite"
        variant = Variant(
            name=name,
            format=Format.TFLITE,
            quantization=Quant.INT8,
            backend=Backend.CONVERTER,
            path=shown_path(path, self.artifacts.parent),
            steps=source.steps,
        )
        try:
            if blocked is not None:
                raise ModelError(f"tfmot cannot train a model it cannot prune: {blocked}")
            trained, isolation = self.isolation.run(
                f"{name} fine-tune",
                qat_int8,
                source.model,
                self.dataset,
                path,
                info=self.info,
                preserve=preserve,
                config=self.config.prune,
                seed=self.config.seed,
                calibration=self.calibration,
                predict_on=self.dataset.x_test,
            )
            qat_step = Step("qat", {**trained.qat_params, **isolation})
            file_step = Step.of_file(Format.TFLITE, Backend.CONVERTER, Quant.INT8, trained.file_params)
            steps = (*source.steps, qat_step, file_step)
            variant = replace(variant, steps=steps)
            started = time.perf_counter()
            runner = self.runner(path, Format.TFLITE)
            load_ms = (time.perf_counter() - started) * 1e3
        except Exception as error:
            return failed_variant(variant, error)
        qat_model = Source(f"{source.name}-qat", None, steps, trained.sparsity, test_outputs=trained.outputs)
        return self.measure_variant(variant, runner, path, qat_model, load_ms=load_ms)

    def failed_source(self, source_name: str, reason: str) -> Iterator[Variant]:
        """Every variant a source would have had (its Keras model, each recipe, and its QAT variant), failed."""
        planned = [(variant_name(source_name, Format.KERAS), Format.KERAS, Quant.NONE, Backend.KERAS)]
        planned += [(r.variant_name(source_name), r.format, r.quantization, r.backend) for r in self.recipes]
        if self.config.qat:
            planned.append((qat_variant_name(source_name), Format.TFLITE, Quant.INT8, Backend.CONVERTER))
        for n, f, q, b in planned:
            yield Variant(name=n, format=f, quantization=q, backend=b, status=Status.FAILED, error=reason)

    def variants_of(self, source: Source, *, keras_path: Path | None = None) -> Iterator[Variant]:
        """The source's Keras variant, then one per recipe, float32 first in each format."""
        with tempfile.TemporaryDirectory(prefix="effkit-") as scratch:
            inputs = RecipeInputs(
                source.model,
                self.calibration,
                self.config,
                workdir=Path(scratch),
                sparse_float=source.pruned_to_pattern,
            )
            yield self.keras_variant(source, keras_path)
            for recipe in self.recipes:
                yield self.artifact_variant(source, recipe, inputs)

    def keras_variant(self, source: Source, path: Path | None) -> Variant:
        """The source model itself, run by Keras; a model without a file (a pruned one) is saved as a deliverable."""
        name = variant_name(source.name, Format.KERAS)
        variant = Variant(
            name=name, format=Format.KERAS, quantization=Quant.NONE, backend=Backend.KERAS, steps=source.steps
        )
        try:
            if path is None:
                path = keras_compat.save_model(source.model, self.artifacts / f"{name}.keras")
            variant = replace(variant, path=shown_path(path, self.artifacts.parent))
            runner = self.runner(source.model, Format.KERAS)
        except Exception as error:
            return failed_variant(variant, error)
        return self.measure_variant(variant, runner, Path(path), source, load_ms=None)

    def artifact_variant(self, source: Source, recipe: Recipe, inputs: RecipeInputs) -> Variant:
        path = self.artifacts / recipe.file_name(source.name)
        variant = Variant(
            name=recipe.variant_name(source.name),
            format=recipe.format,
            quantization=recipe.quantization,
            backend=recipe.backend,
            path=shown_path(path, self.artifacts.parent),
            steps=source.steps,
        )
        try:
            steps = (*source.steps, recipe.make(inputs, path))
            check = pattern_check(path, source.steps, name=variant.name) if recipe.format == Format.TFLITE else None
            if check is not None:
                steps += (check,)
            variant = replace(variant, steps=steps)
            started = time.perf_counter()
            runner = self.runner(path, recipe.format)
            load_ms = (time.perf_counter() - started) * 1e3
        except Exception as error:
            return failed_variant(variant, error)
        return self.measure_variant(variant, runner, path, source, load_ms=load_ms)


def pruned_source_name(sparsity: float) -> str:
    """`pruned80`: the source a sparsity makes."""
    return f"pruned{round(sparsity * 100):d}"


def channels_source_name(share: float) -> str:
    """`channels50`: the source structured pruning makes by removing half of each channel group."""
    return f"channels{round(share * 100):d}"


def clustered_source_name(pruned: str, clusters: int) -> str:
    """`pruned80-c16`: a pruned source clustered to 16 values per kernel."""
    return f"{pruned}-c{clusters}"


def qat_variant_name(source: str) -> str:
    """`pruned80-qat-tflite-int8`: the int8 TFLite file of a source's quantization-aware training."""
    return variant_name(f"{source}-qat", Format.TFLITE, Quant.INT8)
