"""The study's cost models and the budget projection (search.latency_model), on real networks
and real Optuna studies, with synthetic latencies where a known answer is needed."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch

from prunebench.harness.measure.flops import count_macs
from prunebench.harness.models import create_model
from prunebench.harness.pruning import DENSE, PruneContext, pipeline
from prunebench.search.latency_model import (
    ACTIVATIONS,
    GAP_AIM_ATTR,
    GAP_INSET,
    GAP_RETRY_DISCOUNT,
    LEVEL,
    LEVEL_MIN,
    LEVEL_STEP,
    MIN_PER_LAYER_POINTS,
    MODELS_ATTR,
    PROPOSAL_ATTR,
    BudgetProjection,
    CostModel,
    CostTable,
    FrontGap,
    MeasuredFront,
    ProjectingSampler,
    error_summary,
    fit_cost_model,
    front_gaps,
    mac_fraction,
    measured_front,
    refit_models,
    stored_models,
)
from prunebench.search.space import SearchSpace, SpaceSpec, uniform_params

X = torch.randn(1, 1, 32, 32)


def _static(model_name: str = "test_resnet", **kw) -> tuple[torch.nn.Module, SearchSpace,
                                                             CostTable]:
    model = create_model(model_name, 10, 1).eval()
    space = SearchSpace.build(SpaceSpec(kind="static", **kw), model, X)
    return model, space, CostTable(space, model, X)


def _configs(space: SearchSpace, n: int, seed: int = 0) -> list:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.suggest(study.ask()).record for _ in range(n)]


def _synthetic(table: CostTable, heavy: str):
    """A latency that is affine in MACs with one layer 4x as slow per MAC as the rest."""
    def latency(config) -> float:
        f = table.features(config)
        return 0.3 + 2.0 * mac_fraction(f) + 6.0 * f[heavy]
    return latency


@pytest.mark.parametrize("round_to", [None, 2])
def test_counted_macs_and_params_equal_the_cut_network(round_to: int | None) -> None:
    model, space, table = _static(round_to=round_to)
    for config in _configs(space, 6):
        net = pipeline.build(model, config, PruneContext(X))
        assert table.macs(config) == pytest.approx(count_macs(net, X).macs, abs=0.5)
        assert table.params(config) == pytest.approx(sum(p.numel() for p in net.parameters()),
                                                     abs=0.5)
    assert table.macs(DENSE) == pytest.approx(count_macs(model, X).macs)


def test_fit_recovers_a_known_per_layer_latency() -> None:
    _, space, table = _static()
    truth = _synthetic(table, "layer3.0.conv2")
    train, held = _configs(space, 30, seed=1), _configs(space, 10, seed=2)
    fitted = fit_cost_model("latency_p50_ms", [(table.features(c), truth(c)) for c in train],
                            table.names)
    assert fitted.kind == "fitted" and fitted.n_points == 30 and fitted.ridge is not None
    for c in held:
        assert fitted.predict(table, c) == pytest.approx(truth(c), rel=0.02)
    # the MAC-proportional line alone misses the heavy layer by more than that
    line = fit_cost_model("latency_p50_ms", [(table.features(c), truth(c))
                                             for c in train[:MIN_PER_LAYER_POINTS - 1]],
                          table.names)
    assert line.deltas == {} and line.ridge is None
    worst = max(abs(line.predict(table, c) / truth(c) - 1) for c in held)
    assert worst > 0.02


def test_few_points_fit_the_affine_line_and_one_point_the_mac_proportional_prior() -> None:
    _, space, table = _static()
    configs = _configs(space, 4, seed=3)
    points = [(table.features(c), 0.5 + 3.0 * mac_fraction(table.features(c))) for c in configs]
    line = fit_cost_model("latency_p50_ms", points, table.names)
    assert line.intercept == pytest.approx(0.5) and line.scale == pytest.approx(3.0)
    prior = fit_cost_model("latency_p50_ms", [(table.features(DENSE), 4.0)], table.names)
    assert prior.intercept == 0.0 and prior.predict(table, DENSE) == pytest.approx(4.0)
    half = configs[0]
    assert prior.predict(table, half) == pytest.approx(4.0 * table.macs(half) / table.dense_macs)
    assert fit_cost_model("latency_p50_ms", [], table.names) is None


def _outputs(net: torch.nn.Module) -> int:
    """Output elements of every conv and linear layer of ``net`` for one input ``X``."""
    seen: list[int] = []
    hooks = [m.register_forward_hook(lambda mod, a, y: seen.append(y.numel()))
             for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    with torch.inference_mode():
        net.eval()(X)
    for h in hooks:
        h.remove()
    return sum(seen)


def test_the_activation_feature_is_the_cut_networks_share_of_layer_outputs() -> None:
    model, space, table = _static()
    dense = _outputs(model)
    assert table.features(DENSE)[ACTIVATIONS] == pytest.approx(1.0)
    for config in _configs(space, 5, seed=7):
        net = pipeline.build(model, config, PruneContext(X))
        assert table.features(config)[ACTIVATIONS] == pytest.approx(_outputs(net) / dense)
        assert table.macs(config) == pytest.approx(count_macs(net, X).macs, abs=0.5)


def test_uniform_points_alone_separate_macs_from_activations() -> None:
    """A latency with a memory-bound part (per element written) and a compute part (per MAC):
    the warm start's uniform points tell them apart, so shapes far from uniform are predicted;
    the MAC line fitted on the same points misses them."""
    _, space, table = _static("resnet20")

    def truth(config) -> float:
        f = table.features(config)
        return 0.2 + 1.5 * mac_fraction(f) + 1.0 * f[ACTIVATIONS]

    uniform = [DENSE] + [space.config(uniform_params(space, r, 1.0)).record
                         for r in (0.2, 0.4, 0.6, 0.8)]
    fitted = fit_cost_model("latency_p50_ms", [(table.features(c), truth(c)) for c in uniform],
                            table.names)
    assert (fitted.intercept, fitted.scale, fitted.activations) == pytest.approx((0.2, 1.5, 1.0))
    line = fit_cost_model("latency_p50_ms", [
        ({k: v for k, v in table.features(c).items() if k != ACTIVATIONS}, truth(c))
        for c in uniform], table.names)
    assert line.activations == 0.0
    shapes = _configs(space, 12, seed=8)
    for c in shapes:
        assert fitted.predict(table, c) == pytest.approx(truth(c), rel=1e-6)
    assert max(abs(line.predict(table, c) / truth(c) - 1) for c in shapes) > 0.03


def test_a_fitted_cost_has_no_negative_part() -> None:
    _, space, table = _static()
    configs = [DENSE, *_configs(space, 5, seed=9)]
    # more work per MAC, less per element written: not a cost; the fit keeps both >= 0
    points = [(table.features(c), 1.0 + 3.0 * mac_fraction(table.features(c))
               - 0.5 * table.features(c)[ACTIVATIONS]) for c in configs]
    fitted = fit_cost_model("latency_p50_ms", points, table.names)
    assert fitted.scale >= 0 and fitted.activations >= 0 and fitted.intercept >= 0
    assert fitted.activations == 0.0 and fitted.scale > 0


@pytest.mark.parametrize("level", [1.0, 0.7])
def test_projection_lands_the_predicted_latency_within_the_margin(level: float) -> None:
    _, space, table = _static("resnet20")
    truth = _synthetic(table, "layer3.2.conv2")
    model = fit_cost_model("latency_p50_ms", [(table.features(c), truth(c))
                                              for c in _configs(space, 40, seed=4)],
                           table.names)
    margin = 0.1
    budget = 0.6 * truth(DENSE)
    projection = BudgetProjection(space, table, {"latency_ms": budget}, margin)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    for _ in range(8):
        trial = study.ask()
        proposal = {**{n: trial.suggest_float(n, d.low, d.high, step=d.step)
                       for n, d in space.distributions().items()}, LEVEL: level}
        models = {"latency_ms": model}
        (target,) = projection.aim(proposal, models).values()
        if level == 1.0:
            assert target == pytest.approx(budget / (1 + margin))
        projected = projection.project(proposal, models)
        predicted = model.predict(table, space.config(projected).record)
        assert target * (1 - margin) <= predicted <= target
        dist = space.distributions()
        for name in space.param_names():  # on the step grid, so Optuna takes them
            assert dist[name]._contains(dist[name].to_internal_repr(projected[name]))
        study.tell(trial, 0.0)


def test_projection_meets_every_budget_and_scales_the_proposed_shape() -> None:
    _, space, table = _static("resnet20")
    macs_budget = 0.5 * table.dense_macs
    params_budget = 0.6 * table.dense_params
    projection = BudgetProjection(space, table, {"macs": macs_budget, "params": params_budget})
    counted = {"macs": CostModel("macs", "counted"), "params": CostModel("params", "counted")}
    shape = uniform_params(space, 0.1) | {space.groups[-1]: 0.4}  # one group pruned 4x more
    projected = projection.project(shape, counted)
    config = space.config(projected).record
    assert table.macs(config) <= macs_budget and table.params(config) <= params_budget
    ratios = [projected[g] for g in space.groups]
    assert projected[space.groups[-1]] == max(ratios) > min(ratios)  # the shape is kept
    # the least pruned that fits: one grid step less on every unsaturated group does not
    less = {**projected, **{g: round(projected[g] - 0.05, 6) for g in space.groups
                            if 0 < projected[g] < 0.8}}
    lighter = space.config(less).record
    assert table.macs(lighter) > macs_budget or table.params(lighter) > params_budget


def test_low_levels_aim_inside_each_shapes_reach_not_at_one_cheapest_point() -> None:
    # a level is a position between the shape's cheapest point and the budget: two shapes at a
    # low level give two different configurations, each between its floor and the budget
    # (a level taken as a fraction of the budget made both the all-most-pruned network)
    _, space, table = _static("resnet20")
    macs = {"macs": CostModel("macs", "counted")}
    most = table.macs(space.config(uniform_params(space, space.spec.max_ratio)).record)
    budget = 3.0 * most  # LEVEL_MIN x budget is below the cheapest point
    projection = BudgetProjection(space, table, {"macs": budget})
    got = []
    for heavy in (space.groups[0], space.groups[-1]):
        shape = uniform_params(space, 0.1) | {heavy: 0.5, LEVEL: LEVEL_MIN}
        (aim,) = projection.aim(shape, macs).values()
        config = space.config(projection.project(shape, macs)).record
        assert most <= aim < budget and table.macs(config) <= aim
        got.append(config.key)
    assert got[0] != got[1]


def test_front_gaps_of_known_points() -> None:
    # dominated points and points over the target are not on the front; the last gap runs
    # to the target, as high as the ceiling lies above the most accurate point
    points = [(3.0, 0.6), (1.0, 0.2), (2.0, 0.1), (5.0, 0.9), (6.0, 0.85), (12.0, 0.95)]
    gaps = front_gaps(points, target=10.0, ceiling=0.97)
    assert [(g.low, g.high) for g in gaps] == [(1.0, 3.0), (3.0, 5.0), (5.0, 10.0)]
    assert [g.area for g in gaps] == pytest.approx([0.8, 0.6, 0.35])
    last = front_gaps(points, target=10.0, ceiling=0.9)[-1]  # nothing above the best point
    assert (last.low, last.high) == (3.0, 5.0) and isinstance(last, FrontGap)
    assert front_gaps([(1.0, 0.5)], target=10.0, ceiling=0.5) == []
    # below the cheapest cost a proposal can reach, a gap is cut (area in proportion) or gone
    cut = front_gaps(points, target=10.0, ceiling=0.97, floor=2.0)
    assert [(g.low, g.high) for g in cut] == [(2.0, 3.0), (3.0, 5.0), (5.0, 10.0)]
    assert [g.area for g in cut] == pytest.approx([0.4, 0.6, 0.35])
    assert [(g.low, g.high) for g in front_gaps(points, 10.0, 0.97, floor=5.0)] == [(5.0, 10.0)]


def _macs_front(space: SearchSpace, table: CostTable, budget: float,
                points: list[tuple[float, float]], ceiling: float):
    macs = {"macs": CostModel("macs", "counted")}
    return (BudgetProjection(space, table, {"macs": budget}), macs,
            MeasuredFront(tuple(({"macs": c}, a) for c, a in points), ceiling))


def test_gap_aim_lands_a_proposal_in_the_fronts_largest_gap() -> None:
    _, space, table = _static("resnet20")
    dense = table.dense_macs
    floor = table.macs(space.config(uniform_params(space, space.spec.max_ratio)).record)
    budget = 0.7 * dense
    # the knee (the floor to 0.5x) is the largest gap; a narrower one lies above it
    projection, macs, front = _macs_front(space, table, budget, [
        (floor, 0.1), (0.5 * dense, 0.8), (0.65 * dense, 0.9)], ceiling=0.92)
    shape = {n: 0.5 for n in space.param_names()}
    rng = np.random.default_rng(0)
    for _ in range(5):
        aim = projection.gap_aim(shape, macs, front, rng)
        assert aim.key == "macs" and (aim.gap.low, aim.gap.high) == (floor, 0.5 * dense)
        width = aim.gap.high - aim.gap.low
        assert aim.gap.low + GAP_INSET * width <= aim.cost <= aim.gap.high - GAP_INSET * width
        # the level (on its grid) is the aimed cost's place between the floor and the budget
        assert aim.level == pytest.approx((aim.cost - floor) / (budget - floor), abs=LEVEL_STEP)
        config = space.config(projection.project(shape | {LEVEL: aim.level}, macs)).record
        (target,) = projection.aim(shape | {LEVEL: aim.level}, macs).values()
        assert table.macs(config) <= target <= aim.cost + LEVEL_STEP * (budget - floor)
        assert table.macs(config) > aim.gap.low  # inside the gap, not at its cheap end
    # with one feasible point and nothing more accurate measured there is no gap to aim at
    _, _, lone = _macs_front(space, table, budget, [(0.5 * dense, 0.8)], ceiling=0.8)
    assert projection.gap_aim(shape, macs, lone) is None


def test_gap_aim_passes_over_a_gap_earlier_aims_left_as_it_was() -> None:
    _, space, table = _static("resnet20")
    dense = table.dense_macs
    floor = table.macs(space.config(uniform_params(space, space.spec.max_ratio)).record)
    points = [(floor, 0.1), (0.5 * dense, 0.8), (0.65 * dense, 0.9)]
    projection, macs, front = _macs_front(space, table, 0.7 * dense, points, ceiling=0.92)
    shape = {n: 0.5 for n in space.param_names()}
    knee = projection.gap_aim(shape, macs, front).gap  # the largest gap, as above
    assert (knee.start, knee.high) == (floor, 0.5 * dense)
    areas = sorted((g.area for g in front_gaps(points, 0.7 * dense, 0.92, floor)), reverse=True)
    # enough failed aims that its discounted area falls below the next gap's
    tries = next(n for n in range(1, 20) if areas[0] * GAP_RETRY_DISCOUNT ** n < areas[1])
    failed = MeasuredFront(front.points, front.ceiling,
                           (("macs", knee.start, knee.high),) * tries)
    assert failed.tries("macs", knee) == tries
    moved = projection.gap_aim(shape, macs, failed).gap
    assert not moved.same(knee.start, knee.high) and moved.area == pytest.approx(areas[1])
    # one fewer and the knee is still the one; aims on another key or gap do not count
    fewer = MeasuredFront(front.points, front.ceiling, failed.aims[1:] + (
        ("latency_ms", knee.start, knee.high), ("macs", knee.start, 0.6 * dense)))
    assert fewer.tries("macs", knee) == tries - 1
    assert projection.gap_aim(shape, macs, fewer).gap.same(knee.start, knee.high)


def test_measured_front_reads_the_aims_of_complete_trials() -> None:
    trials = []
    for state, aim in (("COMPLETE", {"key": "macs", "low": 2.0, "high": 5.0, "start": 1.0,
                                     "cost": 3.0}),
                       ("COMPLETE", {"key": "macs", "low": 2.0, "high": 5.0, "cost": 3.0}),
                       ("FAIL", {"key": "macs", "low": 9.0, "high": 9.5, "cost": 9.2})):
        t = optuna.trial.create_trial(state=optuna.trial.TrialState[state],
                                      value=None if state == "FAIL" else 0.0,
                                      user_attrs={"accuracy_top1": 0.5, "macs": 4.0,
                                                  GAP_AIM_ATTR: aim})
        t.set_constraint("macs", -0.1)
        trials.append(t)
    # a record without "start" (before it was kept) is read at its low end
    assert measured_front(trials, ["macs"]).aims == (("macs", 1.0, 5.0), ("macs", 2.0, 5.0))


def test_measured_front_keeps_feasible_complete_trials() -> None:
    trials = []
    for acc, macs, violation, state in ((0.9, 5.0, -0.1, "COMPLETE"), (0.95, 9.0, 0.2,
                                        "COMPLETE"), (0.99, 2.0, -0.5, "FAIL")):
        t = optuna.trial.create_trial(state=optuna.trial.TrialState[state],
                                      value=None if state == "FAIL" else 0.0,
                                      user_attrs={"accuracy_top1": acc, "macs": macs})
        t.set_constraint("macs", violation)
        trials.append(t)
    front = measured_front(trials, ["macs"])
    assert front.points == (({"macs": 5.0}, 0.9),) and front.ceiling == 0.95


def test_the_sampler_aims_drawn_levels_into_the_gap_but_keeps_a_proposals_level() -> None:
    _, space, table = _static("resnet20")
    dense = table.dense_macs
    floor = table.macs(space.config(uniform_params(space, space.spec.max_ratio)).record)
    projection, macs, _ = _macs_front(space, table, 0.7 * dense, [], 0.0)
    sampler = ProjectingSampler(optuna.samplers.RandomSampler(seed=1), projection,
                                lambda s: macs)
    study = optuna.create_study(study_name="gaps", sampler=sampler)
    for cost, acc in ((floor, 0.1), (0.5 * dense, 0.8), (0.65 * dense, 0.9)):
        t = optuna.trial.create_trial(value=acc, user_attrs={"accuracy_top1": acc,
                                                             "macs": cost})
        t.set_constraint("macs", cost / (0.7 * dense) - 1.0)
        study.add_trial(t)
    study.enqueue_trial({}, user_attrs={PROPOSAL_ATTR: {LEVEL: 1.0, **uniform_params(
        space, 0.3)}})

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float(LEVEL, 0.0, 1.0, step=LEVEL_STEP)
        return table.macs(space.suggest(trial).record)

    study.optimize(objective, n_trials=4)
    proposal, *drawn = study.trials[3:]
    assert proposal.params[LEVEL] == 1.0 and proposal.number not in sampler.aims
    for t in drawn:
        aim = sampler.aims[t.number]
        # the knee, cut at the drawn shape's cheapest point (a shape that spares a layer
        # cannot reach the uniform floor)
        assert aim.gap.high == 0.5 * dense and floor <= aim.gap.low < 0.5 * dense
        assert t.params[LEVEL] == aim.level and aim.gap.low < t.value <= aim.cost + \
            LEVEL_STEP * (0.7 * dense - floor)
    assert len({sampler.aims[t.number].cost for t in drawn}) == 3  # placed apart by the rng


def test_projecting_sampler_stores_projected_params_and_leaves_enqueued_ones() -> None:
    _, space, table = _static()
    truth = _synthetic(table, "layer3.0.conv2")
    budget = 0.6 * truth(DENSE)
    projection = BudgetProjection(space, table, {"latency_ms": budget}, 0.1)
    model = fit_cost_model("latency_p50_ms", [(table.features(c), truth(c))
                                              for c in _configs(space, 20, seed=6)],
                           table.names)
    base = optuna.samplers.TPESampler(seed=0, multivariate=True, n_startup_trials=3)
    study = optuna.create_study(sampler=ProjectingSampler(base, projection,
                                                          lambda s: {"latency_ms": model}))
    study.enqueue_trial(uniform_params(space, 0.0))
    evaluated = {}

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float(LEVEL, 0.0, 1.0, step=LEVEL_STEP)
        config = space.suggest(trial).record
        evaluated[trial.number] = config
        return truth(config)

    study.optimize(objective, n_trials=10)
    first, *rest = study.trials
    assert all(first.params[g] == 0.0 for g in space.groups)  # enqueued: not projected
    for t in rest:
        assert space.config(t.params).record == evaluated[t.number]  # params = what ran
        aim = projection.aim(t.params, {"latency_ms": model})["latency_ms"]
        assert model.predict(table, evaluated[t.number]) <= aim <= budget / 1.1


def test_models_are_stored_in_the_study_and_errors_summarised() -> None:
    _, space, table = _static()
    truth = _synthetic(table, "layer3.0.conv2")
    study = optuna.create_study()
    for config in _configs(space, 3, seed=7):
        row = {"latency_p50_ms": truth(config), "macs": table.macs(config)}
        study.add_trial(optuna.trial.create_trial(
            value=0.0, user_attrs={"config": config.to_json(), **row,
                                   "model_error_latency_p50_ms": 0.1 * len(study.trials)}))
    dense = {"latency_p50_ms": truth(DENSE)}
    models = refit_models(study, table, {"latency_ms": 1.0, "macs": 1e5}, [(DENSE, dense)])
    assert models["macs"].kind == "counted" and models["latency_ms"].n_points == 4
    assert study.user_attrs[MODELS_ATTR]["latency_ms"]["n_points"] == 4
    again = stored_models(study)  # what another worker reads
    assert again == models
    assert again["latency_ms"] == CostModel.from_dict(models["latency_ms"].to_dict())
    assert error_summary(study.trials) == {"latency_p50_ms": pytest.approx(0.1)}


@pytest.mark.slow
def test_a_search_records_predictions_errors_and_stores_its_models(
        assets: dict[str, str], tmp_path) -> None:
    from prunebench.search.runs.search_run import run_search

    dense_macs = CostTable(*_convnet_space()).dense_macs
    result = run_search(model="test_convnet", dataset="digits", profile=assets["profile"],
                        checkpoint=assets["checkpoint"], budget_ms=1000.0, trials=6,
                        warm_start=2, out=tmp_path / "run", progress=False,
                        macs_budget=0.6 * dense_macs)
    done = result.trials[result.trials["state"] == "COMPLETE"]
    assert len(done) == 6
    assert done["predicted_macs"].tolist() == pytest.approx(done["macs"].tolist())  # counted
    assert done["model_error_latency_p50_ms"].notna().all()
    sampled = done[done["prunebench_warm_start_t"].isna()]
    assert (sampled["macs"] <= 0.6 * dense_macs).all()
    summary = result.summary
    assert summary["budget_projection"] is True
    assert summary["latency_model_error_median"] == pytest.approx(
        done["model_error_latency_p50_ms"].abs().median())
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "run" / "study.journal")))
    study = optuna.load_study(study_name="run", storage=storage)
    models = stored_models(study)
    assert models["macs"].kind == "counted" and models["latency_ms"].n_points == 7  # + dense


def _convnet_space() -> tuple[SearchSpace, torch.nn.Module, torch.Tensor]:
    model = create_model("test_convnet", 10, 1).eval()
    return SearchSpace.build(SpaceSpec(kind="static"), model, X), model, X
