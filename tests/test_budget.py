"""The search's budget as a promise: steps priced before they start, fine-tunes stopped at their deadline with
their best weights, and every kept model given its artifacts."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from effkit.config import PruneConfig
from effkit.load.classifier import describe
from effkit.search import Decision, Search
from effkit.search.budget import Costs, Deadline, affordable_epochs
from effkit.techniques.train import FINE_TUNE_KEYS

from .test_search import _search_config


def _deadline(budget: float, *, spent: float, reserve: float = 0.0) -> Deadline:
    return Deadline(budget, started=time.perf_counter() - spent, reserve_seconds=reserve)


def test_a_fine_tune_gets_the_epochs_that_fit_before_its_artifacts_and_the_confirmation():
    # 100 s budget, 50 spent, 10 kept for the test split: 40 left, less 1.5 x 4 s for the artifacts: 34 s.
    deadline, costs = _deadline(100, spent=50, reserve=10), Costs(artifacts=4.0, per_epoch={"prune": 10.0})
    assert affordable_epochs(deadline, costs, "prune", 2, minimum=2) == (2, "")
    epochs, why = affordable_epochs(deadline, costs, "prune", 8, minimum=2)
    assert epochs == 3 and why.startswith("3 of 8 epochs")
    epochs, why = affordable_epochs(deadline, costs, "prune", 8, minimum=4)
    assert epochs == 0 and why.startswith("not started")
    # A kind not run yet is priced at twice pruning's seconds per epoch: 20 s, so one epoch fits in 34 s.
    assert affordable_epochs(deadline, costs, "cluster", 4, minimum=1)[0] == 1
    # Nothing priced yet: the full count, which its deadline will stop in time; none once the time is gone.
    assert affordable_epochs(deadline, Costs(), "prune", 8, minimum=2) == (8, "")
    assert affordable_epochs(_deadline(100, spent=95, reserve=10), Costs(), "prune", 8, minimum=2)[0] == 0
    # Without a budget every step gets what it asks for.
    assert affordable_epochs(Deadline(None), costs, "prune", 80, minimum=2) == (80, "")


def test_the_slowest_fine_tune_of_a_kind_prices_the_next():
    costs = Costs()
    costs.learn_fine_tune("prune", 12.0, 4)
    costs.learn_fine_tune("prune", 6.0, 4)
    costs.learn_artifacts(2.0)
    costs.learn_artifacts(1.0)
    assert costs.per_epoch == {"prune": 3.0} and costs.artifacts == 2.0
    assert costs.artifacts_reserve() == pytest.approx(3.0)


def test_a_pruning_fine_tune_stopped_before_its_ramp_ends_returns_the_one_shot_model(tiny_model, digits):
    """A deadline already past stops the fine-tune after its first step, inside the ramp: no epoch reached the
    target, so the step returns the model magnitude-pruned at once to it, and says the deadline stopped it."""
    from effkit.techniques.prune import prune

    info = describe(tiny_model, digits.x_train[:16], name="tiny")
    started = time.perf_counter()
    result = prune(tiny_model, digits, info=info, sparsity=0.8, config=PruneConfig(epochs=40, batch_size=64),
                   deadline=time.time())  # fmt: skip
    assert time.perf_counter() - started < 60  # 40 epochs with the ramp over 20 would take several times longer
    params = result.step_params()
    assert result.epochs_run == 1 and params["stopped_by_deadline"] is True and params["best_epoch"] == 0
    assert abs(result.sparsity - 0.8) < 0.01  # the one-shot model is at the target exactly
    assert params["val_agreement"] == params["val_agreement_start"] > 0.5
    assert "stopped_by_deadline" in FINE_TUNE_KEYS


def test_a_fine_tune_without_a_deadline_records_none(tiny_model, digits):
    from effkit.techniques.cluster import cluster

    info = describe(tiny_model, digits.x_train[:16], name="tiny")
    result = cluster(tiny_model, digits, info=info, clusters=16, config=PruneConfig(epochs=1, batch_size=64))
    assert result.epochs_run == 1 and "stopped_by_deadline" not in result.step_params()


def test_the_budget_bounds_the_search_and_every_kept_model_gets_its_artifacts(tiny_model, digits):
    """A clustering fine-tune a hundred times longer than the budget, priced from the pruning before it, is
    shortened to what fits (or not started) and stopped at its deadline; the search ends near its budget with the
    artifacts of every model it kept."""
    info = describe(tiny_model, digits.x_train[:16], name="tiny")
    budget = 10.0
    config = _search_config(levels=(0.5,), level_epochs=6, clusters=(16,), cluster_epochs=1000)
    config = replace(config, search=replace(config.search, budget_seconds=budget), max_accuracy_drop=3.0)
    search = Search(tiny_model, digits, info=info, config=config, calibration=digits.x_train[:64])
    started = time.perf_counter()
    try:
        search.run()
    finally:
        search.close()
    wall = time.perf_counter() - started
    assert search.stopped == "budget"
    assert wall < 2 * budget, f"the search took {wall:.1f} s for a {budget:.0f} s budget"
    assert search.costs.per_epoch["prune"] > 0 and search.costs.artifacts > 0
    priced = [note for note in search.notes if note.startswith("search: s50-c16: ")]
    assert priced and ("of 1000 epochs" in priced[0] or "not started" in priced[0]), search.notes
    for model in (c for c in search.candidates if c.kind == "model" and c.decision == Decision.KEPT):
        assert any(c.parent == model.name and c.kind == "artifact" for c in search.candidates), model.name
