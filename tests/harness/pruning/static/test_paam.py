"""PAAM (Pruning by Active Attention Manipulation): activation, attention, fold, budget, cut."""

from __future__ import annotations

import copy

import pytest
import torch

from prunebench.harness.datasets import DatasetSplits
from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.memory import count_params
from prunebench.harness.models import create_model
from prunebench.harness.pruning import PruneContext, PruningConfig, get_method
from prunebench.harness.pruning.static.cut import coupled_groups
from prunebench.harness.pruning.static.paam import (
    FilterAttention,
    PaamNetwork,
    leaky_exp,
    scale_sites,
    select_by_budget,
)

X1 = torch.zeros(1, 3, 32, 32)


def _wrapped(name: str = "test_resnet", seed: int = 0) -> PaamNetwork:
    torch.manual_seed(seed)
    net = create_model(name).eval()
    groups = coupled_groups(net, X1)
    return PaamNetwork(net, groups, scale_sites(net, groups, X1))


def test_leaky_exp_in_unit_interval_starts_at_one_never_flat() -> None:
    x = torch.tensor([-30.0, -2.0, -1e-3, 0.0, 1e-3, 2.0, 30.0], requires_grad=True)
    y = leaky_exp(x)
    assert ((y > 0) & (y <= 1)).all() and y[3] == 1.0
    y.sum().backward()
    assert (x.grad != 0).all()  # including at the start (x = 0)


def test_scores_start_at_one_and_learn() -> None:
    att = FilterAttention(in_dim=27, hidden=4)
    w = torch.randn(8, 27)
    assert torch.equal(att(w), torch.ones(8))
    att(w).sum().backward()
    assert att.out.bias.grad is not None and att.out.bias.grad.item() == pytest.approx(8.0)


def test_scale_sites_are_the_norms_after_each_member() -> None:
    net = create_model("test_resnet").eval()
    groups = coupled_groups(net, X1)
    sites = scale_sites(net, groups, X1)
    assert sites["bn1"] == "conv1" and sites["layer1.0.bn2"] == "conv1"
    assert sites["layer2.0.shortcut.1"] == "layer2.0.conv2"
    assert not any(name.endswith("conv1") or name.endswith("conv2") for name in sites)


def test_fold_is_exact_and_leaves_no_hooks() -> None:
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain = _wrapped().fold_and_detach()(x)  # scores all 1: folding changes nothing
        w = _wrapped()
        torch.testing.assert_close(w.eval()(x), plain)
        for att in w.attn.values():  # move the scores away from 1
            att.out.weight.normal_(0, 1.0)
            att.out.bias.fill_(-0.5)
        scaled = w(x)
        assert not torch.allclose(scaled, plain)
        net = w.fold_and_detach()
        torch.testing.assert_close(net(x), scaled, rtol=1e-4, atol=1e-5)
    assert not any(m._forward_hooks for m in net.modules())


def test_regulariser_is_sum_of_scores_with_gradient() -> None:
    w = _wrapped().train()
    w(torch.randn(2, 3, 32, 32))
    reg = w.regulariser()
    assert reg.item() == pytest.approx(sum(g.channels for g in w.groups))
    reg.backward()
    assert all(a.out.bias.grad is not None and a.out.bias.grad.item() > 0
               for a in w.attn.values())


def test_budget_keeps_top_scores_and_meets_limit() -> None:
    net = create_model("test_resnet").eval()
    groups = coupled_groups(net, X1)
    gen = torch.Generator().manual_seed(0)
    scores = {g.name: torch.rand(g.channels, generator=gen) for g in groups}
    dense = count_params(net)
    idxs, summary = select_by_budget(net, X1, scores, "params", 0.5 * dense)
    assert summary["params"] <= 0.5 * dense
    kept = [float(s[i]) for g, s in scores.items() for i in range(len(s))
            if i not in idxs.get(g, [])]
    cut = [float(scores[g][i]) for g, ii in idxs.items() for i in ii]
    tops = {float(s.max()) for s in scores.values()}  # each group keeps its best filter
    assert min(v for v in kept if v not in tops) >= max(cut)
    with pytest.raises(PrunebenchError, match="raise the budget"):
        select_by_budget(net, X1, scores, "params", 10)


@pytest.fixture(scope="module")
def tiny(digits) -> DatasetSplits:
    return DatasetSplits("digits-tiny", digits.train.subset(range(192)),
                         digits.val.subset(range(64)), digits.test, 10, (1, 32, 32))


@pytest.mark.parametrize("scratch", [False, True])
def test_budget_run_end_to_end(tiny, scratch: bool) -> None:
    from prunebench.harness.train import Recipe

    torch.manual_seed(0)
    model = create_model("test_resnet", 10, 1).train()
    before = copy.deepcopy(model.state_dict())
    x1 = torch.zeros(1, 1, 32, 32)
    ctx = PruneContext(example_input=x1, splits=tiny, progress=False,
                       recipe=Recipe(epochs=1, batch_size=32, lr=0.05))
    cfg = PruningConfig("paam", options={"budget": "params=0.5", "epochs": 1, "lam": 0.05,
                                         "from_scratch": scratch})
    pruned = get_method("paam").apply(model, cfg, ctx)
    assert count_params(pruned) <= 0.5 * count_params(model)
    assert {type(m) for m in pruned.modules()} <= {type(m) for m in model.modules()}
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in pruned.modules())
    assert pruned.prunebench_paam["score_max"] <= 1.0 and hasattr(pruned, "prunebench_arch")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert pruned(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("config,match", [
    (PruningConfig("paam"), "exactly one"),
    (PruningConfig("paam", options={"budget": "flops=0.5", "epochs": 0}), "unknown budget"),
    (PruningConfig("paam", options={"budget": "params=0.5"}), "trains its scores on data"),
    (PruningConfig("paam", options={"budget": "params=0.5", "lr": "fast"}), "must be a float"),
])
def test_user_errors_name_the_fix(config: PruningConfig, match: str) -> None:
    ctx = PruneContext(example_input=X1)
    with pytest.raises(PrunebenchError, match=match):
        get_method("paam").apply(create_model("test_convnet"), config, ctx)


def test_listed_with_citation() -> None:
    from prunebench.harness.pruning import METHODS

    meta = METHODS.metadata("paam")
    assert meta["kind"] == "static" and "Active Attention" in meta["citation"]
