"""Search spaces: parameter names, trial -> config, validation of names."""

from __future__ import annotations

import optuna
import pytest
import torch

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.models import create_model
from prunebench.harness.pruning import METHODS
from prunebench.search.space import CRITERION, FINETUNE, SearchSpace, SpaceSpec, uniform_params

X = torch.randn(1, 1, 32, 32)


def _dynamic_name() -> str | None:
    names = [n for n in METHODS.list() if METHODS.metadata(n)["kind"] == "dynamic"]
    return names[0] if names else None


def _study() -> optuna.Study:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))


def test_static_space_one_param_per_coupled_group() -> None:
    model = create_model("test_resnet", 10, 1)
    space = SearchSpace.build(SpaceSpec(kind="static"), model, X)
    assert space.groups[0] == "conv1" and "layer1.0.conv1" in space.groups
    trial = _study().ask()
    chosen = space.suggest(trial)
    assert set(trial.params) == set(space.groups)  # names read as a per-layer table
    assert chosen.static is not None and chosen.dynamic is None
    assert chosen.static.method == "l1"
    assert chosen.static.ratios == pytest.approx({g: trial.params[g] for g in space.groups})
    assert all(0.0 <= r <= 0.8 + 1e-9 for r in chosen.static.ratios.values())
    assert chosen.record.ratios == chosen.static.ratios


def test_ratios_are_on_the_step_grid() -> None:
    model = create_model("test_convnet", 10, 1)
    space = SearchSpace.build(SpaceSpec(kind="static", max_ratio=0.72, ratio_step=0.1), model, X)
    study = _study()
    for _ in range(10):
        chosen = space.suggest(study.ask())
        for r in chosen.static.ratios.values():
            assert r <= 0.7 + 1e-9 and abs(r * 10 - round(r * 10)) < 1e-6


def test_criterion_and_finetune_are_searched_when_asked() -> None:
    model = create_model("test_convnet", 10, 1)
    spec = SpaceSpec(kind="static", static_methods=("l1", "fpgm"), finetune_epochs=3,
                     search_finetune=True)
    space = SearchSpace.build(spec, model, X)
    trial = _study().ask()
    chosen = space.suggest(trial)
    assert trial.params[CRITERION] in ("l1", "fpgm")
    assert 0 <= trial.params[FINETUNE] <= 3
    assert chosen.static.method == trial.params[CRITERION]
    assert chosen.finetune_epochs == trial.params[FINETUNE]
    assert chosen.record.finetune_epochs == chosen.finetune_epochs
    # the pipeline's recovery stage fine-tunes, not the static method's own recovery
    assert chosen.static.finetune_epochs == 0 and "finetune_epochs" not in chosen.static.options


def test_config_from_stored_params_matches_suggestion() -> None:
    model = create_model("test_convnet", 10, 1)
    space = SearchSpace.build(SpaceSpec(kind="static"), model, X)
    study = _study()
    trial = study.ask()
    chosen = space.suggest(trial)
    assert space.config(dict(trial.params)) == chosen
    with pytest.raises(PrunebenchError, match="lack"):
        space.config({})


def test_uniform_params_enqueue_a_uniform_config() -> None:
    model = create_model("test_convnet", 10, 1)
    space = SearchSpace.build(SpaceSpec(kind="static"), model, X)
    study = _study()
    study.enqueue_trial(uniform_params(space, 0.5))
    chosen = space.suggest(study.ask())
    assert set(chosen.static.ratios.values()) == {0.5}


