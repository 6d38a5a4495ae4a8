"""compress(): load -> prune -> export/quantize -> run -> measure -> report, one variant's failure isolated.

Each stage is its own module and callable on its own; this module only wires them and records, for every
variant, the steps that made it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import interrupt
from .config import CompressConfig, Format
from .cpu import fingerprint
from .edge.manifest import sha256_file
from .errors import one_line_reason
from .isolation import Isolation
from .load import keras_compat
from .load.classifier import ModelInfo, describe, model_input, own_labels
from .load.data import (
    Dataset,
    Labeller,
    check_fits,
    check_labels,
    check_shape,
    check_sizes,
    check_token_ids,
    check_tokens,
    fit_sequences,
    fitted_sequences,
    load_dataset,
)
from .measurer import failed_variant
from .progress import bar as progress_bar
from .recipes import recipes_for
from .report.outdir import (
    ARTIFACTS,
    LATENCY_INPUT,
    TEST_SAMPLE,
    TEST_SAMPLE_COUNT,
    check_out_dir,
    claim_out_dir,
    fresh_dir,
    shown_path,
)
from .report.recommend import recommendations, runtime_notes, with_compression
from .report.render import (
    REPORT_JSON,
    REPORT_MD,
    environment,
    speed_notes,
    write_report,
    write_visual_report,
)
from .runtime import open_runner
from .runtime.measure import (
    batch_of,
    primary_top1,
    weight_sparsity,
)
from .tasks import TaskPool
from .types import BASELINE_SOURCE, Report, Source, Variant, variant_name
from .variants import VariantMaker

log = logging.getLogger("effkit")

DEFAULT_OUT = Path("effkit-out")


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
    tasks: TaskPool | None = None,
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
            node nothing else runs on (`effkit.suites.ray`); accuracy, sizes and artifacts are the same.
        tasks: for `config.search`, where its candidates' artifacts are made (`effkit.tasks.TaskPool`, a
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
    recipes = recipes_for(config)
    inputs = _prepare(model, data, name=name, config=config, safe_mode=safe_mode)
    working, dataset, info, model_path = inputs.working, inputs.dataset, inputs.info, inputs.model_path
    names = info.output_names
    claim_out_dir(out_dir)  # inputs are valid: now the output folder may be created or cleared
    if model is None:
        model_path = keras_compat.save_model(working, out_dir / f"{name}.keras")
        log.info("saved the trained reference model to %s", model_path)
    # The samples every latency figure was timed on, so that a later check (effkit bench) times the same input.
    _save_latency_input(out_dir / LATENCY_INPUT, dataset.x_test, max(config.latency.batches))
    _save_test_sample(out_dir / TEST_SAMPLE, dataset, info.primary.name, names)

    baseline_outputs = open_runner(working, Format.KERAS, outputs=names).predict(dataset.x_test)
    test_labels = dataset.labels("test", names)
    run = VariantMaker(
        config=config,
        info=info,
        dataset=dataset,
        test_labels=test_labels,
        recipes=recipes,
        artifacts=out_dir / ARTIFACTS,
        calibration=calibration_samples(dataset, config),
        baseline_top1=primary_top1(info, baseline_outputs, test_labels),
        time_latency=time_latency,
        isolation=Isolation(enabled=config.prune.isolate),
    )
    log.info("baseline keras top-1 %.2f%%", run.baseline_top1 * 100)
    model_record = {
        **info.to_dict(),
        "path": shown_path(model_path, out_dir) if model_path else None,
        # read now: the path is as the user gave it, relative to where they ran compress, which a bundle made later
        # from elsewhere cannot find again
        "sha256": sha256_file(model_path) if model_path and Path(model_path).is_file() else None,
        "keras_generation": inputs.generation,
        "bridge_max_abs_diff": inputs.bridge_diff,
        "bridge_error": inputs.prune_blocker,
    }

    variants: list[Variant] = []
    complete = False
    search = None
    m_by_n = config.prune.m_by_n_pair

    def finished(variant: Variant) -> None:
        """Keep a measured variant, and write the report so far (`complete: false`): a crash that kills this
        process, which no `finally` survives, still leaves every variant finished before it on disk."""
        variants.append(variant)
        partial = _report(variants, config, model_record, dataset, run.baseline_top1, complete=False, search=search)
        write_report(partial, out_dir)

    try:
        with progress_bar(f"{name}: variants", planned_variants(config)) as advance:
            baseline = Source(BASELINE_SOURCE, working, (), weight_sparsity(working)[0], test_outputs=baseline_outputs)
            # One at a time, so that an interruption keeps every variant finished before it.
            grid_started = time.perf_counter()
            for variant in run.variants_of(baseline, keras_path=model_path):
                finished(variant)
                advance(1)
            per_variant = (time.perf_counter() - grid_started) / max(1, len(variants))
            for sparsity in () if config.search else config.sparsities:
                for variant in run.pruned_variants(working, sparsity, blocked=inputs.prune_blocker):
                    finished(variant)
                    advance(1)
            for share in () if config.search else config.channels:
                for variant in run.channel_variants(working, share):
                    finished(variant)
                    advance(1)
            if m_by_n is not None and not config.search:
                for variant in run.pruned_variants(working, None, blocked=inputs.prune_blocker, m_by_n=m_by_n):
                    finished(variant)
                    advance(1)
        if config.search is not None:
            search = _new_search(run, working, out_dir, name=name, prune_blocker=inputs.prune_blocker, tasks=tasks,
                                 started=started, per_variant=per_variant)  # fmt: skip
            _run_search(search, run, out_dir, finished)
        interrupt.check()
        complete = True
    finally:
        run.isolation.close()
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


@dataclass(frozen=True)
class Inputs:
    """The inputs of one compress run, checked against each other: the model variants are made from, the data in
    the model's own input form, and what the model is."""

    working: Any  # the model every variant is made from: the tf_keras rebuild, or the user's own (see prune_blocker)
    dataset: Dataset
    info: ModelInfo
    model_path: Path | None
    generation: str  # the model file's Keras generation
    bridge_diff: float | None  # the tf_keras rebuild's largest output difference from the user's Keras 3 model
    prune_blocker: str | None  # why tfmot cannot prune it (no faithful rebuild); None when it can


