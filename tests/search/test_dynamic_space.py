"""The whole dynamic space: AntiDote's block-input gates, searched method options (keep rule,
columns, p) and the hybrid space, each round-tripped from a trial's parameters into the built
network (its gated keys and its effective MACs); ``search --option`` / ``--search-option``
refusals exit 2 before any work."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.flops import effective_macs
from prunebench.harness.models import create_model
from prunebench.harness.pruning import PruneContext, pipeline
from prunebench.search.cli import main
from prunebench.search.latency_model import CostTable
from prunebench.search.space import SearchSpace, SpaceSpec, searched_option

torch.manual_seed(0)
X = torch.randn(8, 1, 32, 32)


def _trial_config(spec: SpaceSpec, model_name: str = "test_resnet", seed: int = 0):
    model = create_model(model_name, 10, 1).eval()
    space = SearchSpace.build(spec, model, X[:1])
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
    chosen = space.suggest(trial)
    net = pipeline.build(model, chosen.record, PruneContext(X[:1]))
    return model, space, trial, chosen.record, net


def test_input_gates_are_one_keep_per_block_and_reach_the_network() -> None:
    spec = SpaceSpec(kind="dynamic", dynamic_method="antidote", dynamic_options={"inputs": 1})
    model, space, trial, record, net = _trial_config(spec)
    blocks = ["layer1.0", "layer2.0", "layer3.0"]
    assert [g for g in space.gated if g in blocks] == blocks
    assert set(space.gated) == set(blocks) | {f"{b}.conv1" for b in blocks}
    assert set(trial.params) == set(space.gated)
    assert record.keep == pytest.approx({g: trial.params[g] for g in space.gated})
    assert record.options == {"inputs": 1}
    info = net.prunebench_dynamic
    assert set(info["gated"]) == set(space.gated) and info["inputs"] is True
    table = CostTable(space, model, X[:1])
    assert effective_macs(net, [X]).mean == pytest.approx(table.macs(record))
    # without inputs=1 the block inputs are not parameters
    plain = SearchSpace.build(SpaceSpec(kind="dynamic", dynamic_method="antidote"), model, X[:1])
    assert not set(plain.gated) & set(blocks)


@pytest.mark.parametrize("texts, expected", [
    (["rule"], {"rule": {"choices": ["ratio", "threshold"]}}),
    (["columns"], {"columns": {"low": 0.05, "high": 1.0, "step": 0.05}}),
    (["columns=0.5:1:0.1"], {"columns": {"low": 0.5, "high": 1.0, "step": 0.1}}),
    (["p=1:3"], {"p": {"low": 1.0, "high": 3.0, "step": 0.05}}),
    (["p=1,2"], {"p": {"choices": [1.0, 2.0]}}),
])
def test_searched_option_forms(texts: list[str], expected: dict) -> None:
    assert dict(searched_option("antidote", t) for t in texts) == expected


@pytest.mark.parametrize("text, match", [
    ("p", "no range to search; give one, e.g. --search-option p=1:4"),
    ("colums", "did you mean 'columns'"),
    ("rule=ratio:threshold", "needs a number option"),
    ("rule=exact", "rule=exact of method 'antidote' must be"),
    ("columns=", "is not KEY, KEY=a,b or KEY=LOW:HIGH"),
])
def test_bad_searched_option_forms_name_the_value(text: str, match: str) -> None:
    with pytest.raises(PrunebenchError, match=match):
        searched_option("antidote", text)


@pytest.mark.parametrize("kwargs, match", [
    ({"searched_options": {"inputs": {"choices": [0, 1]}}}, "give --option inputs=1"),
    ({"searched_options": {"rule": {"choices": ["ratio", "ratio"]}}}, "two or more different"),
    ({"searched_options": {"columns": {"low": 0.0, "high": 1.0, "step": 0.1}}},
     "columns=0.0 of method 'antidote' must be"),
    ({"searched_options": {"rule": {"choices": ["ratio", "threshold"]}},
      "dynamic_options": {"rule": "ratio"}}, "both fixed"),
])
def test_bad_searched_dimensions_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(PrunebenchError, match=match):
        SpaceSpec(kind="dynamic", dynamic_method="antidote", **kwargs)


def test_options_that_choose_the_gated_layers_are_not_searched() -> None:
    with pytest.raises(PrunebenchError, match="decides which layers are gated"):
        SpaceSpec(kind="dynamic", dynamic_method="instance_sparsity",
                  searched_options={"select": {"choices": ["cv", "all"]}})


def test_keep_rule_columns_and_p_are_parameters_that_reach_the_network() -> None:
    searched = {"rule": {"choices": ["ratio", "threshold"]},
                "columns": {"low": 0.5, "high": 1.0, "step": 0.25},
                "p": {"low": 1.0, "high": 3.0, "step": 1.0}}
    spec = SpaceSpec(kind="dynamic", dynamic_method="antidote", searched_options=searched)
    assert SpaceSpec.from_dict(spec.to_dict()) == spec
    seen = set()
    for seed in range(8):
        model, space, trial, record, net = _trial_config(spec, seed=seed)
        options = {k: trial.params[f"option/{k}"] for k in searched}
        assert record.options == options
        info = net.prunebench_dynamic
        assert info["rule"] == options["rule"] and info["columns"] == options["columns"]
        assert space.config(dict(trial.params)).record == record  # rebuilt from storage
        if options["rule"] == "ratio":  # the count is exact; a threshold's is the data's
            table = CostTable(space, model, X[:1])
            assert effective_macs(net, [X]).mean == pytest.approx(table.macs(record))
        seen.add(options["rule"])
    assert seen == {"ratio", "threshold"}
    with pytest.raises(PrunebenchError, match="lack"):
        space.config({k: v for k, v in trial.params.items() if k != "option/rule"})


def test_the_uniform_line_holds_searched_options_at_the_method_defaults() -> None:
    from prunebench.search.space import option_defaults, uniform_line_params, warm_start_params

    searched = {"rule": {"choices": ["threshold", "ratio"]},  # the default is not first
                "columns": {"low": 0.5, "high": 0.75, "step": 0.25},  # default 1 is outside
                "p": {"low": 1.0, "high": 3.0, "step": 1.0}}
    spec = SpaceSpec(kind="dynamic", dynamic_method="antidote", searched_options=searched)
    space = SearchSpace.build(spec, create_model("test_resnet", 10, 1).eval(), X[:1])
    assert option_defaults(space) == {"option/rule": "ratio", "option/columns": 0.5,
                                      "option/p": 1.0}
    for params in [uniform_line_params(space, 0.5), *warm_start_params(space, 3)]:
        record = space.config(params).record
        assert record.options == {"rule": "ratio", "columns": 0.5, "p": 1.0}
        assert len(set(record.keep.values())) == 1  # one keep: a uniform point
    assert option_defaults(SearchSpace.build(SpaceSpec(kind="static"), create_model(
        "test_resnet", 10, 1), X[:1])) == {}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_threshold_keep_is_counted_from_the_calibration_inputs(seed: int) -> None:
    from prunebench.search.space import uniform_params

    spec = SpaceSpec(kind="dynamic", dynamic_method="antidote",
                     dynamic_options={"rule": "threshold", "inputs": 1})
    torch.manual_seed(seed)  # the weights, not the tests run before, decide the attentions
    model = create_model("test_resnet", 10, 1).eval()
    space = SearchSpace.build(spec, model, X[:1])
    calibrated, plain = CostTable(space, model, X[:1], X), CostTable(space, model, X[:1])

    def measured(params: dict) -> tuple[float, object]:
        record = space.config(params).record
        return effective_macs(pipeline.build(model, record, PruneContext(X[:1])), [X]).mean, \
            record

    for site in (space.gated[0], "layer2.0"):  # an internal gate, a block-input gate
        # one gate pruned: its attentions are the dense network's, so the count is exact
        macs, record = measured({**uniform_params(space, 0.0, 1.0), space.keep_param(site): 0.5})
        assert calibrated.macs(record) == pytest.approx(macs)
        assert plain.macs(record) != pytest.approx(macs, rel=0.01)  # keep x C is not the data's
    # every gate pruned: gates upstream change the attentions; still nearer than keep x C
    macs, record = measured(uniform_params(space, 0.0, 0.5))
    assert abs(calibrated.macs(record) / macs - 1) < abs(plain.macs(record) / macs - 1)
    ratio = CostTable(SearchSpace.build(SpaceSpec(kind="dynamic", dynamic_method="antidote"),
                                        model, X[:1]), model, X[:1], X)
    assert ratio._relative is None  # the ratio rule's count needs no data


def test_hybrid_searches_the_cut_the_gates_and_the_options_in_one_space() -> None:
    spec = SpaceSpec(kind="hybrid", static_methods=("l1",), dynamic_method="antidote",
                     dynamic_options={"inputs": 1},
                     searched_options={"columns": {"low": 0.5, "high": 1.0, "step": 0.25}})
    model, space, trial, record, net = _trial_config(spec, seed=3)
    names = set(trial.params)
    assert {f"ratio/{g}" for g in space.groups} <= names
    assert {f"keep/{g}" for g in space.gated} <= names and "keep/layer2.0" in names
    assert "option/columns" in names
    assert record.static_method == "l1" and record.ratios and record.keep
    assert record.options == {"inputs": 1, "columns": trial.params["option/columns"]}
    table = CostTable(space, model, X[:1])
    assert effective_macs(net, [X]).mean == pytest.approx(table.macs(record))


def _search(tmp_path: Path, *extra: str) -> list[str]:
    return ["search", "--model", "test_convnet", "--dataset", "digits", "--trials", "1",
            "--out", str(tmp_path / "run"), *extra]


@pytest.mark.parametrize("extra, message", [
    (["--option", "inputs"], "option 'inputs' of method 'antidote' is not KEY=VALUE"),
    (["--option", "colour=1"], "unknown option 'colour' for method 'antidote'"),
    (["--option", "inputs=2"], "option inputs=2 of method 'antidote' must be an int in [0, 1]"),
    (["--option", "rule=exact"], "option rule=exact of method 'antidote' must be"),
    (["--search-option", "p"], "no range to search"),
    (["--search-option", "inputs"], "give --option inputs=1"),
    (["--option", "rule=ratio", "--search-option", "rule"], "both fixed"),
])
def test_bad_method_options_exit_2_naming_the_value(tmp_path: Path, capsys, extra: list[str],
                                                    message: str) -> None:
    code = main(_search(tmp_path, "--space", "dynamic", "--method", "antidote", *extra))
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before any work


def test_bad_projection_switch_and_static_search_option_exit_2(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:  # argparse's own exit, before any work
        main(_search(tmp_path, "--budget-projection", "maybe"))
    assert stop.value.code == 2 and "'maybe' is not on or off" in capsys.readouterr().err
    assert main(_search(tmp_path, "--search-option", "rule")) == 2
    assert "--search-option searches options of the dynamic method" in capsys.readouterr().err
