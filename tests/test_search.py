"""The accuracy-aware search: sensitivity, non-uniform targets, decisions on validation only, budget, the report."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from effkit.config import CompressConfig, LatencyConfig, PruneConfig, SearchConfig
from effkit.load import keras_compat
from effkit.load.classifier import describe
from effkit.search import Decision, Search, layer_targets
from effkit.search.plans import FloatLadder
from effkit.search.sensitivity import LayerSensitivity, Sensitivity

QUICK = LatencyConfig(warmup_runs=1, warmup_seconds=0.0, min_runs=5, min_seconds=0.0)


def _table(drops: dict[str, float]) -> Sensitivity:
    rows = tuple(LayerSensitivity(layer=name, weights=100, prune_drop_pp=drop) for name, drop in drops.items())
    return Sensitivity(model_hash="x", val_top1=0.9, probe_sparsities=(0.9,), layers=rows, seconds=0.0)


def test_layer_targets_meet_the_level_and_spare_the_sensitive_layer():
    layers = [("big", 10_000), ("fragile", 1_000), ("head", 100)]
    table = _table({"big": 0.0, "fragile": 20.0, "head": 1.0})
    targets = layer_targets(0.8, table, layers, budget_pp=1.0)
    weights = np.array([count for _, count in layers])
    mean = float(np.sum(weights * np.array([targets[name] for name, _ in layers])) / weights.sum())
    assert mean == pytest.approx(0.8, abs=1e-3)
    assert targets["fragile"] < targets["head"] < targets["big"] <= 0.98
    assert targets["fragile"] < 0.2  # 20 pp alone when pruned hard: it is barely touched


def _walk(ladder, top1_of) -> list[tuple[tuple[str, ...], str]]:
    """Every rung the ladder proposes, judged by `top1_of(float set)`: (float ops, ranking), in order."""
    rungs = []
    while (rung := ladder.next()) is not None:
        _, ranked_by, plan = rung
        floats = tuple(layer for layer, _ in plan.layers)
        rungs.append((floats, ranked_by))
        ladder.record(floats, top1_of(floats))
    return rungs


def test_the_float_ladder_turns_to_measured_costs_when_the_error_ranking_misleads_and_never_grows_a_worse_rung():
    """The validator ranks `b` noisiest, but leaving it float loses top-1 (as when a float op between int8 ones adds
    a requantization); the sensitivity table measured `a` and `c` costing the most alone."""
    rows = tuple(
        LayerSensitivity(layer=name, weights=100, int8_drop_pp=drop)
        for name, drop in {"a": 0.45, "b": 0.05, "c": 0.3, "d": 0.1}.items()
    )
    table = Sensitivity(model_hash="x", val_top1=0.9, probe_sparsities=(0.9,), layers=rows, seconds=0.0)
    ranking = [("b", 9.0), ("a", 3.0), ("c", 2.0), ("d", 1.0)]
    gains = {"a": 0.03, "b": -0.02, "c": 0.02, "d": 0.0}

    def top1_of(floats):
        return 0.90 + sum(gains[layer] for layer in floats)

    ladder = FloatLadder(ranking, table, budget_pp=1.0, floats_needed=0, start_top1=0.90)
    rungs = _walk(ladder, top1_of)
    assert rungs == [
        (("b",), "snr"),
        (("a",), "measured"),
        (("a", "c"), "measured"),
        (("a", "c", "d", "b"), "measured"),
    ]
    assert ladder.best == ("a", "c") and ladder.best_top1 == pytest.approx(0.95)
    best = ()
    for floats, _ in rungs:  # each rung grows the best set found before it, never one that did worse
        assert set(best) <= set(floats)
        if top1_of(floats) > top1_of(best):
            best = floats


def test_the_float_ladder_follows_the_error_ranking_while_it_predicts_and_starts_where_the_last_source_ended():
    ranking = [("a", 3.0), ("b", 2.0), ("c", 1.0)]
    ladder = FloatLadder(ranking, None, budget_pp=1.0, floats_needed=2, start_top1=0.5)
    rungs = _walk(ladder, lambda floats: 0.5 + 0.1 * len(floats))
    assert rungs == [(("a", "b"), "snr")]  # 4 > the 3 ops there are: the ladder ends
    failing = FloatLadder(ranking, None, budget_pp=1.0, floats_needed=0, start_top1=0.5)
    assert _walk(failing, lambda floats: None) == [(("a",), "snr"), (("a", "b"), "snr")]


def test_layer_targets_are_uniform_without_a_table():
    assert layer_targets(0.7, None, [("a", 10), ("b", 5)], budget_pp=1.0) == {"a": 0.7, "b": 0.7}


def _bottleneck_model(keras, digits):
    """A small MLP whose 4-unit bottleneck carries everything: it must rank most sensitive."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Rescaling(1 / 16),
            keras.layers.Dense(128, activation="relu", name="wide"),
            keras.layers.Dense(4, activation="relu", name="bottleneck"),
            keras.layers.Dense(128, activation="relu", name="expand"),
            keras.layers.Dense(10, activation="softmax", name="head"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(digits.x_train, digits.y_train, epochs=40, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def bottleneck(digits):
    keras = keras_compat.tf_keras()
    model = _bottleneck_model(keras, digits)
    info = describe(model, digits.x_train[:16], name="bottleneck")
    return model, info


def test_a_fragile_bottleneck_ranks_most_sensitive(bottleneck, digits, tmp_path):
    from effkit.export.tflite import export_tflite
    from effkit.search.sensitivity import measure_sensitivity

    model, info = bottleneck
    path = export_tflite(model, tmp_path / "float.tflite")
    table = measure_sensitivity(
        model,
        digits,
        info=info,
        float_tflite=path,
        calibration=digits.x_train[:64],
        probe_sparsities=(0.5, 0.75, 0.9),
        digest="t",
    )
    ranked = [row.layer for row in table.ranked()]
    assert ranked[0] == "bottleneck", [(row.layer, row.prune_curve, row.int8_drop_pp) for row in table.ranked()]
    bottleneck_row = table.row("bottleneck")
    assert bottleneck_row.prune_curve["0.75"] > 10.0  # a real, large drop: not noise
    assert table.row("wide").prune_drop_pp < bottleneck_row.prune_drop_pp
    assert all(row.int8_drop_pp is not None for row in table.layers)  # every Dense op was quantized alone
    assert table.complete


def _search_config(**search) -> CompressConfig:
    settings = dict(levels=(0.5, 0.8), level_epochs=3, clusters=(16,), cluster_epochs=2, qat=False)
    settings.update(search)
    return CompressConfig(
        formats=("tflite",),
        quantizations=("none", "dynamic"),
        tflite_backends=("litert",),
        prune=PruneConfig(epochs=3, batch_size=64),
        latency=QUICK,
        calibration_samples=64,
        search=SearchConfig(**settings),
    )


def _decisions(search: Search) -> list[tuple[str, str]]:
    return [(c.name, c.decision) for c in search.candidates]


def test_decisions_never_read_the_test_split(tiny_model, digits):
    """Permuting the test labels (and scrambling the test inputs) changes nothing the search decides."""
    info = describe(tiny_model, digits.x_train[:16], name="tiny")
    # A wide budget keeps decisions away from the boundary, where a fine-tune's last-bit differences across thread
    # schedules could flip one; what is compared is whether the test split changes anything.
    config = replace(_search_config(levels=(0.6,), clusters=()), max_accuracy_drop=3.0)
    rng = np.random.default_rng(1)
    scrambled = replace(digits, y_test=rng.permutation(digits.y_test), x_test=rng.permutation(digits.x_test))
    runs = []
    for data in (digits, scrambled):
        keras_compat.tf_keras().utils.set_random_seed(0)
        search = Search(tiny_model, data, info=info, config=config, calibration=digits.x_train[:64])
        try:
            search.run()
        finally:
            search.close()
        runs.append(search)
        assert len(search.dataset.x_test) == 0  # what the search was given has no test split at all
    assert _decisions(runs[0]) == _decisions(runs[1])
    assert [c.name for c in runs[0].front()] == [c.name for c in runs[1].front()]


def test_a_short_budget_still_returns_the_best_found_so_far(tiny_model, digits):
    info = describe(tiny_model, digits.x_train[:16], name="tiny")
    config = _search_config(budget_seconds=0.01)
    search = Search(tiny_model, digits, info=info, config=config, calibration=digits.x_train[:64])
    try:
        search.run()
    finally:
        search.close()
    assert search.stopped == "budget"
    assert search.front(), "the first artifact is always made, however short the budget"
    assert not any(c.kind == "model" and c.name.startswith("s") for c in search.candidates)  # no level was pruned


@pytest.mark.slow
def test_search_end_to_end_in_the_report(tiny_model, digits, tmp_path):
    """compress(search=...) recommends a confirmed candidate within budget, smaller than the grid's baseline
    int8, and writes the trace, the sensitivity table, both plots and the sensitivity cache; a re-run reads it."""
    from effkit.pipeline import compress

    # 2 pp: the tiny model's test split is 359 samples and its fine-tunes are not bit-reproducible across thread
    # schedules, so a 1 pp budget can leave every front candidate a sample or two short on test.
    config = replace(_search_config(), max_accuracy_drop=2.0)
    out = tmp_path / "tiny"
    report = compress(tiny_model, digits, config=config, out_dir=out, name="tiny")
    trace = report.search
    assert trace["decided_on"] == "validation" and trace["stopped"] == "done"
    chosen = [c for c in trace["candidates"] if c["decision"] == Decision.CHOSEN]
    assert len(chosen) == 1 and report.recommended == chosen[0]["variant"]
    recommended = report.variant(report.recommended)
    assert recommended.ok and -recommended.top1_delta_pp <= config.max_accuracy_drop
    grid_int8 = report.variant("baseline-tflite-dynamic-litert")
    assert recommended.gzip_bytes < grid_int8.gzip_bytes / 2
    kinds = {c["name"]: c for c in trace["candidates"]}
    assert {"s50", "s80"} <= set(kinds) and kinds["s80"]["sparsity"] > 0.7
    # Every fine-tune the search made, kept or not, records where it started and ended on validation agreement.
    models = [c for c in trace["candidates"] if c["kind"] == "model" and c["name"] != "baseline"]
    assert models and all(c["decision"] == Decision.FAILED or c["fine_tune"] for c in models)
    for tuned in (c["fine_tune"] for c in models if c["fine_tune"]):
        assert 0.5 < tuned["val_agreement"] <= 1 and tuned["val_agreement_start"] is not None
        assert tuned["val_agreement"] >= tuned["val_agreement_start"]
    assert any(c["kind"] == "artifact" and "-c16" in c["name"] for c in trace["candidates"])
    assert report.sensitivity and not report.sensitivity["cached"]
    assert (out / "search_front.png").stat().st_size > 0 and (out / "sensitivity.png").stat().st_size > 0
    saved = json.loads((out / "report.json").read_text())
    assert saved["search"]["chosen"] == chosen[0]["name"] and saved["sensitivity"]["layers"]
    assert "## Search" in (out / "report.md").read_text()
    assert list((out / "cache").glob("sensitivity-*.json"))

    # A second run in a sibling folder (as `effkit compress` numbers them) reads the first one's table; the levels
    # and the budget are not part of the table's key, so a search that stops after its first artifact shows it.
    cheaper = replace(config, search=replace(config.search, levels=(0.5,), clusters=(), budget_seconds=0.01))
    again = compress(tiny_model, digits, config=cheaper, out_dir=tmp_path / "tiny-2", name="tiny")
    assert again.sensitivity["cached"] is True
    assert again.sensitivity["layers"] == report.sensitivity["layers"]


def test_budget_without_search_is_refused(tmp_path):
    from .conftest import run_effkit

    result = run_effkit("compress", "--budget", "5m", "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert result.returncode == 2
    assert "--budget bounds a search" in result.stderr and "Traceback" not in result.stderr


def test_int8_that_misses_leaves_the_noisiest_ops_float(bottleneck, digits):
    """With an agreement bar uniform int8 cannot meet, the search leaves ops in float, noisiest first (ranked by
    the LiteRT validator), and records why; the plan it keeps meets the bar."""
    from effkit.config import ParityConfig
    from effkit.quantize.litert import noise_ranking

    model, info = bottleneck
    config = replace(
        _search_config(levels=(0.5,), clusters=()),
        formats=("tflite", "onnx"),
        parity=ParityConfig(quantized_agreement=100.0),
    )
    search = Search(model, digits, info=info, config=config, calibration=digits.x_train[:64])
    try:
        search.run()
        uniform = search.artifacts["baseline-a8"]
        assert uniform.candidate.decision == Decision.DROPPED, "uniform int8 met 100% agreement: nothing to test"
        ranking = noise_ranking(search.artifacts["baseline-a8"].source.float_tflite, uniform.path,
                                search.dataset.x_val[:64])  # fmt: skip
    finally:
        search.close()
    # Before any float op, the same plan with OCTAV weight clipping: the same bytes, and it missed too, so the
    # ladder ran
    octav = next(c for c in search.candidates if c.name == "baseline-a8o")
    assert octav.settings["weight_algorithm"] == "octav" and octav.size_bytes == uniform.candidate.size_bytes
    assert octav.decision == Decision.DROPPED, octav
    selective = [c for c in search.candidates if c.name.startswith("baseline-a8-f")]
    assert selective, [c.name for c in search.candidates]
    first = selective[0]
    assert list(first.settings["layers"]) == [layer for layer, _ in ranking][: len(first.settings["layers"])]
    assert "stay float" in first.settings["why"]
    kept = [c for c in selective if c.decision in (Decision.FRONT, Decision.DOMINATED, Decision.KEPT)]
    assert all(c.agreement == 100.0 for c in kept)
    # The same decision in ONNX Runtime: the float layers of the best full-integer plan become nodes_to_exclude.
    onnx = [a for a in search.artifacts.values() if a.fmt == "onnx"]
    assert kept, "no selective plan reached 100% agreement"
    assert len(onnx) == 1
    plan = search.artifacts[onnx[0].candidate.settings["from_plan"]]
    floats = [layer for layer, precision in plan.candidate.settings["layers"].items() if precision == "float"]
    assert onnx[0].candidate.settings["float_layers"] == floats
    # Which plan is best depends on the CPU's int8 numerics: on an AVX2-only EPYC the 50%-sparse model's uniform int8
    # met the bar, on AVX-512 VNNI ones a selective plan was best. Either way ONNX keeps exactly its float layers.
    excluded = onnx[0].steps[-1].params.get("nodes_to_exclude", [])
    assert bool(excluded) == bool(floats)
    assert all(any(f"/{layer}/" in f"/{node}" for layer in floats) for node in excluded)


def test_forced_qat_fallback_makes_a_full_integer_candidate(tiny_model, digits):
    """force_qat runs the QAT path on the best model within budget: a converter int8 candidate whose steps keep
    the pruning and add the QAT step, measured like the others."""
    info = describe(tiny_model, digits.x_train[:16], name="tiny")
    config = _search_config(levels=(0.5,), clusters=(), qat=True, force_qat=True, cluster_epochs=2)
    search = Search(tiny_model, digits, info=info, config=config, calibration=digits.x_train[:64])
    try:
        search.run()
        qat = [a for name, a in search.artifacts.items() if name.endswith("-qat")]
    finally:
        search.close()
    assert len(qat) == 1, [(c.name, c.decision, c.reason) for c in search.candidates]
    candidate = qat[0].candidate
    assert candidate.settings["why"] == "forced" and candidate.settings["activations"] == "int8"
    # The QAT model's int8 file is recorded as the grid records it (variants.qat_variant): a `quantize` step.
    assert [step.stage for step in qat[0].steps][-2:] == ["qat", "quantize"]
    assert {key: qat[0].steps[-1].params[key] for key in ("mode", "format", "backend")} == {
        "mode": "int8",
        "format": "tflite",
        "backend": "converter",
    }
    assert candidate.val_top1 > 0.85 and candidate.agreement is not None


@pytest.fixture(scope="module")
def latency_search(tiny_model, digits):
    """A finished `--search latency` on the tiny model (its Pareto front decided, nothing measured on test)."""
    info = describe(tiny_model, digits.x_train[:16], name="tiny")
    config = _search_config(levels=(0.5,), clusters=(), goal="latency")
    search = Search(tiny_model, digits, info=info, config=config, calibration=digits.x_train[:64])
    try:
        search.run()
    finally:
        search.close()
    return search


def test_the_latency_goal_takes_the_pareto_front_of_p50_and_validation_drop(latency_search):
    """The front, worked out here pairwise from the trace: within budget, no other candidate as fast within timing
    noise (10% and 1 us), as accurate and as small, and better in one; the search's FRONT marks must be exactly
    those, and the first is the smallest of those as fast as the fastest."""
    search = latency_search
    within = [c for c in search.candidates if c.decision in (Decision.FRONT, Decision.DOMINATED)]
    assert len(within) >= 3, [(c.name, c.decision, c.reason) for c in search.candidates]

    def as_fast(o, c):
        return o.p50_ms <= c.p50_ms * 1.1 + 0.001

    def beats(o, c):
        faster = o.p50_ms * 1.1 + 0.001 < c.p50_ms
        better = faster or o.val_drop_pp < c.val_drop_pp or o.size_bytes < c.size_bytes
        return as_fast(o, c) and o.val_drop_pp <= c.val_drop_pp and o.size_bytes <= c.size_bytes and better

    undominated = {c.name for c in within if not any(beats(o, c) for o in within)}
    assert {c.name for c in within if c.decision == Decision.FRONT} == undominated
    assert any(c.decision == Decision.DOMINATED for c in within)
    fastest = min((c for c in within if c.name in undominated), key=lambda c: c.p50_ms)
    ties = [c for c in within if c.name in undominated and as_fast(c, fastest)]
    assert search.front()[0].size_bytes == min(c.size_bytes for c in ties)
    structured = [c for c in search.candidates if c.name.startswith("s2of4-")]
    assert structured and all(c.settings["m_by_n_held"] for c in structured)  # 2:4 tried, checked on each file


def test_a_front_candidate_that_misses_on_test_is_rejected_and_the_next_is_taken(latency_search):
    """`confirm` measures the front in order on the test split: the first within budget there is chosen; one
    that loses more than the budget is marked `rejected on test`, and a note says the next was taken."""
    from copy import copy

    from effkit.search.records import Trace
    from effkit.types import Variant

    judge, decided = latency_search.judge, latency_search.tried  # the module's trace stays as it was decided
    trace = Trace(
        list(decided.candidates), {name: copy(a) for name, a in decided.artifacts.items()}, list(decided.notes)
    )
    first = judge.front(trace.artifacts.values())[0].name
    second = judge.front(trace.artifacts.values(), without=[first])[0].name  # a dominated one may join the front
    measured = []

    def measure(artifact):  # what the pipeline's measurement returns: the test figures of one artifact
        measured.append(artifact.candidate.name)
        drop = 5.0 if artifact.candidate.name == first else 0.3  # the first loses 5 pp on test, past the 1 pp
        return Variant(name=f"search-{artifact.candidate.name}", format="tflite", quantization="dynamic",
                       backend="litert", path="x.tflite", top1=0.9, top1_delta_pp=-drop)  # fmt: skip

    chosen = judge.confirm(trace, measure)
    assert measured == [first, second] and chosen.name == f"search-{second}"
    decisions = {c.name: (c.decision, c.reason) for c in trace.candidates}
    assert decisions[first] == (Decision.REJECTED, "loses 5.00 pp on the test split")
    assert decisions[second] == (Decision.CHOSEN, "test drop 0.30 pp")
    said = f"search: {first} was best on validation but loses 5.00 pp on the test split; took the next on the front"
    assert trace.notes[len(decided.notes) :] == [said]


def test_when_a_candidates_own_model_misses_on_test_its_siblings_are_rejected_unmeasured(latency_search):
    """A front candidate that misses on test because its Keras model already misses there: no quantization of
    that model wins it back, so its other candidates are rejected with it, unmeasured, and the next model's
    candidate is measured; the full-integer confirmation skips them too."""
    from copy import copy

    from effkit.search.records import Trace
    from effkit.types import Variant

    judge, decided = latency_search.judge, latency_search.tried
    trace = Trace(
        list(decided.candidates), {name: copy(a) for name, a in decided.artifacts.items()}, list(decided.notes)
    )
    first = judge.front(trace.artifacts.values())[0]
    source = trace.artifacts[first.name].source
    siblings = {n for n, a in trace.artifacts.items() if a.source is source and n != first.name
                and a.candidate.decision in (Decision.FRONT, Decision.DOMINATED)}  # fmt: skip
    others = [a for a in trace.artifacts.values() if a.source is not source
              and a.candidate.decision in (Decision.FRONT, Decision.DOMINATED)]  # fmt: skip
    assert siblings and others, "the tiny search makes several candidates of each model"
    measured = []

    def measure(artifact):
        measured.append(artifact.candidate.name)
        drop = 4.0 if artifact.source is source else 0.2
        return Variant(name=f"search-{artifact.candidate.name}", format="tflite", quantization="dynamic",
                       backend="litert", path="x.tflite", top1=0.9, top1_delta_pp=-drop)  # fmt: skip

    chosen = judge.confirm(trace, measure, lambda artifact: 3.5 if artifact.source is source else 0.1)
    assert measured[0] == first.name and len(measured) == 2 and chosen.name == f"search-{measured[1]}"
    assert trace.artifacts[measured[1]].source is not source
    for name in siblings:
        candidate = trace.candidates[trace.index(name)]
        assert candidate.decision == Decision.REJECTED and candidate.variant is None
        assert candidate.reason == f"its model {source.name} loses 3.50 pp on the test split (not measured)"
    judge.confirm_integer(trace, measure)
    assert not set(measured[2:]) & siblings


def test_a_quantized_candidate_needs_the_parity_bar_plus_one_standard_error_on_validation(latency_search):
    """97% agreement on test, over 288 validation samples: 97% + sqrt(0.97 x 0.03 / 288) = 98.01% on validation.
    Every artifact below that was dropped for it (or, when it also lost too much, for that); every one kept meets
    it."""
    assert len(latency_search.dataset.x_val) == 288
    assert latency_search.agreement_needed() == 98.01
    budget = latency_search.judge.budget_pp
    for candidate in latency_search.candidates:
        if candidate.kind == "artifact" and candidate.agreement is not None and candidate.agreement < 98.01:
            why = "agreement" if candidate.val_drop_pp <= budget + 1e-9 else "on validation"
            assert candidate.decision == Decision.DROPPED and why in candidate.reason, candidate
        elif candidate.decision in (Decision.FRONT, Decision.DOMINATED):
            assert candidate.agreement is None or candidate.agreement >= 98.01, candidate


@pytest.mark.slow
def test_ctrl_c_during_a_search_keeps_its_trace(tiny_tf_keras_file, tmp_path):
    from effkit.types import Report

    from .conftest import ctrl_c_when

    out = tmp_path / "out"
    args = ["compress", str(tiny_tf_keras_file), "--out", str(out), "--search", "size", "--formats", "tflite",
            "--quant", "none,dynamic"]  # fmt: skip
    code, stderr = ctrl_c_when("search: baseline-a8", *args)  # once the first candidates are in the trace
    assert code == 130, stderr
    report = Report.from_json((out / "report.json").read_text())
    assert report.complete is False
    assert report.search["stopped"] == "interrupted"
    names = [c["name"] for c in report.search["candidates"]]
    assert {"baseline", "baseline-w8", "baseline-a8"} <= set(names)


def test_a_layer_is_not_pushed_past_what_its_curve_held():
    """cifar_cnn's classifier held at 75% alone and lost 11 pp at 90%: at level 0.5 it may take 75%, not 98%."""
    curves = {
        "conv": (36_864, {"0.5": 0.0, "0.75": 13.5, "0.9": 54.5}),
        "head": (1_280, {"0.5": 0.0, "0.75": 0.0, "0.9": 10.8}),
        "robust": (8_192, {"0.5": 0.0, "0.75": 0.0, "0.9": 0.3}),
    }
    rows = tuple(
        LayerSensitivity(
            layer=name, weights=count, prune_curve=curve, prune_drop_pp=float(np.mean(list(curve.values())))
        )
        for name, (count, curve) in curves.items()
    )
    table = Sensitivity(model_hash="x", val_top1=0.9, probe_sparsities=(0.5, 0.75, 0.9), layers=rows, seconds=0.0)
    targets = layer_targets(0.5, table, [(name, count) for name, (count, _) in curves.items()], budget_pp=1.0)
    assert targets["head"] <= 0.75 and targets["conv"] <= 0.5
    assert targets["robust"] > 0.75  # held at the highest probe: it may go further


def test_an_embedding_left_float_by_the_litert_plan_gets_the_converters_int8(tmp_path):
    """Keras embeddings convert to GATHER, which the LiteRT quantizer does not quantize in dynamic mode: the search
    adds the converter's dynamic-range file, whose embedding table is int8 (about 4x smaller)."""
    from effkit.load.data import load_dataset

    data = load_dataset("synthetic_text")
    keras = keras_compat.tf_keras()
    keras.utils.set_random_seed(0)
    vocabulary = int(max(data.x_train.max(), data.x_val.max(), data.x_test.max())) + 1
    model = keras.Sequential(
        [
            keras.Input(data.x_train.shape[1:], dtype="int32"),
            keras.layers.Embedding(vocabulary, 16),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    model.fit(data.x_train, data.y_train, epochs=4, batch_size=64, verbose=0)
    info = describe(model, data.x_train[:16], name="text")
    config = _search_config(levels=(0.5,), clusters=())
    search = Search(model, data, info=info, config=config, calibration=data.x_train[:64])
    try:
        search.run()
    finally:
        search.close()
    litert, converter = search.artifacts["baseline-w8"].candidate, search.artifacts["baseline-w8c"].candidate
    assert converter.size_bytes < litert.size_bytes / 2.5, (converter.size_bytes, litert.size_bytes)
    assert converter.val_top1 > 0.6 and converter.agreement > 95


def test_the_latency_goal_tries_structured_pruning_whose_files_are_smaller_in_raw_bytes(latency_search):
    """Whole channels removed: each level's model is kept or dropped on validation like any other, and a kept
    one's int8 file holds fewer raw bytes than the user's model's, since the layers themselves are smaller."""
    candidates = {c.name: c for c in latency_search.candidates}
    levels = [c for c in latency_search.candidates if c.kind == "model" and c.name.startswith("ch")]
    assert levels and levels[0].name == "ch25" and levels[0].parent == "baseline"
    assert levels[0].settings["group_shares"] and levels[0].fine_tune is not None
    kept = [c.name for c in levels if c.decision == Decision.KEPT]
    assert kept, [(c.name, c.decision, c.reason) for c in levels]
    for name in kept:
        assert candidates[f"{name}-a8"].size_bytes < candidates["baseline-a8"].size_bytes * 0.9


def test_the_flash_goal_ranks_by_raw_bytes_and_prunes_channels_not_weights(tiny_model, digits):
    """`--search flash`: what a device holds raw. Zeros and clusters save no raw byte, so no unstructured level is
    tried; fewer channels do, and the front is ordered by raw bytes."""
    info = describe(tiny_model, digits.x_train[:16], name="tiny")
    config = replace(_search_config(goal="flash", channel_shares=(0.5,)), max_accuracy_drop=3.0)
    search = Search(tiny_model, digits, info=info, config=config, calibration=digits.x_train[:64])
    try:
        search.run()
    finally:
        search.close()
    models = [c.name for c in search.candidates if c.kind == "model"]
    assert models == ["baseline", "ch50"], models
    front = search.front()
    assert front and [c.size_bytes for c in front] == sorted(c.size_bytes for c in front)
    within = [c for c in search.candidates if c.decision in (Decision.FRONT, Decision.DOMINATED)]
    assert front[0].size_bytes == min(c.size_bytes for c in within)
    assert front[0].parent == "ch50"  # half the channels: fewer raw bytes than any plan of the full model


def test_the_mcu_flash_goal_counts_tflite_micros_lut_bytes_and_its_arena(tiny_model, digits):
    """`--search flash --target mcu`: TFLite Micro reads LUT-compressed weights, so clustering saves flash there.
    A clustered model's full-integer file counts its LUT copy's bytes, and the arena TFLite Micro measured for it
    (the decoded weights live there), which a --max-arena below it keeps off the front."""
    from effkit.config import Limits
    from effkit.search.judge import Judge

    info = describe(tiny_model, digits.x_train[:16], name="tiny")
    config = replace(_search_config(goal="flash", channel_shares=(0.5,), target="mcu"), max_accuracy_drop=3.0)
    search = Search(tiny_model, digits, info=info, config=config, calibration=digits.x_train[:64])
    try:
        search.run()
    finally:
        search.close()
    candidates = {c.name: c for c in search.candidates}
    assert [c.name for c in search.candidates if c.kind == "model"] == ["baseline", "ch50", "ch50-c16"]
    plain, lut = candidates["ch50-a8"], candidates["ch50-c16-a8"]
    assert plain.flash_bytes == plain.size_bytes and plain.arena_bytes > 0  # no clusters: its raw bytes
    assert lut.size_bytes == plain.size_bytes  # clusters alone save no raw byte...
    assert lut.flash_bytes < 0.95 * lut.size_bytes  # ...but 4-bit LUT indices do in TFLite Micro (9% on this tiny file)
    assert lut.arena_bytes > plain.arena_bytes
    front = search.front()
    assert front[0].name == "ch50-c16-a8", [(c.name, c.flash_bytes) for c in front]  # the least flash first
    for name in ("baseline-w8", "baseline-w4"):  # dynamic range: not for a microcontroller, and never measured so
        assert candidates[name].flash_bytes is None
    judge = Judge(info=info, x_val=digits.x_val, labels=None, budget_pp=3.0, goal="flash",
                  quantized_agreement=97.0, limits=Limits(arena_bytes=plain.arena_bytes), target="mcu")  # fmt: skip
    assert judge.beyond_limits(plain) is None
    assert judge.beyond_limits(lut) == f"a {lut.arena_bytes:,}-byte arena is over the {plain.arena_bytes:,}-byte limit"


def test_after_two_misses_on_test_the_rest_of_that_pruning_level_is_passed_over():
    """Validation was optimistic about a level when two of its candidates miss on test: its other candidates
    (clustered ones included) share that optimism, so they are rejected unmeasured and the next level's are
    measured. A trace of plain records, as the search leaves it."""
    from pathlib import Path

    from effkit.search.judge import Judge
    from effkit.search.records import Artifact, Candidate, Trace
    from effkit.types import Source, Variant

    models = [("baseline", None, {}), ("s80", "baseline", {"sparsity": 0.8}), ("s85", "s80", {"sparsity": 0.85}),
              ("s85-c8", "s85", {"clusters": 8})]  # fmt: skip
    trace = Trace([Candidate(name, "model", parent, settings, Decision.KEPT) for name, parent, settings in models])
    sources = {name: Source(name, None, (), 0.0, val_top1=0.9) for name, _, _ in models}
    for gzip, (name, source) in enumerate([("s85-c8-w4", "s85-c8"), ("s85-w4", "s85"), ("s85-c8-a8", "s85-c8"),
                                            ("s85-a8", "s85"), ("s80-w4", "s80")], start=10):  # fmt: skip
        candidate = Candidate(name, "artifact", source, {}, Decision.FRONT, val_drop_pp=0.0, gzip_bytes=gzip)
        trace.record(candidate)
        trace.artifacts[name] = Artifact(candidate, Path(f"{name}.tflite"), sources[source], "tflite", "int8", ())
    judge = Judge(info=None, x_val=np.zeros((288, 1)), labels=None, budget_pp=1.0, goal="size",
                  quantized_agreement=97.0)  # fmt: skip
    assert judge.level_of(trace, "s85-c8") == "s85" and judge.level_of(trace, "s80") == "s80"
    measured = []

    def measure(artifact):
        measured.append(artifact.candidate.name)
        drop = 2.0 if artifact.candidate.name.startswith("s85") else 0.2
        return Variant(name=f"search-{artifact.candidate.name}", format="tflite", quantization="int8",
                       backend="litert", path="x.tflite", top1=0.9, top1_delta_pp=-drop)  # fmt: skip

    chosen = judge.confirm(trace, measure, lambda artifact: 0.8)  # within budget, but more than half of it
    assert measured == ["s85-c8-w4", "s85-w4", "s80-w4"] and chosen.name == "search-s80-w4"
    for name in ("s85-c8-a8", "s85-a8"):
        candidate = trace.candidates[trace.index(name)]
        assert candidate.decision == Decision.REJECTED and candidate.variant is None
        assert candidate.reason == "2 candidates of s85 missed on the test split (not measured)"
    # When the misses are the quantization's (the models lose little on test), the level's other candidates stay.
    for index, candidate in enumerate(trace.candidates):
        if candidate.kind == "artifact":
            trace.update(index, decision=Decision.FRONT, reason="", variant=None)
    measured.clear()
    judge.confirm(trace, measure, lambda artifact: 0.2)
    assert measured == ["s85-c8-w4", "s85-w4", "s85-c8-a8", "s85-a8", "s80-w4"]


def test_a_candidate_beyond_the_devices_limits_is_not_on_the_front():
    """--max-latency-ms and --max-flash bound the search too: a candidate over either (its quick p50, its raw
    bytes) is dropped with the reason, and the front is what is left."""
    from pathlib import Path

    from effkit.config import Limits
    from effkit.search.judge import Judge
    from effkit.search.records import Artifact, Candidate, Trace
    from effkit.types import Source

    source = Source("baseline", None, (), 0.0, val_top1=0.9)
    trace = Trace([Candidate("baseline", "model", None, {}, Decision.KEPT)])
    for name, size, gzip, p50 in (("w4", 50_000, 9_000, 0.015), ("a8", 100_000, 13_000, 0.004),
                                  ("ch50-a8", 31_000, 26_000, 0.0026)):  # fmt: skip
        candidate = Candidate(name, "artifact", "baseline", {}, Decision.KEPT, val_drop_pp=0.0, size_bytes=size,
                              gzip_bytes=gzip, p50_ms=p50)  # fmt: skip
        trace.record(candidate)
        trace.artifacts[name] = Artifact(candidate, Path(f"{name}.tflite"), source, "tflite", "int8", ())
    judge = Judge(info=None, x_val=np.zeros((288, 1)), labels=None, budget_pp=1.0, goal="size",
                  quantized_agreement=97.0, limits=Limits(latency_ms=0.01, flash_bytes=64 * 1024))  # fmt: skip
    assert [c.name for c in judge.front(trace.artifacts.values())] == ["ch50-a8"]
    judge.mark_front(trace)
    decisions = {c.name: (c.decision, c.reason) for c in trace.candidates}
    assert decisions["w4"] == (Decision.DROPPED, "p50 0.015 ms is over the 0.01 ms limit")
    assert decisions["a8"] == (Decision.DROPPED, "100,000 raw bytes are over the 65,536-byte flash limit")
    assert decisions["ch50-a8"][0] == Decision.FRONT


def test_the_mcu_target_keeps_only_full_integer_tflite_files_that_tflite_micro_runs():
    """--target mcu: dynamic-range and ONNX candidates are off the front; a front candidate that TFLite Micro does
    not run, or whose arena is over the limit, is rejected on test and the next is taken."""
    from pathlib import Path

    from effkit.config import Limits
    from effkit.search.judge import Judge
    from effkit.search.records import Artifact, Candidate, Trace
    from effkit.types import Source, Variant

    source = Source("baseline", None, (), 0.0, val_top1=0.9)
    trace = Trace([Candidate("baseline", "model", None, {}, Decision.KEPT)])
    rows = (("w8", "tflite", "float", 20_000), ("a8-onnx", "onnx", "int8", 21_000), ("a8-big-arena", "tflite", "int8",
            22_000), ("a8", "tflite", "int8", 23_000))  # fmt: skip
    for name, fmt, activations, size in rows:
        candidate = Candidate(name, "artifact", "baseline", {"activations": activations}, Decision.KEPT,
                              val_drop_pp=0.0, size_bytes=size, gzip_bytes=size)  # fmt: skip
        trace.record(candidate)
        trace.artifacts[name] = Artifact(candidate, Path(f"{name}.{fmt}"), source, fmt, "int8", ())
    judge = Judge(info=None, x_val=np.zeros((288, 1)), labels=None, budget_pp=1.0, goal="flash",
                  quantized_agreement=97.0, limits=Limits(arena_bytes=8192), target="mcu")  # fmt: skip
    judge.mark_front(trace)
    reasons = {c.name: c.reason for c in trace.candidates if c.decision == Decision.DROPPED}
    assert set(reasons) == {"w8", "a8-onnx"} and all("full-integer" in r for r in reasons.values())
    arenas = {"a8-big-arena": 20_000, "a8": 8_000}

    def measure(artifact):
        name = artifact.candidate.name
        micro = {"runs": True, "arena_bytes": arenas[name]}
        return Variant(name=f"search-{name}", format="tflite", quantization="int8", backend="litert",
                       path="x.tflite", top1=0.9, top1_delta_pp=0.0, micro=micro)  # fmt: skip

    assert judge.confirm(trace, measure).name == "search-a8"
    rejected = trace.candidates[trace.index("a8-big-arena")]
    assert rejected.decision == Decision.REJECTED and "arena of 20000 bytes is over the 8,192-byte" in rejected.reason


def test_the_latency_goal_breaks_a_tie_within_timing_noise_by_raw_bytes():
    """--search latency: a p50 within timing noise of the fastest (10% and 1 us, the rule a pick is 'not slower'
    by) is a tie, broken by raw bytes, so a file four times larger is not chosen for a p50 no runtime can tell
    apart; a candidate faster beyond noise still comes first."""
    from pathlib import Path

    from effkit.search.judge import Judge
    from effkit.search.records import Artifact, Candidate
    from effkit.types import Source

    source = Source("baseline", None, (), 0.0, val_top1=0.9)

    def artifacts(*rows):
        made = []
        for name, size, p50, drop in rows:
            candidate = Candidate(name, "artifact", "baseline", {}, Decision.KEPT, val_drop_pp=drop, size_bytes=size,
                                  p50_ms=p50)  # fmt: skip
            made.append(Artifact(candidate, Path(f"{name}.tflite"), source, "tflite", "int8", ()))
        return made

    judge = Judge(info=None, x_val=np.zeros((288, 1)), labels=None, budget_pp=1.0, goal="latency",
                  quantized_agreement=97.0)  # fmt: skip
    # As measured on imdb_text: the embedding left float (w8) is 4x the bytes of the full-integer file, at one p50.
    tie = artifacts(("ch50-w8", 642_880, 0.0024, 0.75), ("ch50-a8", 160_000, 0.0025, 0.80),
                    ("baseline-a8", 163_456, 0.0031, 0.0), ("ch50-w4", 400_000, 0.0130, 0.2))  # fmt: skip
    front = [c.name for c in judge.front(tie)]
    assert front[0] == "ch50-a8", front  # as fast within noise, and 4x smaller
    assert front[1] == "baseline-a8" and "ch50-w4" not in front  # w4: slower, larger and worse than baseline-a8
    faster = artifacts(("ch50-w8", 642_880, 0.0010, 0.75), ("ch50-a8", 160_000, 0.0025, 0.80))
    assert [c.name for c in judge.front(faster)] == ["ch50-w8", "ch50-a8"]  # 2.5x faster is not noise