def _prepare(model, data, *, name: str, config: CompressConfig, safe_mode: bool) -> Inputs:
    """Load the model and the data and check them against each other (shapes, token ids, labels per head), before
    anything is written.

    Raises:
        EffkitError: one line saying what does not fit.
    """
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
    bridge_diff, prune_blocker = _verify_bridge(loaded, dataset)
    if prune_blocker is not None:
        working = loaded.original  # every variant that needs no pruning is made from the user's own model
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
    return Inputs(working, dataset, info, model_path, loaded.generation, bridge_diff, prune_blocker)


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
    label = _own_top1(loaded.original, name=name)
    dataset = _dataset(data, config, input_shape=tuple(loaded.model.inputs[0].shape[1:]), label=label)
    return loaded, loaded.path, dataset


def _dataset(data, config: CompressConfig, *, input_shape: tuple | None, label: Labeller | None = None) -> Dataset:
    if isinstance(data, Dataset):
        dataset = data
    else:
        dataset = load_dataset(data, seed=config.seed, input_shape=input_shape, label=label)
    check_sizes(dataset)
    return dataset


def _own_top1(model: Any, *, name: str) -> Labeller:
    """Labels for data that came without any: the user's own model's predictions (its top-1 class per head), on
    the inputs as every variant will see them. Every top-1 measured on such data is agreement with this model."""
    facts = model_input(model, name=name)

    def label(x: np.ndarray):
        if facts.sequence_length:
            x = fitted_sequences(x, facts.sequence_length)
        check_shape(x.shape[1:], facts.shape)
        if facts.vocabulary is not None:
            check_token_ids(x, facts.vocabulary, where="the data's")
        x = x.astype(facts.dtype)
        heads = describe(model, x[:32], name=name).heads
        outputs = open_runner(model, Format.KERAS, outputs=list(facts.output_names)).predict(x)
        log.info("%d samples without labels: labelled with %s's own top-1", len(x), name)
        return own_labels(heads, outputs)

    return label


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


