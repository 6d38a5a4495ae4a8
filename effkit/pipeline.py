"""compress(): load -> prune -> export/quantize -> run -> measure -> report, one variant's failure isolated.

Each stage is its own module and callable on its own; this module only wires them and records, for every
variant, the steps that made it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import interrupt, keras_compat
from .classifier import Head, ModelInfo, describe, model_input
from .config import Backend, CompressConfig, Format, Quant
from .cpu import fingerprint
from .data import Dataset, check_fits, check_labels, check_sizes, check_tokens, fit_sequences, load_dataset
from .edge.manifest import sha256_file
from .errors import ModelError, one_line_reason
from .measure import (
    batch_of,
    file_sizes,
    mae,
    parity,
    parity_problems,
    primary_correct,
    primary_top1,
    time_latency,
    top1,
    weight_sparsity,
)
from .outdir import (
    ARTIFACTS,
    LATENCY_INPUT,
    TEST_SAMPLE,
    TEST_SAMPLE_COUNT,
    check_out_dir,
    claim_out_dir,
    fresh_dir,
    shown_path,
)
from .progress import bar as progress_bar
from .recipes import Recipe, RecipeInputs, plan
from .report import (
    REPORT_JSON,
    REPORT_MD,
    environment,
    recommend,
    speed_notes,
    write_report,
    write_visual_report,
)
from .runtime import Runner, open_runner
from .runtime.probe import peak_memory
from .stats import pack_correct
from .targets import MOBILE, recommend_by_target, refusal
from .types import BASELINE_SOURCE, REFERENCE_VARIANT, Latency, Report, Status, Step, Variant, variant_name

log = logging.getLogger("effkit")

DEFAULT_OUT = Path("effkit-out")


@dataclass(frozen=True)
class SourceModel:
    """A Keras model variants are made from: the baseline, or a pruned copy of it."""

    name: str
    model: Any
    steps: tuple[Step, ...]
    sparsity: float  # measured share of zeros in its prunable kernels
    outputs: np.ndarray  # its Keras outputs on the test split: what its artifacts must reproduce
    m_by_n: tuple[int, int] | None = None  # pruned to m-of-n structured sparsity in `m_by_n_layers`
    m_by_n_layers: tuple[str, ...] = ()


def compress(
    model: Any = None,
    data: str | Path | Dataset = "digits",
    *,
    config: CompressConfig | None = None,
    out_dir: str | Path | None = None,
    name: str | None = None,
    safe_mode: bool = True,
    overwrite: bool = False,
    time_latency: bool = True,
    executor: Any = None,
) -> Report:
    """Prune, quantize and export a Keras classifier, and measure every variant on the same test split.

    Args:
        model: a path (.keras from Keras 3 or tf_keras, .h5, SavedModel folder), a Keras model object, or None to
            train the reference `digits_cnn` from models/ on `data`.
        data: `digits`, an `.npz` path, or a Dataset.
        config: what to make and how to measure it; defaults to `CompressConfig()`.
        out_dir: where artifacts, report.json and report.md go; default `effkit-out/<model name>` (a new numbered
            folder when that one already holds results).
        name: the model's name in the report; default the file's stem.
        safe_mode: refuse model files whose loading would run stored code (Lambda layers).
        overwrite: replace the results of an earlier run in `out_dir` (only the files its report names).
        time_latency: False leaves every variant's latency empty, for a timing task of its own to fill in on a
            node nothing else runs on (`effkit.ray_executor`); accuracy, sizes and artifacts are the same.
        executor: for `config.search`, where its candidates' artifacts are made (`effkit.executor.Executor`, a
            `RayExecutor` for `--ray`): None makes them here, one after another; the decisions are the same.

    Returns:
        The Report, also written to `out_dir`. If the run is interrupted, the report written so far is marked
        `complete: false` and the interruption propagates.

    Raises:
        EffkitError: bad model, data, config or output folder; nothing is written.
    """
    config = config or CompressConfig()
    config.validate()
    started = time.perf_counter()
    name = name or _model_name(model)
    out_dir = Path(out_dir) if out_dir is not None else fresh_dir(DEFAULT_OUT / name)
    check_out_dir(out_dir, overwrite=overwrite)
    recipes = plan(config)
    loaded, model_path, dataset = _load(model, data, name=name, config=config, safe_mode=safe_mode)
    working = loaded.model
    facts = model_input(working, name=name)
    if facts.sequence_length:
        dataset = fit_sequences(dataset, facts.sequence_length)
    check_fits(dataset, input_shape=facts.shape)  # before the model first runs on it
    if facts.vocabulary is not None:
        check_tokens(dataset, facts.vocabulary)
    x_sample = dataset.x_train[:32].astype(facts.dtype)
    info = describe(working, x_sample, name=name, labels=dataset.labels("train", list(facts.output_names)))
    check_labels(dataset, info.heads)
    dataset = dataset.astype(info.input_dtype)
    names = info.output_names
    bridge_diff, prune_blocker = _verify_bridge(loaded, dataset)
    if prune_blocker is not None:
        working = loaded.original  # every variant that needs no pruning is made from the user's own model
    claim_out_dir(out_dir)  # inputs are valid: now the output folder may be created or cleared
    if model is None:
        model_path = keras_compat.save_model(working, out_dir / f"{name}.keras")
        log.info("saved the trained reference model to %s", model_path)
    # The samples every latency figure was timed on, so that a later check (effkit bench) times the same input.
    _save_latency_input(out_dir / LATENCY_INPUT, dataset.x_test, max(config.latency.batches))
    _save_test_sample(out_dir / TEST_SAMPLE, dataset, info.primary.name, names)
    log.info(
        "model %s: %s parameters, input %s %s, outputs %s; data %s: %d train / %d val / %d test",
        name,
        f"{info.params:,}",
        info.input_shape,
        info.input_dtype,
        ", ".join(f"{head.name} ({head.kind}, {head.units})" for head in info.heads),
        dataset.name,
        len(dataset.x_train),
        len(dataset.x_val),
        len(dataset.x_test),
    )

    baseline_outputs = open_runner(working, Format.KERAS, outputs=names).predict(dataset.x_test)
    test_labels = dataset.labels("test", names)
    run = VariantMaker(
        config=config,
        info=info,
        dataset=dataset,
        test_labels=test_labels,
        recipes=recipes,
        artifacts=out_dir / ARTIFACTS,
        calibration=_calibration(dataset, config),
        baseline_top1=primary_top1(info, baseline_outputs, test_labels),
        time_latency=time_latency,
    )
    log.info("baseline keras top-1 %.2f%%", run.baseline_top1 * 100)
    model_record = {
        **info.to_dict(),
        "path": shown_path(model_path, out_dir) if model_path else None,
        # read now: the path is as the user gave it, relative to where they ran compress, which a bundle made later
        # from elsewhere cannot find again
        "sha256": sha256_file(model_path) if model_path and Path(model_path).is_file() else None,
        "keras_generation": loaded.generation,
        "bridge_max_abs_diff": bridge_diff,
        "bridge_error": prune_blocker,
    }

    variants: list[Variant] = []
    complete = False
    search = None
    m_by_n = config.prune.m_by_n_pair
    try:
        with progress_bar(f"{name}: variants", planned_variants(config)) as advance:
            baseline = SourceModel(BASELINE_SOURCE, working, (), weight_sparsity(working)[0], baseline_outputs)
            # One at a time, so that an interruption keeps every variant finished before it.
            for variant in run.variants_of(baseline, keras_path=model_path):
                variants.append(variant)
                advance(1)
            for sparsity in () if config.search else config.sparsities:
                for variant in run.pruned_variants(working, sparsity, blocked=prune_blocker):
                    variants.append(variant)
                    advance(1)
            if m_by_n is not None and not config.search:
                for variant in run.pruned_variants(working, None, blocked=prune_blocker, m_by_n=m_by_n):
                    variants.append(variant)
                    advance(1)
        if config.search is not None:
            search = _new_search(run, working, out_dir, name=name, prune_blocker=prune_blocker, executor=executor)
            _run_search(search, run, out_dir, variants)
        interrupt.check()
        complete = True
    finally:
        # Also on Ctrl-C or an internal error: what was measured is written, marked incomplete.
        report = _report(variants, config, model_record, dataset, run.baseline_top1, complete=complete, search=search)
        write_report(report, out_dir)
    try:
        write_visual_report(report, out_dir)
    except Exception as error:  # plots are a convenience: their failure must not cost the measured report
        log.warning("could not draw the plots: %s", one_line_reason(error))
    log.info("wrote %s and %s in %.1fs", out_dir / REPORT_JSON, out_dir / REPORT_MD, time.perf_counter() - started)
    return report


def _model_name(model: Any) -> str:
    if model is None:
        from .models import DEFAULT

        return DEFAULT
    if isinstance(model, (str, Path)):
        path = Path(model)
        return path.stem if path.suffix else path.name
    return getattr(model, "name", None) or "model"


def _load(model, data, *, name: str, config: CompressConfig, safe_mode: bool):
    """The model (trained in memory when None) and the data, loaded for each other: the model's input shape tells
    how to size images and embedded digits. Nothing is written here."""
    if model is None:
        from . import models as reference_models

        dataset = _dataset(data, config, input_shape=None)
        trained = reference_models.train_reference(name, dataset, generation=keras_compat.KERAS_2, seed=config.seed)
        loaded = keras_compat.LoadedModel(original=trained, model=trained, generation=keras_compat.KERAS_2, path=None)
        return loaded, None, dataset
    if isinstance(model, (str, Path)):
        loaded = keras_compat.load_model(model, safe_mode=safe_mode)
    else:
        loaded = keras_compat.adopt(model)
    dataset = _dataset(data, config, input_shape=tuple(loaded.model.inputs[0].shape[1:]))
    return loaded, loaded.path, dataset


def _dataset(data, config: CompressConfig, *, input_shape: tuple | None) -> Dataset:
    dataset = data if isinstance(data, Dataset) else load_dataset(data, seed=config.seed, input_shape=input_shape)
    check_sizes(dataset)
    return dataset


def _verify_bridge(loaded: keras_compat.LoadedModel, dataset: Dataset) -> tuple[float | None, str | None]:
    """A Keras 3 model rebuilt in tf_keras must give the same outputs on the test split.

    Returns the largest output difference (None without a rebuild) and, when there is no faithful rebuild, why
    tfmot cannot prune the model: it is then pruned in Keras 3, and its variants are made from the Keras 3 model.
    """
    if loaded.bridge_error is not None:
        log.warning("no tf_keras rebuild of the Keras 3 model, so it is pruned in Keras 3: %s", loaded.bridge_error)
        return None, loaded.bridge_error
    if not loaded.bridged:
        return None, None
    diff = keras_compat.max_output_diff(loaded.original, loaded.model, dataset.x_test)
    if not diff <= keras_compat.BRIDGE_TOLERANCE:
        reason = (
            f"the tf_keras rebuild of the Keras 3 model differs from it by {diff:.3g} on the test split "
            f"(allowed {keras_compat.BRIDGE_TOLERANCE:g})"
        )
        log.warning("%s; it is pruned in Keras 3 instead of by tfmot", reason)
        return diff, reason
    log.info("bridged the Keras 3 model to tf_keras for pruning: max output difference %.3g", diff)
    return diff, None


def _calibration(dataset: Dataset, config: CompressConfig) -> np.ndarray:
    """Representative samples for int8, drawn from the training split with the run's seed."""
    rng = np.random.default_rng(config.seed)
    count = min(config.calibration_samples, len(dataset.x_train))
    return dataset.x_train[rng.choice(len(dataset.x_train), size=count, replace=False)]


