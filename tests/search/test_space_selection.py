"""The dynamic search space follows the dynamic method's own layer selection (instance-wise
sparsity's coefficient of variation), through the pipeline's front door."""

from __future__ import annotations

import optuna
import pytest

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.pruning import get_method
from prunebench.search.runs.search_settings import build_spec
from prunebench.search.space import SearchSpace, SpaceSpec
from tests.harness.pruning.dynamic.test_instance_sparsity import (
    constructed_context,
    constructed_network,
)


def _space(**options: object) -> SearchSpace:
    ctx = constructed_context()
    spec = SpaceSpec(kind="dynamic", dynamic_method="instance_sparsity",
                     dynamic_options=options)
    return SearchSpace.build(spec, constructed_network(), ctx.example_input, ctx)


def test_searched_keys_are_the_selected_layers() -> None:
    space = _space()
    assert space.gated == ("4",)  # the layer whose sparsity varies across inputs
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"4": 0.5})
    trial = study.ask()
    chosen = space.suggest(trial)
    assert set(trial.params) == {"4"}
    assert chosen.record.keep == {"4": 0.5} and chosen.record.options == {}
    net = get_method("instance_sparsity").apply(constructed_network(), chosen.dynamic,
                                                constructed_context())
    assert net.prunebench_dynamic["gated"] == ["4"]


def test_select_all_searches_every_layer_and_is_recorded() -> None:
    space = _space(select="all")
    assert space.gated == ("0", "4")
    chosen = space.config({"0": 0.5, "4": 0.5})
    assert chosen.record.options == {"select": "all"}
    assert space.describe()["dynamic_options"] == {"select": "all"}
    assert SpaceSpec.from_dict(space.spec.to_dict()) == space.spec


def test_search_settings_parse_options_with_the_method_schema() -> None:
    base = {"model": "test_resnet", "dataset": "digits", "space": "dynamic",
            "method": "instance_sparsity"}
    spec = build_spec({**base, "option": ["select=all", "fraction=0.25"]})
    assert spec.space.dynamic_options == {"select": "all", "fraction": 0.25}
    with pytest.raises(PrunebenchError, match="select='some'|select=some"):
        build_spec({**base, "option": ["select=some"]})
    with pytest.raises(PrunebenchError, match="dynamic method"):
        build_spec({**base, "space": "static", "method": "l1", "option": ["select=all"]})
