"""PAAM from scratch (the paper's one stage) and the per-group floor under a global budget."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunebench.harness.datasets import DatasetSplits
from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.accuracy import accuracy
from prunebench.harness.measure.memory import count_params
from prunebench.harness.models import create_model
from prunebench.harness.pruning import PruneContext, PruningConfig, get_method
from prunebench.harness.pruning.static.cut import coupled_groups
from prunebench.harness.pruning.static.paam import floor_count, reinitialise, select_by_budget

X1 = torch.zeros(1, 1, 32, 32)


def _poisoned(name: str) -> nn.Module:
    """A network whose every weight and statistic is NaN: nothing of it may be used."""
    net = create_model(name, 10, 1)
    with torch.no_grad():
        for t in [*net.parameters(), *net.buffers()]:
            if t.is_floating_point():
                t.fill_(float("nan"))
    return net


def _ctx(splits: DatasetSplits, epochs: int, batch_size: int = 16, seed: int = 0
         ) -> PruneContext:
    from prunebench.harness.train import Recipe

    return PruneContext(example_input=X1, splits=splits, progress=False, seed=seed,
                        recipe=Recipe(epochs=epochs, batch_size=batch_size, lr=0.05))


def test_from_scratch_trains_and_cuts_without_a_pretrained_network(digits) -> None:
    """One stage from random init on digits: 3 joint epochs, the cut, 2 more on the cut net."""
    model = _poisoned("test_convnet")
    dense_params = count_params(create_model("test_convnet", 10, 1))
    cfg = PruningConfig("paam", options={"budget": "params=0.5", "from_scratch": True,
                                         "finetune_epochs": 2})
    pruned = get_method("paam").apply(model, cfg, _ctx(digits, epochs=3))
    assert count_params(pruned) <= 0.5 * dense_params
    assert all(torch.isnan(p).all() for p in model.parameters())  # the input is untouched
    assert all(torch.isfinite(t).all() for t in pruned.state_dict().values()
               if t.is_floating_point())
    out = pruned(torch.randn(4, 1, 32, 32))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    top1 = accuracy(pruned, digits.val).top1
    assert top1 >= 0.3, f"val top-1 {top1:.3f}: from scratch should learn (chance is 0.1)"
    info = pruned.prunebench_paam
    assert info["from_scratch"] and info["params"] <= info["params_limit"]
    assert sum(info["kept_per_group"].values()) < info["total_filters"]


def test_from_scratch_repeats_per_seed_and_ignores_the_given_weights(digits) -> None:
    splits = DatasetSplits("digits-tiny", digits.train.subset(range(64)),
                           digits.val.subset(range(32)), digits.test, 10, (1, 32, 32))
    cfg = PruningConfig("paam", options={"budget": "params=0.6", "from_scratch": True})
    a = get_method("paam").apply(_poisoned("test_resnet"), cfg, _ctx(splits, epochs=1))
    torch.manual_seed(123)  # other weights, other global RNG state: the same result
    b = get_method("paam").apply(create_model("test_resnet", 10, 1), cfg, _ctx(splits, epochs=1))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    c = get_method("paam").apply(create_model("test_resnet", 10, 1), cfg,
                                 _ctx(splits, epochs=1, seed=1))
    assert any(not torch.equal(sa[k], v) for k, v in c.state_dict().items()
               if k in sa and sa[k].shape == v.shape)


def test_reinitialise_is_he_normal_and_refuses_what_it_cannot_reset() -> None:
    net = _poisoned("test_resnet")
    reinitialise(net, seed=0)
    conv = net.get_submodule("layer3.0.conv1")  # 8 -> 16 channels, 3x3: fan-out 16 x 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (16 * 9)), rel=0.15)
    bn = net.get_submodule("bn1")
    assert torch.equal(bn.weight, torch.ones(4)) and torch.equal(bn.running_var, torch.ones(4))

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.gain = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) * self.gain

    with pytest.raises(PrunebenchError, match=r"cannot re-initialise module '' \(Scaled"):
        reinitialise(Scaled(), seed=0)


# ----------------------------------------------------------------------------- the floor
def _collapsing_scores(net: nn.Module) -> dict[str, torch.Tensor]:
    """The residual stream ``layer2.0.conv2`` scores far below every other group."""
    gen = torch.Generator().manual_seed(0)
    scores = {g.name: 0.5 + 0.5 * torch.rand(g.channels, generator=gen)
              for g in coupled_groups(net, X1)}
    scores["layer2.0.conv2"] = 1e-3 * torch.arange(1, 9, dtype=torch.float32)
    return scores


@pytest.mark.parametrize("floor", [0.0, 0.2, 0.25, 0.5])
def test_floor_keeps_every_group_at_or_above_it(floor: float) -> None:
    net = create_model("test_resnet", 10, 1).eval()
    scores = _collapsing_scores(net)
    dense = count_params(net)
    idxs, summary = select_by_budget(net, X1, scores, "params", 0.4 * dense, floor)
    from prunebench.harness.pruning.static.cut import cut_filters

    cut = cut_filters(net, X1, idxs)
    kept = {g.name: g.channels for g in coupled_groups(cut, X1)}
    assert count_params(cut) <= 0.4 * dense and summary["params"] == count_params(cut)
    for g in coupled_groups(net, X1):
        assert kept[g.name] >= floor_count(g.channels, floor) >= math.ceil(floor * g.channels)
        kept_idx = set(range(g.channels)) - set(idxs.get(g.name, []))
        top = torch.argsort(scores[g.name], descending=True)[:floor_count(g.channels, floor)]
        assert set(top.tolist()) <= kept_idx  # the floor keeps the group's best filters
    # the stream's scores are the lowest: without a floor it collapses, with one it holds
    want = {0.0: 1, 0.2: 2, 0.25: 2, 0.5: 4}[floor]
    assert kept["layer2.0.conv2"] == want
    assert ("layer2.0.conv2" in summary["at_floor"]) and summary["group_floor"] == floor


def test_default_floor_applies_to_budget_runs(digits) -> None:
    splits = DatasetSplits("digits-tiny", digits.train.subset(range(64)),
                           digits.val.subset(range(32)), digits.test, 10, (1, 32, 32))
    torch.manual_seed(0)
    model = create_model("test_resnet", 10, 1)
    cfg = PruningConfig("paam", options={"budget": "params=0.3", "epochs": 1, "lam": 0.05})
    pruned = get_method("paam").apply(model, cfg, _ctx(splits, epochs=1))
    assert pruned.prunebench_paam["group_floor"] == 0.2
    after = {g.name: g.channels for g in coupled_groups(pruned, X1)}
    for g in coupled_groups(model, X1):
        assert after[g.name] >= math.ceil(0.2 * g.channels)
    assert count_params(pruned) <= 0.3 * count_params(model)
    # the same run without the floor collapses the last residual stream to one channel
    bare = get_method("paam").apply(model, PruningConfig("paam", options={
        **cfg.options, "group_floor": 0.0}), _ctx(splits, epochs=1))
    assert bare.prunebench_paam["kept_per_group"]["layer3.0.conv2"] == 1
    assert after["layer3.0.conv2"] >= 4


@pytest.mark.parametrize("options,ratio,match", [
    ({"budget": "params=0.5", "from_scratch": True, "epochs": 0}, None,
     "from_scratch=true with epochs=0"),
    ({"group_floor": 0.3, "epochs": 0}, 0.5, "group_floor applies to a budget only"),
    ({"budget": "params=0.2", "group_floor": 0.9, "epochs": 0}, None, "lower group_floor"),
    ({"budget": "params=0.5", "group_floor": 1.5}, None, r"group_floor=1.5 .* in \[0, 1\]"),
])
def test_user_errors_name_the_fix(options, ratio, match) -> None:  # noqa: ANN001
    cfg = PruningConfig("paam", global_ratio=ratio, options=options)
    with pytest.raises(PrunebenchError, match=match):
        get_method("paam").apply(create_model("test_resnet", 10, 1), cfg,
                                 PruneContext(example_input=X1))
