"""Conformance tests every static pruning method must pass (STYLE.md item 8).

A new static method is one line in ``STATIC_METHODS``: its name and how to build a config that
asks for a given ratio (with extra options such as ``round_to``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from prunebench.harness.models import create_model
from prunebench.harness.pruning import PruneContext, PruningConfig, get_method
from prunebench.harness.pruning.static.cut import Group, coupled_groups, keep_count, rebuild_pruned
from prunebench.harness.train import load_checkpoint, save_checkpoint


@dataclass(frozen=True)
class StaticCase:
    """A static method under test and how to ask it for a uniform ratio."""

    method: str
    make_config: Callable[[float, dict[str, Any]], PruningConfig]


def _uniform(method: str) -> StaticCase:
    return StaticCase(method, lambda r, opts: PruningConfig(method, global_ratio=r,
                                                            options=dict(opts)))


STATIC_METHODS = [
    _uniform("l1"),
    _uniform("bn_scale"),
    _uniform("fpgm"),
    _uniform("random"),
    StaticCase("paam", lambda r, o: PruningConfig("paam", global_ratio=r,
                                                  options={**o, "epochs": 0})),  # no data
]
MODELS = ["test_convnet", "test_resnet"]


def _setup(model_name: str) -> tuple[nn.Module, torch.Tensor, PruneContext]:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = create_model(model_name).eval()
    with torch.no_grad():  # distinct BN statistics so a wrong channel shows in the output
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.weight.uniform_(0.2, 1.5)
    x = torch.randn(2, 3, 32, 32)
    return model, x, PruneContext(example_input=x[:1], seed=3)


def _layer_costs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, int, int, int, int]]:
    """name -> (MACs per input, weight numel, out, in, groups) of every conv / linear layer."""
    costs, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            def hook(mod: nn.Module, inp: Any, out: torch.Tensor, name: str = name) -> None:
                w = mod.weight
                spatial = out[0, 0].numel() if out.dim() == 4 else 1
                groups = getattr(mod, "groups", 1)
                costs[name] = (w[0].numel() * w.shape[0] * spatial, w.numel(), w.shape[0],
                               w.shape[1] * groups, groups)
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model(x[:1])
    for h in hooks:
        h.remove()
    return costs


def _expected(model: nn.Module, x: torch.Tensor, groups: list[Group], kept: dict[str, int]
              ) -> tuple[int, int]:
    """MACs and conv/linear weight count that keeping ``kept`` channels per group implies."""
    out_f = {m: kept[g.name] / g.channels for g in groups for m in g.members}
    in_f = {m: kept[g.name] / g.channels for g in groups for m in g.consumers}
    macs = weights = 0.0
    for name, (mac, numel, out, cin, grp) in _layer_costs(model, x).items():
        factor = out_f.get(name, 1.0) * (1.0 if grp == out == cin else in_f.get(name, 1.0))
        macs += mac * factor
        weights += numel * factor
    return round(macs), round(weights)


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("case", STATIC_METHODS, ids=lambda c: c.method)
class TestStaticConformance:
    """What every static method guarantees."""

    def test_ratio_zero_is_identity(self, case: StaticCase, model_name: str) -> None:
        model, x, ctx = _setup(model_name)
        pruned = get_method(case.method).apply(model, case.make_config(0.0, {}), ctx)
        with torch.no_grad():
            assert torch.equal(pruned(x), model(x))
        assert pruned.state_dict().keys() == model.state_dict().keys()
        assert all(torch.equal(a, b) for a, b in zip(pruned.state_dict().values(),
                                                     model.state_dict().values(), strict=True))

    @pytest.mark.parametrize("ratio,round_to", [(0.3, 1), (0.5, 1), (0.5, 2), (0.7, 2), (0.4, 4)])
    def test_counts_match_requested_ratio(self, case: StaticCase, model_name: str, ratio: float,
                                          round_to: int) -> None:
        model, x, ctx = _setup(model_name)
        groups = coupled_groups(model, ctx.example_input)
        kept = {g.name: keep_count(g.channels, ratio, round_to) for g in groups}
        cfg = case.make_config(ratio, {"round_to": round_to})
        pruned = get_method(case.method).apply(model, cfg, ctx)
        want_macs, want_weights = _expected(model, x, groups, kept)
        costs = _layer_costs(pruned, x)
        assert sum(c[0] for c in costs.values()) == want_macs
        assert sum(c[1] for c in costs.values()) == want_weights
        got = {g.name: g.channels for g in coupled_groups(pruned, ctx.example_input)}
        assert got == kept
        assert all(k % round_to == 0 or k == g.channels for g in groups for k in [kept[g.name]])

    def test_no_masks_or_hooks_and_shape_kept(self, case: StaticCase, model_name: str) -> None:
        model, x, ctx = _setup(model_name)
        pruned = get_method(case.method).apply(model, case.make_config(0.5, {}), ctx)
        dense_types = {type(m) for m in model.modules()}
        for name, m in pruned.named_modules():
            assert type(m) in dense_types, name
            assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks), name
        names = [n for n, _ in pruned.named_parameters()] + [n for n, _ in pruned.named_buffers()]
        assert not [n for n in names if "mask" in n.lower()]
        assert sum(p.numel() for p in pruned.parameters()) < sum(
            p.numel() for p in model.parameters())
        with torch.no_grad():
            assert pruned(x).shape == model(x).shape
        assert not pruned.training

    def test_input_not_modified(self, case: StaticCase, model_name: str) -> None:
        model, x, ctx = _setup(model_name)
        model.train()
        before = copy.deepcopy(model.state_dict())
        get_method(case.method).apply(model, case.make_config(0.5, {}), ctx)
        assert model.training
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    def test_save_load_round_trip(self, case: StaticCase, model_name: str, tmp_path) -> None:
        model, x, ctx = _setup(model_name)
        pruned = get_method(case.method).apply(model, case.make_config(0.5, {}), ctx)
        path = tmp_path / "pruned.pt"
        save_checkpoint(pruned, path, {"model": model_name, "num_classes": 10, "in_channels": 3})
        meta = torch.load(path, weights_only=True)["meta"]
        rebuilt = rebuild_pruned(meta["model"], meta["arch"], meta["num_classes"],
                                 meta["in_channels"])
        loaded, _ = load_checkpoint(path, model=rebuilt)
        with torch.no_grad():
            assert torch.equal(loaded(x), pruned(x))
        assert loaded.prunebench_arch == pruned.prunebench_arch
