"""Multi-fidelity fine-tuning: an Optuna pruner (successive halving) stops a hopeless trial
after its first fine-tune epoch, and the trial is recorded PRUNED with its last accuracy and its
fidelity; ``--pruner`` refusals exit 2."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from prunebench.harness.errors import PrunebenchError
from prunebench.search.cli import main
from prunebench.search.objective import SearchObjective, SearchSpec
from prunebench.search.space import SpaceSpec, uniform_params
from prunebench.search.study import make_pruner, run_trials


def _spec(assets: dict[str, str], **kw) -> SearchSpec:
    base = dict(model="test_convnet", dataset="digits", profile=assets["profile"],
                checkpoint=assets["checkpoint"], objectives=("accuracy",),
                space=SpaceSpec(kind="static", finetune_epochs=2), budgets={"latency_ms": 1e3},
                pruner="sha")
    return SearchSpec(**{**base, **kw})


@pytest.mark.slow
def test_successive_halving_stops_a_hopeless_trial_after_its_first_epoch(
        assets: dict[str, str], trained: str) -> None:
    spec = _spec(assets, checkpoint=trained)
    objective = SearchObjective(spec)
    study = optuna.create_study(directions=spec.directions,
                                pruner=make_pruner(1, 2, spec.pruner),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for ratio in (0.0, 0.0, 0.0, 0.8):  # the last one keeps a fifth of every layer
        study.enqueue_trial(uniform_params(objective.space, ratio))
    run_trials(study, objective, n_trials=4, timeout=None, objectives=spec.objectives,
               progress=False)
    first, *_, hopeless = study.trials
    assert first.state.name == "COMPLETE" and first.user_attrs["fidelity_epochs"] == 2
    assert list(first.intermediate_values) == [1, 2]
    assert hopeless.state.name == "PRUNED"
    assert list(hopeless.intermediate_values) == [1]  # stopped after the first epoch
    assert hopeless.value == hopeless.intermediate_values[1]  # recorded with its last accuracy
    assert hopeless.user_attrs["last_val_accuracy"] == hopeless.value
    assert hopeless.user_attrs["fidelity_epochs"] == 1
    assert hopeless.value < first.user_attrs["val_accuracy_epoch_0"]
    assert "latency_p50_ms" not in hopeless.user_attrs  # never timed: not a front point


def test_spec_refuses_a_pruner_that_cannot_work(assets: dict[str, str]) -> None:
    with pytest.raises(PrunebenchError, match="needs a single objective"):
        _spec(assets, objectives=("accuracy", "latency_p50"))
    with pytest.raises(PrunebenchError, match="stops trials between fine-tune epochs"):
        _spec(assets, space=SpaceSpec(kind="static"))
    spec = _spec(assets, pruner="hyperband")
    assert SearchSpec.from_dict(spec.to_dict()) == spec
    assert "pruner" not in _spec(assets, pruner="auto").to_dict()  # older specs read the same


@pytest.mark.parametrize("extra, message", [
    (["--pruner", "asha", "--objectives", "accuracy", "--finetune-epochs", "2"],
     "unknown pruner 'asha'; choose one of auto, none, median, sha, hyperband"),
    (["--pruner", "sha", "--finetune-epochs", "2"], "--pruner sha needs a single objective"),
    (["--pruner", "hyperband", "--objectives", "accuracy"], "give --finetune-epochs 2 or more"),
])
def test_bad_pruner_settings_exit_2(tmp_path: Path, capsys, extra: list[str],
                                    message: str) -> None:
    code = main(["search", "--model", "test_convnet", "--dataset", "digits", "--trials", "1",
                 "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