@pytest.mark.skipif(_dynamic_name() is None, reason="no dynamic method registered yet")
def test_dynamic_and_hybrid_param_names() -> None:
    model = create_model("test_convnet", 10, 1)
    dyn = _dynamic_name()
    space = SearchSpace.build(SpaceSpec(kind="dynamic", dynamic_method=dyn), model, X)
    trial = _study().ask()
    chosen = space.suggest(trial)
    assert set(trial.params) == set(space.gated)
    assert chosen.static is None and chosen.dynamic.keep == dict(trial.params)
    hybrid = SearchSpace.build(SpaceSpec(kind="hybrid", dynamic_method=dyn), model, X)
    trial = _study().ask()
    chosen = hybrid.suggest(trial)
    assert {p.split("/")[0] for p in trial.params} == {"ratio", "keep"}
    assert chosen.record.static_method == "l1" and chosen.record.options == {}
    assert chosen.record.ratios and chosen.record.keep
    assert chosen.static.ratios == chosen.record.ratios
    assert chosen.dynamic.keep == chosen.record.keep


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "sparse"}, "unknown search space 'sparse'; choose one of static, dynamic, hybrid"),
    ({"static_methods": ("nope",)}, "unknown static pruning method 'nope'; choose one of"),
    ({"static_methods": ("dense",)}, "unknown static pruning method 'dense'"),
    ({"kind": "dynamic", "dynamic_method": "l1"}, "unknown dynamic pruning method 'l1'"),
    ({"max_ratio": 1.0}, "max ratio"),
    ({"finetune_epochs": -1}, "negative"),
])
def test_bad_names_raise_with_choices(kwargs: dict, match: str) -> None:
    with pytest.raises(PrunebenchError, match=match):
        SpaceSpec(**kwargs)


def test_spec_round_trips_through_json() -> None:
    spec = SpaceSpec(kind="static", static_methods=("l1", "fpgm"), round_to=2)
    assert SpaceSpec.from_dict(spec.to_dict()) == spec


def test_warm_start_spreads_uniform_configs_on_the_grid() -> None:
    from prunebench.search.space import warm_start_params

    model = create_model("test_convnet", 10, 1)
    space = SearchSpace.build(SpaceSpec(kind="static", max_ratio=0.8), model, X)
    params = warm_start_params(space, 4)
    assert [p["conv1"] for p in params] == [0.2, 0.4, 0.6, 0.8]  # up to the most pruned end
    assert all(len(set(p.values())) == 1 for p in params)
    study = _study()
    for p in params:
        study.enqueue_trial(p)
    assert space.suggest(study.ask()).static.ratios == {"conv1": 0.2, "conv2": 0.2, "conv3": 0.2}


def test_round_to_is_a_searched_dimension_of_the_static_space() -> None:
    from prunebench.search.space import ROUND_TO

    model = create_model("test_resnet", 10, 1)
    spec = SpaceSpec(kind="static", round_to_choices=(1, 4, 8))
    space = SearchSpace.build(spec, model, X)
    study = _study()
    seen = set()
    for _ in range(12):
        trial = study.ask()
        chosen = space.suggest(trial)
        assert chosen.static.options == {"round_to": trial.params[ROUND_TO]}
        seen.add(trial.params[ROUND_TO])
        study.tell(trial, 0.0)
    assert seen <= {1, 4, 8} and len(seen) >= 2
    assert SpaceSpec.from_dict(spec.to_dict()) == spec
    assert "round_to_choices" not in SpaceSpec(kind="static").to_dict()  # old studies read alike


def test_round_to_settings_resolve_one_list_or_the_engines_multiple() -> None:
    from prunebench.search.runs.search_settings import round_to_setting

    assert round_to_setting(None, None) == {"round_to": None}
    assert round_to_setting("8", None) == {"round_to": 8}
    assert round_to_setting("1,4,8,16", None) == {"round_to_choices": (1, 4, 8, 16)}
    assert round_to_setting([4, 8], None) == {"round_to_choices": (4, 8)}
    assert round_to_setting("engine", "cpu-1t-ort") == {"round_to": 16}
    assert round_to_setting("engine", "cpu-1t") == {"round_to": 1}
    with pytest.raises(PrunebenchError, match="--round-to '1,x' is not understood"):
        round_to_setting("1,x", None)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"kind": "dynamic", "dynamic_method": "antidote", "round_to_choices": (4, 8)},
     "apply to the static cut"),
    ({"round_to": 4, "round_to_choices": (4, 8)}, "not both"),
    ({"round_to_choices": (4, 4)}, "repeat"),
    ({"round_to_choices": (0, 4)}, "round_to=0"),
])
def test_bad_round_to_choices_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(PrunebenchError, match=match):
        SpaceSpec(**kwargs)