@dataclass(frozen=True)
class VariantMaker:
    """What every variant of one compress run is made and measured with."""

    config: CompressConfig
    info: ModelInfo
    dataset: Dataset
    test_labels: dict[str, np.ndarray]
    recipes: list[Recipe]
    artifacts: Path
    calibration: np.ndarray
    baseline_top1: float
    time_latency: bool = True  # False: latency is left to a separate timing task (`compress(time_latency=False)`)

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
        from .prune import prune
        from .prune_native import prune_keras3

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
            result = pruner(
                model, self.dataset, info=self.info, config=self.config.prune, seed=self.config.seed, **target
            )
            outputs = self._runner(result.model, Format.KERAS).predict(self.dataset.x_test)
        except Exception as error:
            reason = one_line_reason(error)
            log.warning("%s: pruning failed: %s", source_name, reason)
            for name in [source_name, *(clustered_source_name(source_name, k) for k in self.config.clusters)]:
                yield from self.failed_source(name, reason)
            return
        steps = (Step("prune", result.step_params()),)
        structured = {"m_by_n": m_by_n, "m_by_n_layers": result.pruned_layers} if m_by_n else {}
        pruned = SourceModel(source_name, result.model, steps, result.sparsity, outputs, **structured)
        yield from self.variants_of(pruned)
        if self.config.qat:
            yield self.qat_variant(pruned, preserve="sparsity", blocked=blocked)
        for clusters in self.config.clusters:
            yield from self.clustered_variants(pruned, clusters, blocked=blocked)

    def clustered_variants(self, pruned: SourceModel, clusters: int, *, blocked: str | None) -> Iterator[Variant]:
        """Cluster a pruned source to `clusters` values per kernel and make its variants (and its QAT variant)."""
        from .cluster import cluster

        source_name = clustered_source_name(pruned.name, clusters)
        try:
            if blocked is not None:
                raise ModelError(f"tfmot cannot cluster a model it cannot prune: {blocked}")
            result = cluster(
                pruned.model,
                self.dataset,
                info=self.info,
                clusters=clusters,
                config=self.config.prune,
                seed=self.config.seed,
            )
            outputs = self._runner(result.model, Format.KERAS).predict(self.dataset.x_test)
        except Exception as error:
            reason = one_line_reason(error)
            log.warning("%s: clustering failed: %s", source_name, reason)
            yield from self.failed_source(source_name, reason)
            return
        steps = (*pruned.steps, Step("cluster", result.step_params()))
        source = SourceModel(source_name, result.model, steps, result.sparsity, outputs)
        yield from self.variants_of(source)
        if self.config.qat:
            yield self.qat_variant(source, preserve="clusters", blocked=blocked)

    def qat_variant(self, source: SourceModel, *, preserve: str, blocked: str | None = None) -> Variant:
        """Quantization-aware training of a source that keeps its zeros (or clusters), converted to int8 TFLite and
        measured like any artifact; parity is judged against the QAT Keras model, which the file must reproduce."""
        from .qat import convert_qat, quantization_aware

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
            result = quantization_aware(
                source.model,
                self.dataset,
                info=self.info,
                preserve=preserve,
                config=self.config.prune,
                seed=self.config.seed,
            )
            params = convert_qat(result, path, calibration=self.calibration)
            own = {"mode": str(Quant.INT8), "format": str(Format.TFLITE), "backend": str(Backend.CONVERTER)}
            steps = (*source.steps, Step("qat", result.step_params()), Step("quantize", {**own, **params}))
            variant = replace(variant, steps=steps)
            outputs = self._runner(result.model, Format.KERAS).predict(self.dataset.x_test)
            started = time.perf_counter()
            runner = self._runner(path, Format.TFLITE)
            load_ms = (time.perf_counter() - started) * 1e3
        except Exception as error:
            return _failed(variant, error)
        trained = SourceModel(f"{source.name}-qat", result.model, steps, weight_sparsity(result.model)[0], outputs)
        return self.measure_variant(variant, runner, path, trained, load_ms=load_ms)

    def failed_source(self, source_name: str, reason: str) -> Iterator[Variant]:
        """Every variant a source would have had (its Keras model, each recipe, and its QAT variant), failed."""
        planned = [(variant_name(source_name, Format.KERAS), Format.KERAS, Quant.NONE, Backend.KERAS)]
        planned += [(r.variant_name(source_name), r.format, r.quantization, r.backend) for r in self.recipes]
        if self.config.qat:
            planned.append((qat_variant_name(source_name), Format.TFLITE, Quant.INT8, Backend.CONVERTER))
        for n, f, q, b in planned:
            yield Variant(name=n, format=f, quantization=q, backend=b, status=Status.FAILED, error=reason)

    def variants_of(self, source: SourceModel, *, keras_path: Path | None = None) -> Iterator[Variant]:
        """The source's Keras variant, then one per recipe, float32 first in each format."""
        with tempfile.TemporaryDirectory(prefix="effkit-") as scratch:
            inputs = RecipeInputs(
                source.model,
                self.calibration,
                self.config,
                workdir=Path(scratch),
                sparse_float=source.m_by_n is not None,
            )
            yield self.keras_variant(source, keras_path)
            for recipe in self.recipes:
                yield self.artifact_variant(source, recipe, inputs)

    def keras_variant(self, source: SourceModel, path: Path | None) -> Variant:
        """The source model itself, run by Keras; a model without a file (a pruned one) is saved as a deliverable."""
        name = variant_name(source.name, Format.KERAS)
        variant = Variant(
            name=name, format=Format.KERAS, quantization=Quant.NONE, backend=Backend.KERAS, steps=source.steps
        )
        try:
            if path is None:
                path = keras_compat.save_model(source.model, self.artifacts / f"{name}.keras")
            variant = replace(variant, path=shown_path(path, self.artifacts.parent))
            runner = self._runner(source.model, Format.KERAS)
        except Exception as error:
            return _failed(variant, error)
        return self.measure_variant(variant, runner, Path(path), source, load_ms=None)

    def artifact_variant(self, source: SourceModel, recipe: Recipe, inputs: RecipeInputs) -> Variant:
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
            if source.m_by_n is not None and recipe.format == Format.TFLITE:
                from .export.tflite import m_by_n_check

                m, n = source.m_by_n
                check = m_by_n_check(path, m=m, n=n, layers=source.m_by_n_layers)
                if not check["pattern_held"]:
                    log.warning("%s: the %d:%d pattern does not hold in the artifact: %s", variant.name, m, n, check)
                steps += (Step("check", check),)
            variant = replace(variant, steps=steps)
            started = time.perf_counter()
            runner = self._runner(path, recipe.format)
            load_ms = (time.perf_counter() - started) * 1e3
        except Exception as error:
            return _failed(variant, error)
        return self.measure_variant(variant, runner, path, source, load_ms=load_ms)

    def measure_variant(
        self, variant: Variant, runner: Runner, path: Path, source: SourceModel, *, load_ms: float | None
    ) -> Variant:
        """Accuracy and parity on the whole test split (every head), sizes, latency under the one protocol at every
        batch size and thread count, and (when asked) the runtime's peak memory in a process of its own."""
        interrupt.check()
        x_test = self.dataset.x_test
        try:
            outputs = runner.predict(x_test)
            accuracy = primary_top1(self.info, outputs, self.test_labels)
            heads = {
                head.name: _head_figures(head, output, reference, self.test_labels[head.name])
                for head, output, reference in zip(self.info.heads, outputs, source.outputs, strict=True)
            }
            size_bytes, gzip_bytes = file_sizes(path)
            grid = self._latency_grid(runner, path, Format(variant.format)) if self.time_latency else []
            latency = grid[0] if grid else None
            memory = None
            if self.config.latency.memory and variant.format != Format.KERAS:
                memory = peak_memory(
                    path,
                    Format(variant.format),
                    batch=self.config.latency.batches[0],
                    threads=self.config.latency.threads[0],
                )
            variant = replace(
                variant,
                sparsity=round(source.sparsity, 4),
                size_bytes=size_bytes,
                gzip_bytes=gzip_bytes,
                top1=accuracy,
                correct=pack_correct(primary_correct(self.info, outputs, self.test_labels)),
                top1_delta_pp=round((accuracy - self.baseline_top1) * 100, 4),
                latency_ms=latency,
                latency_grid=tuple(grid) if len(grid) > 1 else None,
                load_ms=None if load_ms is None else round(load_ms, 3),
                memory_mb=memory,
                parity=heads[self.info.primary.name]["parity"],
                heads=(
                    {name: {**f, "parity": f["parity"].to_dict()} for name, f in heads.items()}
                    if len(heads) > 1
                    else None
                ),
            )
        except Exception as error:
            return _failed(variant, error)
        if variant.format == Format.TFLITE:
            variant = replace(variant, micro=self.micro_record(variant, path))
        problems = parity_problems(
            self.info.heads,
            {name: figures["parity"] for name, figures in heads.items()},
            source.outputs,
            quantization=variant.quantization,
            config=self.config.parity,
        )
        if problems:
            problems += [step.params["note"] for step in variant.steps if step.params.get("clipped_biases")]
            log.warning("%-30s MISMATCH: %s", variant.name, "; ".join(problems))
            return replace(variant, status=Status.MISMATCH, error="; ".join(problems))
        log.info(
            "%-30s ok  top-1 %.2f%%  %7.1f KiB  gzip %7.1f KiB  p50 %s",
            variant.name,
            accuracy * 100,
            size_bytes / 1024,
            gzip_bytes / 1024,
            f"{latency.p50:.4f} ms" if latency else "(timed apart)",
        )
        return variant

    def micro_record(self, variant: Variant, path: Path) -> dict[str, Any]:
        """Whether TFLite Micro runs the file, its resolver entries and measured arena (`micro.check`), and for a
        clustered full-integer file its LUT-compressed copy beside it. Information only: it never fails a variant."""
        from . import micro

        try:
            record = micro.check(path).to_dict()
            if record["runs"] and record["full_integer"] and any(step.stage == "cluster" for step in variant.steps):
                lut = micro.lut_compress(path, path.with_name(f"{path.stem}-lut{path.suffix}"))
                if lut is not None:
                    record["lut"] = {**lut, "path": shown_path(Path(lut["path"]), self.artifacts.parent)}
        except Exception as error:
            reason = f"the TFLite Micro check failed: {one_line_reason(error)}"
            log.warning("%-30s %s", variant.name, reason)
            return {"runs": False, "reason": reason, "full_integer": False, "ops": [], "arena_bytes": None}
        log.debug("%s: TFLite Micro %s", variant.name, record)
        return record

    def _latency_grid(self, runner: Runner, path: Path, fmt: Format) -> list[Latency]:
        """One latency per (thread count, batch size); the first is the runner's own (first thread count)."""
        return latency_grid(
            runner, lambda threads: self._runner(path, fmt, threads=threads), self.dataset.x_test, self.config, fmt
        )

    def _runner(self, artifact: Any, fmt: Format, *, threads: int | None = None) -> Runner:
        latency = self.config.latency
        names = [head.name for head in self.info.heads]
        return open_runner(
            artifact,
            fmt,
            threads=threads or latency.threads[0],
            ort_optimization=latency.ort_optimization,
            outputs=names,
        )


