"""Sensitivity-shaped proposals (search.sensitivity): the shape rule on known numbers, their
projection onto the budget through the study's sampler, and a real search that makes them."""

from __future__ import annotations

import json

import optuna
import pytest
import torch

from prunebench.harness.models import create_model
from prunebench.harness.pruning import DENSE
from prunebench.search.latency_model import (
    GAP_AIM_ATTR,
    LEVEL,
    LEVEL_MIN,
    LEVEL_STEP,
    PROPOSAL_ATTR,
    BudgetProjection,
    CostTable,
    ProjectingSampler,
    fit_cost_model,
    front_gaps,
    mac_fraction,
    measured_front,
)
from prunebench.search.runs.search_settings import MAX_SENSITIVITY
from prunebench.search.sensitivity import (
    DROPS_ATTR,
    SCHEDULE,
    SHAPE_ATTR,
    proposal,
    savings,
    sensitivity_shape,
)
from prunebench.search.space import SearchSpace, SpaceSpec

X = torch.randn(1, 1, 32, 32)


def test_the_most_efficient_dimension_is_pruned_furthest_and_gamma_sharpens() -> None:
    drops = {"a": 0.01, "b": 0.20, "c": 0.0}
    saved = {"a": 0.20, "b": 0.20, "c": 0.10}
    most = dict.fromkeys(drops, 0.8)
    one = sensitivity_shape(drops, saved, most, 1.0, floor=0.01)
    # efficiencies 20, 1 and 10 (c's zero drop counts as the floor, one image)
    assert one == pytest.approx({"a": 0.8, "b": 0.8 / 20, "c": 0.4})
    two = sensitivity_shape(drops, saved, most, 2.0, floor=0.01)
    assert two["a"] == 0.8 and two["c"] == pytest.approx(0.2) and two["b"] < one["b"]
    assert sensitivity_shape(drops, saved, most, 0.0, floor=0.01) == pytest.approx(most)
    # nothing saves anything: the uniform shape
    assert sensitivity_shape(drops, dict.fromkeys(drops, 0.0), most, 1.0, 0.01) == most


def test_the_schedule_and_the_settings_bound_agree() -> None:
    assert len(SCHEDULE) == MAX_SENSITIVITY
    assert all(LEVEL_MIN <= level <= 1.0 and gamma > 0 for gamma, level in SCHEDULE)


def _resnet() -> tuple[SearchSpace, CostTable]:
    model = create_model("test_resnet", 10, 1).eval()
    space = SearchSpace.build(SpaceSpec(kind="static"), model, X)
    return space, CostTable(space, model, X)


def test_savings_are_each_dimensions_predicted_cost_removed_alone() -> None:
    space, table = _resnet()
    projection = BudgetProjection(space, table, {"macs": 0.5 * table.dense_macs})
    from prunebench.search.latency_model import CostModel

    saved = savings(projection, {"macs": CostModel("macs", "counted")})
    assert set(saved) == set(space.param_names())
    assert all(0 < v < 1 for v in saved.values())
    # a group that spans a residual stream (several convs) saves more than one internal conv
    assert max(saved.values()) > 2 * min(saved.values())


def test_a_proposal_is_projected_onto_the_budget_keeping_its_shape() -> None:
    space, table = _resnet()

    def truth(config) -> float:
        return 0.3 + 2.0 * mac_fraction(table.features(config))

    points = [(table.features(DENSE), truth(DENSE))]
    model = fit_cost_model("latency_p50_ms", points, table.names)
    budget = 0.6 * truth(DENSE)
    projection = BudgetProjection(space, table, {"latency_ms": budget}, 0.1)
    sampler = ProjectingSampler(optuna.samplers.RandomSampler(seed=0), projection,
                                lambda s: {"latency_ms": model})
    study = optuna.create_study(sampler=sampler)
    dims = space.param_names()
    amounts = {n: (0.8 if i % 2 else 0.2) for i, n in enumerate(dims)}  # a two-level shape
    study.enqueue_trial({}, user_attrs={PROPOSAL_ATTR: proposal(space, amounts, 1.0)})

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float(LEVEL, 0.0, 1.0, step=LEVEL_STEP)
        return truth(space.suggest(trial).record)

    study.optimize(objective, n_trials=1)
    params = study.trials[0].params
    predicted = model.predict(table, space.config(params).record)
    assert predicted <= budget / 1.1
    assert predicted > 0.9 * budget / 1.1  # level 1: at the budget's edge, not far inside
    heavy = [params[n] for i, n in enumerate(dims) if i % 2]
    light = [params[n] for i, n in enumerate(dims) if not i % 2]
    assert min(heavy) > max(light)  # the shape survives the scaling


