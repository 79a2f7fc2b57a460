"""The objective, the study helpers and the trial loop (real Optuna, real harness)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import optuna
import pytest

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measurement import Measurement
from prunebench.search.objective import (
    SPEC_ATTR,
    SearchObjective,
    SearchSpec,
    constraint_values,
    light_profile,
    strict_profile,
    trial_settle,
)
from prunebench.search.space import SpaceSpec, uniform_params
from prunebench.search.storage import open_storage, storage_url
from prunebench.search.study import create_or_load_study, make_pruner, make_sampler, run_trials

ROOT = Path(__file__).resolve().parents[2]



def _spec(assets: dict[str, str], **kw) -> SearchSpec:
    base = dict(model="test_convnet", dataset="digits", space=SpaceSpec(kind="static"),
                profile=assets["profile"], checkpoint=assets["checkpoint"],
                budgets={"latency_ms": 1000.0})
    return SearchSpec(**{**base, **kw})


def test_spec_round_trip_and_validation(assets: dict[str, str]) -> None:
    spec = _spec(assets, objectives=("accuracy", "macs"), budgets={"macs": 1e6, "params": 5e3})
    assert SearchSpec.from_dict(spec.to_dict()) == spec
    assert spec.directions == ["maximize", "minimize"]
    with pytest.raises(PrunebenchError, match="unknown objective 'speed'; choose among accuracy"):
        _spec(assets, objectives=("accuracy", "speed"))
    with pytest.raises(PrunebenchError, match="unknown budget 'watts'"):
        _spec(assets, budgets={"watts": 3.0})
    with pytest.raises(PrunebenchError, match="must be a positive number"):
        _spec(assets, budgets={"latency_ms": -1.0})
    assert spec.latency_frame == "anchored"
    old = {k: v for k, v in spec.to_dict().items() if k != "latency_frame"}
    assert SearchSpec.from_dict(old).latency_frame == "direct"  # stored before frames existed
    old = {k: v for k, v in spec.to_dict().items() if k != "latency_margin"}
    assert SearchSpec.from_dict(old).latency_margin == 0.0  # stored before margins existed
    with pytest.raises(PrunebenchError, match="latency margin 1.5 must be in"):
        _spec(assets, latency_margin=1.5)


def test_constraints_are_relative_violations() -> None:
    row = {"latency_p50_ms": 3.0, "macs": 500.0}
    cons = constraint_values(row, {"latency_ms": 2.0, "macs": 1000.0})
    assert cons == pytest.approx({"latency_ms": 0.5, "macs": -0.5})
    # latency is judged at the upper end of the p50's confidence interval
    cons = constraint_values({**row, "latency_ci_rel": 0.1}, {"latency_ms": 3.2})
    assert cons["latency_ms"] == pytest.approx(3.3 / 3.2 - 1)
    # or at p50 x (1 + margin) when the margin is the larger one
    cons = constraint_values({**row, "latency_ci_rel": 0.1}, {"latency_ms": 3.2},
                             latency_margin=0.2)
    assert cons["latency_ms"] == pytest.approx(3.6 / 3.2 - 1)
    cons = constraint_values({**row, "latency_ci_rel": 0.1}, {"latency_ms": 3.2},
                             latency_margin=0.2, noise_margin=False)
    assert cons["latency_ms"] == pytest.approx(3.0 / 3.2 - 1)  # re-measurement: the p50 itself
    with pytest.raises(PrunebenchError, match="energy_mj"):
        constraint_values({"energy_mj_per_inference": None}, {"energy_mj": 1.0})


def test_storage_urls(tmp_path: Path) -> None:
    assert storage_url(None, tmp_path) == f"journal:{tmp_path / 'study.journal'}"
    assert storage_url("sqlite:///x.db", tmp_path) == "sqlite:///x.db"
    assert storage_url(str(tmp_path / "j.log"), tmp_path) == f"journal:{tmp_path / 'j.log'}"
    with pytest.raises(PrunebenchError, match="not a known storage URL"):
        storage_url("ftp://host/x", tmp_path)
    assert isinstance(open_storage(f"journal:{tmp_path / 'a.journal'}"),
                      optuna.storages.JournalStorage)
    assert isinstance(open_storage(f"sqlite:///{tmp_path / 'a.db'}"), optuna.storages.RDBStorage)
    with pytest.raises(PrunebenchError, match="unknown sampler 'cmaes'; choose one of tpe"):
        make_sampler("cmaes")
    assert isinstance(make_pruner(1, 2), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner(2, 2), optuna.pruners.NopPruner)
    assert isinstance(make_pruner(1, 2, "sha"), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_pruner(1, 3, "hyperband"), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner(1, 2, "none"), optuna.pruners.NopPruner)
    with pytest.raises(PrunebenchError, match="needs a single objective"):
        make_pruner(2, 2, "sha")
    with pytest.raises(PrunebenchError, match="give --finetune-epochs 2 or more"):
        make_pruner(1, 0, "hyperband")
    with pytest.raises(PrunebenchError, match="unknown pruner 'asha'"):
        make_pruner(1, 2, "asha")


def test_study_is_resumed_and_a_changed_spec_is_named(assets: dict[str, str],
                                                      tmp_path: Path) -> None:
    storage = open_storage(f"journal:{tmp_path / 's.journal'}")
    spec = _spec(assets)
    study, new = create_or_load_study(storage, "s", spec, make_sampler("random", 0))
    assert new and SearchSpec.from_dict(study.user_attrs[SPEC_ATTR]) == spec
    again, new = create_or_load_study(storage, "s", spec, make_sampler("tpe", 0))
    assert not new and again._study_id == study._study_id
    with pytest.raises(PrunebenchError, match=r"budgets: \{'latency_ms': 1000.0\} -> "):
        create_or_load_study(storage, "s", _spec(assets, budgets={"latency_ms": 2.0}),
                             make_sampler("tpe", 0))


def test_first_ctrl_c_stops_after_the_current_trial() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when started as a background job

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            os.kill(os.getpid(), signal.SIGINT)  # handled: the trial still finishes
        return x

    loop = run_trials(study, objective, n_trials=10, timeout=None, objectives=("accuracy",),
                      progress=False)
    assert loop.interrupted and loop.trials == 2
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back


def test_a_failing_trial_is_recorded_and_the_loop_goes_on() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 0:
            trial.set_user_attr("fail_reason", "ValueError: boom")
            raise ValueError("boom")
        return trial.suggest_float("x", 0, 1)

    loop = run_trials(study, objective, n_trials=3, timeout=None, objectives=("accuracy",),
                      progress=False)
    assert loop.trials == 3 and not loop.interrupted
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE"]


def test_strict_profile_takes_more_samples(assets: dict[str, str]) -> None:
    from prunebench.harness.profiles import load_profile

    p = load_profile(assets["profile"])
    s = strict_profile(p, 4.0)
    assert s.timing.min_samples == 4 * p.timing.min_samples
    assert s.timing.target_rel_ci == pytest.approx(p.timing.target_rel_ci / 4)
    assert s.name == p.name


def test_trial_timing_is_light_only_where_no_objective_or_budget_reads_latency(
        assets: dict[str, str]) -> None:
    from prunebench.harness.profiles import load_profile

    macs = dict(objectives=("accuracy", "macs"), budgets={"macs": 1e6})
    assert _spec(assets, **macs).light_timing  # auto: nothing reads the timing
    assert not _spec(assets).light_timing  # a latency budget does
    assert _spec(assets).timing_mode == "full"  # ... without a margin to settle against
    assert _spec(assets, latency_margin=0.1).timing_mode == "settled"
    assert _spec(assets, **macs).timing_mode == "light"
    assert not _spec(assets, objectives=("accuracy", "latency_p90"), budgets={}).light_timing
    assert not _spec(assets, objectives=("accuracy", "energy"), budgets={"energy_mj": 1.0},
                     trial_timing="full").light_timing
    assert _spec(assets, trial_timing="light").light_timing  # asked for, with a latency budget
    assert _spec(assets, objectives=("accuracy", "energy"), budgets={}).light_timing
    spec = _spec(assets, trial_timing="light")
    assert SearchSpec.from_dict(spec.to_dict()) == spec
    # auto is not stored: a spec (and its run folder's name) reads as before trial timings
    assert "trial_timing" not in _spec(assets).to_dict()
    assert SearchSpec.from_dict(_spec(assets, **macs).to_dict()).trial_timing == "auto"
    with pytest.raises(PrunebenchError, match="unknown trial timing 'quick'; choose one of auto"):
        _spec(assets, trial_timing="quick")
    for bad in (dict(latency_margin=0.0), dict(latency_margin=0.1, **macs)):
        with pytest.raises(PrunebenchError, match="trial timing 'settled' needs a latency "
                                                  "budget .* and a latency margin above 0"):
            _spec(assets, trial_timing="settled", **bad)
    spec = _spec(assets, trial_timing="settled", latency_margin=0.1)
    assert SearchSpec.from_dict(spec.to_dict()) == spec and spec.timing_mode == "settled"
    p = load_profile(ROOT / "hw_profiles" / "cpu-1t.toml")
    light = light_profile(p)
    assert light.timing.max_time_s == pytest.approx(p.timing.max_time_s / 4)
    assert light.timing.min_samples == max(10, p.timing.min_samples // 4)
    assert light.timing.target_rel_ci == pytest.approx(p.timing.target_rel_ci * 4)
    assert light.timing.warmup_iters == p.timing.warmup_iters and light.name == p.name


def test_a_settled_trial_is_timed_against_its_budget_over_the_margin(
        assets: dict[str, str]) -> None:
    from prunebench.harness.profiles import load_profile

    p = load_profile(ROOT / "hw_profiles" / "cpu-1t.toml")  # CI target 1%
    spec = _spec(assets, budgets={"latency_ms": 3.3}, latency_margin=0.1)
    # where constraint_values draws the line, at the light timing's CI (4 x 1%)
    settle = trial_settle(spec, p)
    assert (settle.threshold, settle.rel_ci) == (pytest.approx(3.0), pytest.approx(0.04))
    tight = _spec(assets, budgets={"latency_ms": 3.3}, latency_margin=0.02)
    assert trial_settle(tight, p).rel_ci == pytest.approx(0.02)  # never wider than the margin
    assert trial_settle(_spec(assets, trial_timing="full", latency_margin=0.1), p) is None
    assert trial_settle(_spec(assets, budgets={"macs": 1e6}, latency_margin=0.1), p) is None


@pytest.mark.slow
def test_a_trial_far_inside_its_latency_budget_stops_timing_once_settled(
        assets: dict[str, str], tmp_path: Path) -> None:
    from prunebench.harness.profiles import load_profile

    # a CI target (0.25%) this machine does not reach on a tiny network before the settle's
    # (1%): the trial stops when its p50 is known to be below 1000 / 1.5 ms, not at the cap
    timing = dict(name='"settle-1t"', warmup_iters=1, min_samples=5, min_time_s=0.0,
                  max_time_s=5.0, target_rel_ci=0.0025)
    text = (ROOT / "hw_profiles" / "cpu-1t.toml").read_text()
    for key, value in timing.items():
        text = "\n".join(f"{key} = {value}" if line.split("=")[0].strip() == key else line
                         for line in text.splitlines())
    (tmp_path / "settle-1t.toml").write_text(text + "\n")
    assert load_profile(tmp_path / "settle-1t.toml").timing.target_rel_ci == 0.0025
    spec = _spec(assets, profile=str(tmp_path / "settle-1t.toml"), latency_margin=0.5)
    objective = SearchObjective(spec)
    assert objective.trial_settle is not None and objective.trial_settle.rel_ci == 0.01
    study = optuna.create_study(directions=spec.directions)
    study.enqueue_trial(uniform_params(objective.space, 0.5))
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state.name == "COMPLETE" and trial.user_attrs["trial_timing"] == "settled"
    assert trial.user_attrs["latency_ci_rel"] <= 0.01
    assert trial.user_attrs["latency_p50_ms"] * 1.01 < 1000.0 / 1.5


@pytest.mark.slow
def test_a_macs_search_times_its_trials_light(assets: dict[str, str]) -> None:
    spec = _spec(assets, objectives=("accuracy", "macs"), budgets={"macs": 1e9})
    objective = SearchObjective(spec)
    assert objective.trial_profile.timing.max_time_s == pytest.approx(
        objective.profile.timing.max_time_s / 4)
    study = optuna.create_study(directions=spec.directions)
    study.enqueue_trial(uniform_params(objective.space, 0.5))
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state.name == "COMPLETE" and trial.user_attrs["trial_timing"] == "light"
    assert trial.user_attrs["latency_p50_ms"] > 0  # still a real timing, reported


@pytest.mark.slow
def test_trial_stores_every_measurement_field_and_constraints(assets: dict[str, str]) -> None:
    spec = _spec(assets, budgets={"latency_ms": 1000.0, "params": 10.0},
                 space=SpaceSpec(kind="static", round_to=8))
    objective = SearchObjective(spec)
    study = optuna.create_study(directions=spec.directions,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_user_attr(SPEC_ATTR, spec.to_dict())
    study.enqueue_trial(uniform_params(objective.space, 0.5))
    study.enqueue_trial(uniform_params(objective.space, 0.75))  # round_to 8: removes all of conv1
    study.optimize(objective, n_trials=2, catch=(Exception,))
    ok, bad = study.trials
    assert ok.state.name == "COMPLETE" and ok.user_attrs["trial_timing"] == "full"
    m = Measurement.from_dict(ok.user_attrs)
    assert m.accuracy_split == "val" and m.latency_p50_ms > 0 and m.method == "l1"
    assert m.config["ratios"] == {"conv1": 0.5, "conv2": 0.5, "conv3": 0.5}
    assert set(Measurement.__dataclass_fields__) - {"latency_samples_ms"} <= set(ok.user_attrs)
    assert ok.values == [m.accuracy_top1, m.latency_p50_ms]
    assert ok.constraints["latency_ms"] < 0 < ok.constraints["params"]  # params budget 10: over
    assert bad.state.name == "FAIL"
    assert "would remove all 8 channels of 'conv1'" in bad.user_attrs["fail_reason"]
    rebuilt = SearchObjective.from_study(study, prepared=objective.prepared)
    assert rebuilt.space == objective.space


@pytest.mark.slow
def test_single_objective_finetune_reports_intermediate_accuracy(assets: dict[str, str]) -> None:
    spec = _spec(assets, objectives=("accuracy",),
                 space=SpaceSpec(kind="static", finetune_epochs=1))
    objective = SearchObjective(spec)
    study = optuna.create_study(directions=spec.directions,
                                pruner=make_pruner(1, spec.space.finetune_epochs))
    study.enqueue_trial(uniform_params(objective.space, 0.25))
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert list(trial.intermediate_values) == [1]  # the step is the epochs done (fidelity)
    assert trial.user_attrs["val_accuracy_epoch_0"] == trial.intermediate_values[1]
    assert trial.user_attrs["fidelity_epochs"] == 1
    assert trial.user_attrs["config"] and '"finetune_epochs": 1' in trial.user_attrs["config"]