def latency_grid(
    runner: Runner, reopen: Callable[[int], Runner], x: np.ndarray, config: CompressConfig, fmt: Format
) -> list[Latency]:
    """One latency per (thread count, batch size) of `config.latency`, timed on `batch_of(x, batch)`; the first is
    `runner`'s own (the first thread count), `reopen(threads)` opens the artifact at another thread count."""
    latency = config.latency
    # Keras runs on TensorFlow's own thread pool, fixed for the process: one thread count to report.
    thread_counts = latency.threads if fmt != Format.KERAS else latency.threads[:1]
    grid = []
    for threads in thread_counts:
        timed = runner if threads == latency.threads[0] else reopen(threads)
        for batch in latency.batches:
            grid.append(
                time_latency(
                    timed.bind(batch_of(x, batch)),
                    config=latency,
                    batch=batch,
                    threads=timed.threads,
                    runtime=timed.runtime,
                )
            )
    return grid


def planned_variants(config: CompressConfig) -> int:
    """How many variants `compress` makes with `config` (a search's front is not counted): each source's Keras
    variant and its recipes, and a QAT variant of each pruned or clustered source."""
    if config.search:
        derived = 0
    else:
        derived = len(config.sparsities) * (1 + len(config.clusters)) + (config.prune.m_by_n_pair is not None)
    return (1 + derived) * (1 + len(plan(config))) + derived * config.qat


