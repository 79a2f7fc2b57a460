"""The budget-aimed warm start walks the uniform line to the budget's edge."""

from __future__ import annotations

import optuna
import pytest
import torch

from prunebench.harness.models import create_model
from prunebench.search.space import SearchSpace, SpaceSpec
from prunebench.search.warm import T_ATTR, BudgetLineStart

X = torch.zeros(1, 1, 32, 32)


def _space() -> SearchSpace:
    return SearchSpace.build(SpaceSpec(kind="static", max_ratio=0.8, ratio_step=0.05),
                             create_model("test_convnet", 10, 1), X)


def _run(space: SearchSpace, warm: BudgetLineStart, edge: float, trials: int) -> optuna.Study:
    """Latency falls linearly with the uniform ratio; the budget is met at ratio ``edge``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    warm.start(study)

    def objective(trial: optuna.Trial) -> float:
        ratios = [trial.suggest_float(space.ratio_param(g), 0.0, 0.8, step=0.05)
                  for g in space.groups]
        r = sum(ratios) / len(ratios)
        trial.set_user_attr("constraint", r)
        trial.set_constraint("latency_ms", (1.0 - 0.5 * r) / (1.0 - 0.5 * edge) - 1.0)
        return -r

    study.optimize(objective, n_trials=trials, callbacks=[warm.callback])
    return study


def _warm_ratios(study: optuna.Study) -> list[float]:
    return [t.params["conv1"] for t in study.trials if T_ATTR in t.user_attrs]


def test_aimed_start_finds_the_least_pruned_uniform_point_meeting_the_budget() -> None:
    space = _space()
    warm = BudgetLineStart(space, 5, dense_violation=1.0 / (1.0 - 0.5 * 0.42) - 1.0)
    study = _run(space, warm, edge=0.42, trials=8)
    ratios = _warm_ratios(study)
    assert ratios[0] == 0.8  # the most pruned end first
    assert len(ratios) <= 5 and warm.done
    feasible = [r for r in ratios if r >= 0.42]
    assert min(feasible) == 0.45  # the grid point just past the edge
    assert len(set(ratios)) == len(ratios)  # never the same point twice
    assert len(study.trials) == 8  # then the sampler goes on


def test_after_the_aim_the_feasible_stretch_is_filled_evenly() -> None:
    space = _space()
    warm = BudgetLineStart(space, 8, dense_violation=1.0 / (1.0 - 0.5 * 0.42) - 1.0)
    study = _run(space, warm, edge=0.42, trials=10)
    ratios = _warm_ratios(study)
    assert len(ratios) == 8 and warm.done
    aimed, filled = ratios[:3], ratios[3:]  # the bracket is one step wide after 3
    assert min(r for r in aimed if r >= 0.42) == 0.45  # the aim still finds the edge
    assert all(0.45 < r < 0.8 for r in filled)  # every fill point meets the budget
    assert filled[0] == 0.6  # the first one halves the stretch [0.45, 0.8]
    grid = sorted({0.45, 0.8, *filled})
    assert max(b - a for a, b in zip(grid, grid[1:], strict=False)) <= 0.1 + 1e-9  # no gap
    assert len(set(ratios)) == len(ratios)


def test_the_fill_stops_when_the_stretch_has_no_untried_point() -> None:
    space = _space()
    warm = BudgetLineStart(space, 12, dense_violation=1.0 / (1.0 - 0.5 * 0.7) - 1.0)
    study = _run(space, warm, edge=0.7, trials=12)
    ratios = _warm_ratios(study)
    assert warm.done and sorted(r for r in ratios if r >= 0.7) == [0.7, 0.75, 0.8]
    assert len(ratios) < 12 and len(study.trials) == 12  # the sampler took the rest


def test_unreachable_budget_stops_the_aim_after_the_most_pruned_point() -> None:
    space = _space()
    warm = BudgetLineStart(space, 5, dense_violation=2.0)
    study = _run(space, warm, edge=0.95, trials=4)  # even ratio 0.8 misses it
    assert _warm_ratios(study) == [0.8]
    assert warm.done


@pytest.mark.parametrize("violation", [None, -0.2])
def test_without_a_budget_to_aim_at_the_points_are_spread(violation: float | None) -> None:
    space = _space()
    warm = BudgetLineStart(space, 4, dense_violation=violation)
    study = _run(space, warm, edge=0.0, trials=4)
    assert _warm_ratios(study) == [0.2, 0.4, 0.6, 0.8]