def _convnet_search(assets: dict[str, str], out, kind: str, fraction: float, **settings):
    """A real search of test_convnet under a MACs budget of ``fraction`` x dense: its space,
    completed trials, dense MACs and the drops it wrote."""
    from prunebench.search.runs.search_run import run_search

    model = create_model("test_convnet", 10, 1).eval()
    spec = SpaceSpec(kind=kind, dynamic_method="antidote" if kind == "dynamic" else None)
    space = SearchSpace.build(spec, model, X)
    dense_macs = CostTable(space, model, X).dense_macs
    result = run_search(model="test_convnet", dataset="digits", profile=assets["profile"],
                        checkpoint=settings.pop("checkpoint", assets["checkpoint"]), space=kind,
                        out=out, progress=False,
                        macs_budget=fraction * dense_macs, **settings)
    done = result.trials[result.trials["state"] == "COMPLETE"]
    drops_file = out / "sensitivity.json"
    drops = json.loads(drops_file.read_text()) if drops_file.exists() else {}
    return space, done, dense_macs, drops


@pytest.mark.slow
def test_a_search_makes_its_proposals_after_the_warm_start(assets: dict[str, str],
                                                           tmp_path) -> None:
    space, done, dense_macs, drops = _convnet_search(assets, tmp_path / "run", "static", 0.5,
                                                     trials=5, warm_start=2, sensitivity=6)
    assert len(done) == 5
    shaped = done[done[SHAPE_ATTR].notna()]
    warm = done[done["prunebench_warm_start_t"].notna()]
    # every trial after the warm start is a proposal, SCHEDULE's in order, until the trials
    # run out (before the sixth)
    assert len(shaped) == 5 - len(warm) < len(SCHEDULE)
    assert shaped[SHAPE_ATTR].tolist() == [g for g, _ in SCHEDULE][:len(shaped)]
    assert (shaped["trial_number"] > warm["trial_number"].max()).all()  # after the warm start
    assert (shaped["macs"] <= 0.5 * dense_macs).all()
    assert set(drops) == set(space.groups)
    assert all(0.0 <= v <= 1.0 for v in drops.values())
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "run" / "study.journal")))
    study = optuna.load_study(study_name="run", storage=storage)
    assert study.user_attrs[DROPS_ATTR] == drops
    # the next proposal was never enqueued: the run leaves no trial of its own waiting
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 5


@pytest.mark.slow
def test_a_dynamic_search_with_a_searched_option_makes_its_proposals(
        assets: dict[str, str], tmp_path) -> None:
    space, done, dense_macs, drops = _convnet_search(
        assets, tmp_path / "run", "dynamic", 0.7, method="antidote", search_option=["rule"],
        trials=4, warm_start=1, sensitivity=2)
    shaped = done[done[SHAPE_ATTR].notna()]
    assert len(shaped) == 2 and (shaped["macs"] <= 0.7 * dense_macs).all()
    # the searched option where the drops were measured (its default), on the warm line too
    assert (shaped["params_option/rule"] == "ratio").all()
    warm = done[done["prunebench_warm_start_t"].notna()]
    assert len(warm) == 1 and (warm["params_option/rule"] == "ratio").all()
    assert set(drops) == {space.keep_param(g) for g in space.gated}


@pytest.mark.slow
def test_a_search_aims_its_sampler_trials_into_the_fronts_largest_gap(
        assets: dict[str, str], trained: str, tmp_path) -> None:
    _, _, dense_macs, _ = _convnet_search(assets, tmp_path / "run", "static", 0.5, trials=6,
                                          warm_start=3, sensitivity=0, checkpoint=trained)
    budget = 0.5 * dense_macs
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "run" / "study.journal")))
    trials = optuna.load_study(study_name="run", storage=storage).trials
    aimed = [t for t in trials if GAP_AIM_ATTR in t.user_attrs]
    assert [t.number for t in aimed] == [3, 4, 5]  # every sampler trial, no warm-start one
    for t in aimed:
        aim = t.user_attrs[GAP_AIM_ATTR]
        # the gap is the largest of the front measured before the trial
        front = measured_front(trials[:t.number], ["macs"])
        assert aim["key"] == "macs"
        gaps = front_gaps([(c["macs"], a) for c, a in front.points], budget, front.ceiling)
        best = max(gaps, key=lambda g: g.area)
        assert (aim["low"], aim["high"]) == (best.low, best.high)
        assert aim["low"] < aim["cost"] < aim["high"] and t.user_attrs["macs"] <= budget