def _new_search(
    run: VariantMaker, model: Any, out_dir: Path, *, name: str, prune_blocker: str | None, executor: Any = None
):
    """The accuracy-aware search for this run; its sensitivity cache is this output folder's or a sibling's."""
    from .search import Search

    siblings = sorted(p for p in out_dir.parent.glob(f"{name}*") if p.is_dir() and p != out_dir)
    return Search(
        model,
        run.dataset,
        info=run.info,
        config=run.config,
        calibration=run.calibration,
        cache_dirs=(out_dir, *siblings),
        prune_blocker=prune_blocker,
        executor=executor,
    )


def _run_search(search, run: VariantMaker, out_dir: Path, variants: list[Variant]) -> None:
    """Decide on validation, then measure the front on test until one is within budget.

    The trace lives on `search` as it grows, so an interruption still reports it; each variant measured on test
    is appended to `variants` as soon as it is measured.
    """
    from .search import copy_artifact

    test_outputs: dict[int, np.ndarray] = {}

    def measure(artifact) -> Variant:
        """A front candidate as a report variant: its file in artifacts/, measured on test like every other."""
        name = f"search-{artifact.candidate.name}"
        path = copy_artifact(artifact.path, run.artifacts / f"{name}{artifact.path.suffix}")
        key = id(artifact.source.model)
        if key not in test_outputs:
            test_outputs[key] = run._runner(artifact.source.model, Format.KERAS).predict(run.dataset.x_test)
        source = SourceModel(name, artifact.source.model, artifact.steps, artifact.source.sparsity, test_outputs[key])
        variant = Variant(
            name=name,
            format=artifact.fmt,
            quantization=artifact.quantization,
            backend=artifact.backend,
            path=shown_path(path, out_dir),
            steps=artifact.steps,
        )
        try:
            runner = run._runner(path, artifact.fmt)
        except Exception as error:
            measured = _failed(variant, error)
        else:
            measured = run.measure_variant(variant, runner, path, source, load_ms=None)
        variants.append(measured)
        return measured

    try:
        search.run()
        chosen = search.confirm(measure)
        if chosen is None:
            log.warning("search: no candidate is within %.2f pp on the test split", run.config.max_accuracy_drop)
            search.notes.append("search: no candidate is within the budget on the test split")
        else:
            log.info(
                "search: recommends %s (search %s after %.0fs)", chosen.name, search.stopped, search.deadline.elapsed
            )
        search.confirm_integer(measure)
    finally:
        search.close()