def calibration_samples(dataset: Dataset, config: CompressConfig) -> np.ndarray:
    """Representative samples for int8, drawn from the training split with the run's seed."""
    rng = np.random.default_rng(config.seed)
    count = min(config.calibration_samples, len(dataset.x_train))
    return dataset.x_train[rng.choice(len(dataset.x_train), size=count, replace=False)]


def planned_variants(config: CompressConfig) -> int:
    """How many variants `compress` makes with `config` (a search's front is not counted): each source's Keras
    variant and its recipes, and a QAT variant of each pruned or clustered source."""
    if config.search:
        derived = 0
    else:
        derived = len(config.sparsities) * (1 + len(config.clusters)) + (config.prune.m_by_n_pair is not None)
    channels = 0 if config.search else len(config.channels)
    return (1 + derived + channels) * (1 + len(recipes_for(config))) + derived * config.qat


def _new_search(
    run: VariantMaker,
    model: Any,
    out_dir: Path,
    *,
    name: str,
    prune_blocker: str | None,
    tasks: TaskPool | None = None,
    started: float | None = None,
    per_variant: float = 0.0,
):
    """The accuracy-aware search for this run; its sensitivity cache is this output folder's or a sibling's. Its
    budget counts from `started` (the start of `compress`), and it keeps the time of a few variants measured like
    the grid's (`per_variant` seconds each) for measuring its picks on test."""
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
        tasks=tasks,
        isolation=run.isolation,
        started=started,
        confirm_seconds=per_variant,
    )


def _run_search(search, run: VariantMaker, out_dir: Path, finished: Callable[[Variant], None]) -> None:
    """Decide on validation, then measure the front on test until one is within budget.

    The trace lives on `search` as it grows, so an interruption still reports it; each variant measured on test
    is handed to `finished` as soon as it is measured.
    """
    from .search import copy_artifact

    test_outputs: dict[int, np.ndarray] = {}

    def model_outputs(artifact) -> np.ndarray:
        """The test outputs of the Keras model a candidate was made from, computed once per model."""
        key = id(artifact.source.model)
        if key not in test_outputs:
            test_outputs[key] = run.runner(artifact.source.model, Format.KERAS).predict(run.dataset.x_test)
        return test_outputs[key]

    def measure(artifact) -> Variant:
        """A front candidate as a report variant: its file in artifacts/, measured on test like every other."""
        name = f"search-{artifact.candidate.name}"
        path = copy_artifact(artifact.path, run.artifacts / f"{name}{artifact.path.suffix}")
        outputs = model_outputs(artifact)
        source = replace(artifact.source, name=name, steps=artifact.steps, test_outputs=outputs)
        variant = Variant(
            name=name,
            format=artifact.fmt,
            quantization=artifact.quantization,
            backend=artifact.backend,
            path=shown_path(path, out_dir),
            steps=artifact.steps,
        )
        try:
            runner = run.runner(path, artifact.fmt)
        except Exception as error:
            measured = failed_variant(variant, error)
        else:
            measured = run.measure_variant(variant, runner, path, source, load_ms=None)
        finished(measured)
        return measured

    def model_drop(artifact) -> float:
        """The test drop (pp) of the Keras model a front candidate was made from."""
        return (run.baseline_top1 - primary_top1(run.info, model_outputs(artifact), run.test_labels)) * 100

    try:
        search.run()
        chosen = search.confirm(measure, model_drop)
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


def _report(
    variants, config: CompressConfig, model_record, dataset: Dataset, baseline_top1, *, complete, search=None
) -> Report:
    variants = with_compression(variants)
    recommended, by_target = recommendations(
        variants,
        max_accuracy_drop=config.max_accuracy_drop,
        search_pick=search.chosen_variant() if search else None,
        limits=config.limits,
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
