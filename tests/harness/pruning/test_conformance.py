"""Conformance suites every registered pruning method passes (STYLE.md item 8).

As in Optuna's ``BasicSamplerTestCase``, :class:`StaticMethodSuite` and
:class:`DynamicMethodSuite` hold what every method of their kind guarantees, and a concrete test
class runs them over the method table of its kind: a new method is one added line in
:data:`STATIC_CASES` or :data:`DYNAMIC_CASES`. :func:`test_every_method_is_in_a_suite` fails
when a method registered in ``METHODS`` is in neither (``dense``, the reference, has its own
test here).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

from prunebench.harness.datasets import DatasetSplits, TensorImageDataset
from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.flops import count_macs, effective_macs, module_macs
from prunebench.harness.models import create_model
from prunebench.harness.pruning import METHODS, PruneContext, PruningConfig, get_method
from prunebench.harness.pruning.dynamic.sites import find_sites
from prunebench.harness.pruning.static.cut import Group, coupled_groups, keep_count, rebuild_pruned
from prunebench.harness.train import load_checkpoint, save_checkpoint

MakeModel = Callable[..., nn.Module]  # the bn_model fixture (tests/harness/pruning/conftest.py)
pytestmark = pytest.mark.filterwarnings("ignore:no data set given")

MODELS = ("test_convnet", "test_resnet")


# ============================================================================= static
@dataclass(frozen=True)
class StaticCase:
    """A static method under test and how to ask it for a uniform ratio."""

    method: str
    make_config: Callable[[float, dict[str, Any]], PruningConfig] | None = None

    def config(self, ratio: float, options: dict[str, Any] | None = None) -> PruningConfig:
        """The config asking for ``ratio`` of every prunable group (with extra options)."""
        opts = dict(options or {})
        if self.make_config is not None:
            return self.make_config(ratio, opts)
        return PruningConfig(self.method, global_ratio=ratio, options=opts)

    def __str__(self) -> str:
        return self.method


STATIC_CASES = [
    StaticCase("l1"),
    StaticCase("bn_scale"),
    StaticCase("fpgm"),
    StaticCase("random"),
    StaticCase("aap"),  # attention scored on the synthetic train split below
    StaticCase("paam", lambda r, o: PruningConfig("paam", global_ratio=r,
                                                  options={**o, "epochs": 0})),
]


def _synthetic_splits() -> DatasetSplits:
    """64/32/32 seeded random 3x32x32 images: enough for methods that calibrate on train."""
    gen = torch.Generator().manual_seed(5)

    def part(n: int) -> TensorImageDataset:
        return TensorImageDataset(torch.rand(n, 3, 32, 32, generator=gen),
                                  torch.randint(0, 10, (n,), generator=gen),
                                  torch.full((3,), 0.5), torch.full((3,), 0.25))

    return DatasetSplits("synthetic", part(64), part(32), part(32), 10, (3, 32, 32))


SPLITS = _synthetic_splits()


def _setup(model_name: str) -> tuple[nn.Module, torch.Tensor, PruneContext]:
    torch.manual_seed(0)
    model = create_model(model_name).eval()
    with torch.no_grad():  # distinct BN statistics so a wrong channel shows in the output
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.weight.uniform_(0.2, 1.5)
    x = torch.randn(2, 3, 32, 32)
    return model, x, PruneContext(example_input=x[:1], splits=SPLITS, seed=3, progress=False)


def _layer_costs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, int, int, int, int]]:
    """name -> (MACs per input, weight numel, out, in, groups) of every conv / linear layer."""
    macs = module_macs(model, x[:1])
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            w, groups = m.weight, getattr(m, "groups", 1)
            out[name] = (macs[name], w.numel(), w.shape[0], w.shape[1] * groups, groups)
    return out


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


class StaticMethodSuite:
    """What every static method guarantees; a subclass supplies ``case`` and ``model_name``."""

    def test_ratio_zero_is_identity(self, case: StaticCase, model_name: str) -> None:
        model, x, ctx = _setup(model_name)
        pruned = get_method(case.method).apply(model, case.config(0.0), ctx)
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
        pruned = get_method(case.method).apply(model, case.config(ratio, {"round_to": round_to}),
                                               ctx)
        want_macs, want_weights = _expected(model, x, groups, kept)
        costs = _layer_costs(pruned, x)
        assert sum(c[0] for c in costs.values()) == want_macs
        assert sum(c[1] for c in costs.values()) == want_weights
        got = {g.name: g.channels for g in coupled_groups(pruned, ctx.example_input)}
        assert got == kept
        assert all(k % round_to == 0 or k == g.channels for g in groups for k in [kept[g.name]])

    def test_macs_fall_as_the_ratio_rises(self, case: StaticCase, model_name: str) -> None:
        """The achieved MAC reduction goes the way asked: more ratio, strictly fewer MACs."""
        model, x, ctx = _setup(model_name)
        macs = [count_macs(get_method(case.method).apply(model, case.config(r), ctx), x[:1]).macs
                for r in (0.0, 0.3, 0.5, 0.7)]
        assert macs[0] == count_macs(model, x[:1]).macs
        assert all(b < a for a, b in zip(macs, macs[1:], strict=False)), macs

    def test_no_masks_or_hooks_and_shape_kept(self, case: StaticCase, model_name: str) -> None:
        model, x, ctx = _setup(model_name)
        pruned = get_method(case.method).apply(model, case.config(0.5), ctx)
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

    def test_deterministic_for_a_seed(self, case: StaticCase, model_name: str) -> None:
        model, x, ctx = _setup(model_name)
        a = get_method(case.method).apply(model, case.config(0.5), ctx)
        b = get_method(case.method).apply(model, case.config(0.5), copy.copy(ctx))
        assert a.state_dict().keys() == b.state_dict().keys()
        assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
        with torch.no_grad():
            assert torch.equal(a(x), b(x))

    def test_input_not_modified(self, case: StaticCase, model_name: str) -> None:
        model, x, ctx = _setup(model_name)
        model.train()
        before = copy.deepcopy(model.state_dict())
        get_method(case.method).apply(model, case.config(0.5), ctx)
        assert model.training
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    def test_save_load_round_trip(self, case: StaticCase, model_name: str, tmp_path) -> None:
        model, x, ctx = _setup(model_name)
        pruned = get_method(case.method).apply(model, case.config(0.5), ctx)
        path = tmp_path / "pruned.pt"
        save_checkpoint(pruned, path, {"model": model_name, "num_classes": 10, "in_channels": 3})
        meta = torch.load(path, weights_only=True)["meta"]
        rebuilt = rebuild_pruned(meta["model"], meta["arch"], meta["num_classes"],
                                 meta["in_channels"])
        loaded, _ = load_checkpoint(path, model=rebuilt)
        with torch.no_grad():
            assert torch.equal(loaded(x), pruned(x))
        assert loaded.prunebench_arch == pruned.prunebench_arch


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("case", STATIC_CASES, ids=str)
class TestStaticMethods(StaticMethodSuite):
    """Every registered static method, on both tiny test models."""


# ============================================================================= dynamic
@dataclass(frozen=True)
class DynamicCase:
    """A dynamic method (with options) under test.

    ``family`` says what a keep ``k`` scales and what deciding costs:

    - ``"gates"`` (AntiDote's exact rule, instance-wise sparsity): each gated site's consumer
      conv computes ``k`` of its input channels (times ``columns`` of its output positions on an
      internal site); a gate reads its feature map once per attention kind (channels, and
      columns when ``columns < 1``), one MAC per element (``dynamic/gates.py``);
    - ``"widths"`` (``antidote_fast``): a block's width ``k`` scales its conv1 (output channels)
      and conv2 (input channels); its predictor reads the block input once and multiplies the
      ``C_in`` channel sums by a ``C_in x C_hidden`` matrix (``dynamic/fast_blocks.py``).

    ``keep_is_fraction`` is False where the keep is not the kept fraction of channels (the
    relative-threshold rule), or cannot be hit by construction (``antidote_fast`` with widths in
    multiples of 4 on blocks of 4 channels): the reduction test does not apply to that case.
    """

    label: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    modes: tuple[str, ...] = ("masked", "gathered")
    models: tuple[str, ...] = MODELS
    family: str = "gates"
    keep_is_fraction: bool = True

    def __str__(self) -> str:
        return self.label


DYNAMIC_CASES = [
    DynamicCase("antidote", "antidote"),
    DynamicCase("antidote-columns", "antidote", {"columns": 0.5}, models=("test_resnet",)),
    DynamicCase("antidote-threshold", "antidote", {"rule": "threshold", "p": 2.0},
                keep_is_fraction=False),
    DynamicCase("antidote-inputs", "antidote", {"inputs": 1}, models=("test_resnet",)),
    DynamicCase("antidote-inputs-columns", "antidote", {"inputs": 1, "columns": 0.5},
                models=("test_resnet",)),
    DynamicCase("antidote_fast", "antidote_fast", {}, ("masked", "gathered", "fast"),
                ("test_resnet",), "widths", keep_is_fraction=False),
    DynamicCase("antidote_fast-round1", "antidote_fast", {"round_to": 1},
                ("masked", "gathered", "fast"), ("test_resnet",), "widths"),
    DynamicCase("instance_sparsity", "instance_sparsity", {"select": "all"}),
    DynamicCase("instance_sparsity-prefix", "instance_sparsity",
                {"select": "all", "rule": "prefix", "round_to": 1},
                ("masked", "gathered", "fast"), ("test_resnet",)),
]

X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
X_MANY = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(11))
# the reduction test's tolerance, as a fraction of the MACs the keep scales (see its docstring)
KEEP_TOLERANCE = 0.05
# (case, model) -> why the reduction test fails there; strict, so a fix shows as a failure too
# (instance_sparsity's chained gates on test_convnet were one until each gate was calibrated on
# the maps the gates before it leave)
KNOWN_DEVIATIONS: dict[tuple[str, str], str] = {}





def _apply(model: nn.Module, method: str, keep: float, mode: str, options: dict) -> nn.Module:
    cfg = PruningConfig(method, global_keep=keep, exec_mode=mode, options=options)
    return get_method(method).apply(model, cfg, PruneContext(torch.randn(1, 3, 32, 32)))


def _scaled_layers(case: DynamicCase, model: nn.Module) -> dict[str, float]:
    """Dense conv -> ``m``: at keep ``k`` it computes ``k * m`` of its dense MACs."""
    out: dict[str, float] = {}
    for s in find_sites(model, inputs=bool(case.options.get("inputs"))):
        out[s.consumer] = 1.0 if s.is_input else float(case.options.get("columns", 1.0))
        if case.family == "widths":
            out[s.name] = 1.0  # the block's conv1 computes only the first k output channels
    return out


def _decision_bound(case: DynamicCase, model: nn.Module, x: torch.Tensor) -> float:
    """Most MACs per input the decisions may add, as :class:`DynamicCase` describes them."""
    sites = find_sites(model, inputs=bool(case.options.get("inputs")))
    shapes: dict[str, tuple[int, ...]] = {}
    convs = {n for s in sites for n in (s.name, s.consumer)}
    hooks = [model.get_submodule(n).register_forward_pre_hook(
        lambda m, a, n=n: shapes.__setitem__(n, tuple(a[0].shape[1:]))) for n in convs]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    total = 0
    for s in sites:
        if case.family == "widths":  # the predictor: block input sums, then C_in x C_hidden
            c_in, h, w = shapes[s.name]
            total += c_in * h * w + c_in * s.channels
        else:
            c, h, w = shapes[s.consumer]
            kinds = 2 if not s.is_input and case.options.get("columns", 1.0) < 1.0 else 1
            total += kinds * c * h * w
    return float(total)


class DynamicMethodSuite:
    """What every dynamic method guarantees; a subclass supplies ``case``."""

    def test_keep_one_is_dense(self, bn_model: MakeModel, case: DynamicCase) -> None:
        opts = {k: v for k, v in case.options.items() if k != "columns"}
        for name in case.models:
            model = bn_model(name)
            for mode in case.modes:
                net = _apply(model, case.method, 1.0, mode, opts)
                with torch.no_grad():
                    torch.testing.assert_close(net(X), model(X), atol=1e-4, rtol=1e-4)
                eff = effective_macs(net, [X])
                assert eff.per_input == pytest.approx([count_macs(model, X[:1]).macs] * 3)

    def test_modes_agree(self, bn_model: MakeModel, case: DynamicCase) -> None:
        """Masked (the reference), gathered and fast give the same outputs and MACs."""
        for name in case.models:
            model = bn_model(name)
            outs, macs = {}, {}
            for mode in case.modes:
                net = _apply(model, case.method, 0.5, mode, case.options)
                with torch.no_grad():
                    outs[mode] = net(X)
                macs[mode] = effective_macs(net, [X]).per_input
                assert outs[mode].shape == (3, 10)
            for mode in case.modes[1:]:
                torch.testing.assert_close(outs[mode], outs["masked"], atol=1e-5, rtol=1e-5)
                assert macs[mode] == pytest.approx(macs["masked"])

    def test_effective_macs_are_reported_per_input(self, bn_model: MakeModel,
                                                   case: DynamicCase) -> None:
        """One figure per input, the same whatever batch the input came in, and what the
        network reports (not the static count of a dense forward)."""
        model = bn_model(case.models[0])
        dense = count_macs(model, X[:1]).macs
        bound = _decision_bound(case, model, X)
        for mode in case.modes:
            net = _apply(model, case.method, 0.5, mode, case.options)
            together = effective_macs(net, [X[:2], X[2:]])
            alone = effective_macs(net, [X[i:i + 1] for i in range(len(X))])
            assert together.dynamic and len(together.per_input) == len(X)
            assert together.per_input == pytest.approx(alone.per_input)
            assert all(0 < v <= dense + bound for v in together.per_input)
            assert together.mean < dense

    @pytest.mark.parametrize("model_name", MODELS)
    def test_reduction_matches_keep(self, bn_model: MakeModel, case: DynamicCase, model_name: str,
                                    request: pytest.FixtureRequest) -> None:
        """The achieved effective MACs match the keep asked, within a stated tolerance.

        Expected, per input, at keep ``k``: the dense MACs ``D`` less ``(1 - k * m)`` of each
        scaled layer's dense MACs (``S`` = their sum; ``m``: the ``columns`` fraction on a
        column-gated consumer, else 1), plus what deciding costs. The mean over 32 inputs must
        lie in ``[ideal - 0.05 S, ideal + A + 0.05 S]``, ``A`` the decision cost bound of
        :func:`_decision_bound` (1.6-3.3% of ``S`` on test_resnet). Why 5% of ``S``: the exact
        top-k rule keeps ``ceil(k C)`` channels, exact at the keeps tested (0.25, 0.5, 0.75 of
        4, 8, 16 channels), so it lands on ``ideal + A``; the calibrated methods choose
        thresholds (instance sparsity) or widths (``antidote_fast``) so that the *calibration*
        inputs keep ``k`` on average, and other inputs of the same distribution keep a mean that
        differs by sampling error (observed within 3.4% of ``S``). Known deviations are listed in
        :data:`KNOWN_DEVIATIONS`. A method that ignored the
        keep, or counted a kept channel twice, misses by 25-75% of ``S`` here.
        """
        if not case.keep_is_fraction:
            pytest.skip(f"{case}: the keep is not the kept fraction of channels (see the case)")
        if model_name not in case.models:
            pytest.skip(f"{case} does not apply to {model_name}")
        known = KNOWN_DEVIATIONS.get((case.label, model_name))
        if known:
            request.applymarker(pytest.mark.xfail(strict=True, reason=known))
        model = bn_model(model_name)
        per = module_macs(model, X_MANY[:1])
        dense = sum(per.values())
        scaled = _scaled_layers(case, model)
        s = sum(per[n] for n in scaled)
        bound = _decision_bound(case, model, X_MANY)
        for k in (0.25, 0.5, 0.75):
            net = _apply(model, case.method, k, case.modes[-1], case.options)
            got = effective_macs(net, [X_MANY]).mean
            ideal = dense - sum(per[n] * (1 - k * m) for n, m in scaled.items())
            tol = KEEP_TOLERANCE * s
            assert ideal - tol <= got <= ideal + bound + tol, (
                f"{model_name} keep {k}: {got:.0f} MACs, expected {ideal:.0f} (+ decisions "
                f"<= {bound:.0f}) within {tol:.0f}")

    def test_macs_fall_with_keep(self, bn_model: MakeModel, case: DynamicCase) -> None:
        model = bn_model(case.models[0])
        means = [effective_macs(_apply(model, case.method, k, case.modes[-1], case.options),
                                [X]).mean for k in (1.0, 0.75, 0.5, 0.25)]
        assert all(b <= a * 1.001 for a, b in zip(means, means[1:], strict=False))
        assert means[-1] < 0.85 * means[0]

    def test_bad_keep_and_names(self, bn_model: MakeModel, case: DynamicCase) -> None:
        model = bn_model(case.models[0])
        for bad in (0.0, -0.5, 1.5, float("nan")):
            with pytest.raises(PrunebenchError, match="keep value"):
                _apply(model, case.method, bad, case.modes[0], case.options)
        cfg = PruningConfig(case.method, keep={"no.such.layer": 0.5}, exec_mode=case.modes[0])
        with pytest.raises(PrunebenchError, match="unknown gated layer"):
            get_method(case.method).apply(model, cfg, PruneContext(X[:1]))
        with pytest.raises(PrunebenchError, match="exec mode"):
            _apply(model, case.method, 0.5, "sparse", case.options)
        with pytest.raises(PrunebenchError, match="unknown option"):
            _apply(model, case.method, 0.5, case.modes[0], {"colums": 0.5})


@pytest.mark.parametrize("case", DYNAMIC_CASES, ids=str)
class TestDynamicMethods(DynamicMethodSuite):
    """Every registered dynamic method, with the option variants that change what it does."""


# ============================================================================= coverage
REFERENCE = ("dense",)  # methods that prune nothing: tested by test_dense_is_an_unpruned_copy


def test_dense_is_an_unpruned_copy() -> None:
    model, x, ctx = _setup("test_resnet")
    net = get_method("dense").apply(model, PruningConfig("dense"), ctx)
    assert net is not model
    with torch.no_grad():
        assert torch.equal(net(x), model(x))
    assert count_macs(net, x[:1]).macs == count_macs(model, x[:1]).macs
    with pytest.raises(PrunebenchError, match="takes no ratios"):
        get_method("dense").apply(model, PruningConfig("dense", global_ratio=0.5), ctx)


def test_every_method_is_in_a_suite() -> None:
    """Each registered method is in the suite of its kind (dynamic ones in a case to which the
    reduction test applies), and every case names a registered method of that kind."""
    kinds = {name: METHODS.metadata(name)["kind"] for name in METHODS}
    static = {c.method for c in STATIC_CASES}
    dynamic = {c.method for c in DYNAMIC_CASES}
    by_kind = {"static": static, "dynamic": dynamic, "dense": set(REFERENCE)}
    missing = sorted(n for n, kind in kinds.items() if n not in by_kind.get(kind, set()))
    assert not missing, f"registered methods in no conformance suite: {missing}"
    wrong = sorted(n for kind, names in by_kind.items() for n in names if kinds.get(n) != kind)
    assert not wrong, f"suite cases that are not registered methods of that kind: {wrong}"
    fractions = {c.method for c in DYNAMIC_CASES if c.keep_is_fraction}
    assert dynamic <= fractions, f"no reduction-tested case for {sorted(dynamic - fractions)}"