def pruned_source_name(sparsity: float) -> str:
    """`pruned80`: the source a sparsity makes."""
    return f"pruned{round(sparsity * 100):d}"


def clustered_source_name(pruned: str, clusters: int) -> str:
    """`pruned80-c16`: a pruned source clustered to 16 values per kernel."""
    return f"{pruned}-c{clusters}"


def qat_variant_name(source: str) -> str:
    """`pruned80-qat-tflite-int8`: the int8 TFLite file of a source's quantization-aware training."""
    return variant_name(f"{source}-qat", Format.TFLITE, Quant.INT8)


def _save_latency_input(path: Path, x: np.ndarray, batch: int) -> None:
    from .files import atomic_output

    with atomic_output(path) as temporary, temporary.open("wb") as handle:
        np.save(handle, batch_of(x, batch), allow_pickle=False)


def _save_test_sample(
    path: Path, dataset: Dataset, primary: str, names: list[str], count: int = TEST_SAMPLE_COUNT
) -> None:
    """The first `count` test samples and their primary labels, in the order every figure used them."""
    from .files import atomic_output

    labels = dataset.labels("test", names)[primary][:count]
    with atomic_output(path) as temporary, temporary.open("wb") as handle:
        np.savez_compressed(handle, x=dataset.x_test[:count], y=labels)


def _head_figures(head: Head, outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """A head's metric (top-1 for a classification head, MAE for a regression head) and its parity."""
    metric = {"top1": top1(outputs, labels, head.kind)} if head.classifies else {"mae": mae(outputs, labels)}
    return {**metric, "parity": parity(reference, outputs, head.kind)}


def _failed(variant: Variant, error: BaseException) -> Variant:
    reason = one_line_reason(error)
    log.warning("%-30s FAILED: %s", variant.name, reason)
    log.debug("%s failed", variant.name, exc_info=error)
    return replace(variant, status=Status.FAILED, error=reason)


def _report(
    variants, config: CompressConfig, model_record, dataset: Dataset, baseline_top1, *, complete, search=None
) -> Report:
    variants = _with_compression(variants)
    recommended, by_target = recommendations(
        variants, max_accuracy_drop=config.max_accuracy_drop, search_pick=search.chosen_variant() if search else None
    )
    notes = list(speed_notes(variants, fingerprint()))
    if search is not None:
        notes = [*notes, *search.notes]
    notes += runtime_notes(variants, recommended)
    return Report(
        search=search.trace() if search is not None else None,
        sensitivity=search.sensitivity.to_dict() if search is not None and search.sensitivity else None,
        notes=tuple(notes),
        environment=environment(),
        config=config.to_dict(),
        model=model_record,
        data=dataset.summary(),
        baseline={"name": variant_name(BASELINE_SOURCE, Format.KERAS), "top1": baseline_top1},
        variants=tuple(variants),
        recommended=recommended,
        recommended_by_target=by_target,
        complete=complete,
    )


def recommendations(
    variants: list[Variant], *, max_accuracy_drop: float, search_pick: str | None = None
) -> tuple[str | None, dict[str, str | None]]:
    """The recommended variant and the best per target. A search's own pick (by its goal) overrides both the
    recommendation and, when a phone can run it, the mobile pick."""
    recommended = search_pick or recommend(variants, max_accuracy_drop=max_accuracy_drop)
    by_target = recommend_by_target(variants, max_accuracy_drop=max_accuracy_drop)
    chosen = next((v for v in variants if v.name == search_pick), None)
    if chosen is not None and refusal(chosen, MOBILE) is None:
        by_target[MOBILE] = search_pick
    return recommended, by_target


def runtime_notes(variants: list[Variant], recommended: str | None) -> list[str]:
    """Savings of the recommended artifact that its runtime does not realise (XNNPACK leaving int4 or sparse ops to
    builtin kernels), from what its steps recorded."""
    chosen = next((v for v in variants if v.name == recommended), None)
    if chosen is None:
        return []
    recorded = [note for step in chosen.steps for note in (step.params.get("xnnpack") or {}).get("notes", ())]
    return [f"{chosen.name}: {note}" for note in dict.fromkeys(recorded)]


def _with_compression(variants: list[Variant]) -> list[Variant]:
    """Raw and gzip ratios against the baseline float32 TFLite artifact, when it exists."""
    reference = next((v for v in variants if v.name == REFERENCE_VARIANT and v.status == Status.OK), None)
    if reference is None:
        return list(variants)
    return [
        replace(
            v,
            compression_raw=round(reference.size_bytes / v.size_bytes, 3),
            compression_gzip=round(reference.gzip_bytes / v.gzip_bytes, 3),
        )
        if v.size_bytes and v.gzip_bytes
        else v
        for v in variants
    ]
