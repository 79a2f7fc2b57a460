"""Instance-wise sparsity: layer selection by the coefficient of variation of per-input sparsity,
thresholds with a floor, the prefix rule's fast execution, and feature-decay training."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from prunebench.harness.datasets import DatasetSplits, load_dataset
from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.flops import count_macs, effective_macs
from prunebench.harness.models import create_model
from prunebench.harness.pruning import PruneContext, PruningConfig, get_method, pipeline
from prunebench.harness.pruning.dynamic.attention_stats import site_attention
from prunebench.harness.pruning.dynamic.instance_fast import InstanceWidthBlock
from prunebench.harness.pruning.dynamic.instance_sparsity import (
    coefficient_of_variation,
    select_layers,
    sparsity_per_input,
)
from prunebench.harness.pruning.dynamic.sites import find_sites
from prunebench.harness.pruning.dynamic.training import FeatureDecay, finetune_dynamic
from prunebench.harness.train import DEFAULT_RECIPE

pytestmark = pytest.mark.filterwarnings("ignore:no data set given")
METHOD = get_method("instance_sparsity")
X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _levels(n: int, low: float = 0.1) -> torch.Tensor:
    """``n`` inputs (2 x 4 x 4): channel 0 is 1 everywhere, channel 1 a level in [low, 1]."""
    x = torch.ones(n, 2, 4, 4)
    x[:, 1] = torch.linspace(low, 1.0, n)[:, None, None]
    return x


def constructed_network() -> nn.Sequential:
    """Two gated sites of 8 channels each (1x1 convs; BN is the identity).

    Site ``0``: channels 0-2 copy input channel 0 (always 1), channel 3 copies the level, 4-7
    are 0, so every input has the same four silent channels: its sparsity does not vary.
    Site ``4``: channel k is ``relu(8 * level - k)``, so the number of silent channels falls as
    the level rises: its sparsity varies across inputs.
    """
    net = nn.Sequential(nn.Conv2d(2, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 1, bias=False),
                        nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        w0 = torch.zeros(8, 2)
        w0[:3, 0] = 1.0
        w0[3, 1] = 1.0
        net[0].weight.copy_(w0[:, :, None, None])
        net[3].weight.copy_(torch.eye(8)[:, :, None, None])
        w4 = torch.zeros(8, 8)
        w4[:, 3] = 8.0
        net[4].weight.copy_(w4[:, :, None, None])
        net[4].bias.copy_(-torch.arange(8.0))
    return net.eval()


def constructed_context(n: int = 64) -> PruneContext:
    """A context whose train split (the calibration inputs) holds ``n`` levels."""
    x = _levels(n)
    data = TensorDataset(x, torch.zeros(n, dtype=torch.long))
    splits = DatasetSplits("levels", data, data, data, 2, (2, 4, 4))
    return PruneContext(x[:1], splits=splits)


def test_sparsity_and_cv_on_norms() -> None:
    steady = torch.tensor([[1.0, 1.0, 0.0, 0.0]]).repeat(10, 1)
    varied = torch.stack([torch.tensor([1.0, float(i > 3), float(i > 6), 0.0])
                          for i in range(10)])
    assert torch.equal(sparsity_per_input(steady), torch.full((10,), 0.5, dtype=torch.float64))
    assert coefficient_of_variation(steady) == pytest.approx(0.0)
    assert coefficient_of_variation(varied) > 0.3
    assert select_layers({"a": steady, "b": varied, "c": steady * 2}, 0.34) == ["b"]
    assert select_layers({"a": steady, "b": varied}, 1.0) == ["a", "b"]


def test_cv_selection_picks_the_layer_whose_sparsity_varies() -> None:
    model, ctx = constructed_network(), constructed_context()
    sites = find_sites(model)
    assert [s.name for s in sites] == ["0", "4"]
    norms = site_attention(model, sites, _levels(64), power=2.0)
    assert sparsity_per_input(norms["0"]).std() == 0  # the same four silent channels
    assert sparsity_per_input(norms["4"]).std() > 0.1
    # the front door the search asks, and the gated network itself, agree
    assert pipeline.gated_layers(model, PruningConfig("instance_sparsity"), ctx) == ["4"]
    net = METHOD.apply(model, PruningConfig("instance_sparsity", global_keep=0.5), ctx)
    assert net.prunebench_dynamic["selected"] == ["4"]
    assert net.prunebench_dynamic["gated"] == ["4"]
    assert net.prunebench_dynamic["calibration"] == "train[:64]"
    everything = PruningConfig("instance_sparsity", options={"select": "all"})
    assert pipeline.gated_layers(model, everything, ctx) == ["0", "4"]


def test_named_keeps_are_gated_and_others_follow_the_selection() -> None:
    model, ctx = constructed_network(), constructed_context()
    cfg = PruningConfig("instance_sparsity", keep={"0": 0.5})
    assert METHOD.apply(model, cfg, ctx).prunebench_dynamic["gated"] == ["0"]
    cfg = PruningConfig("instance_sparsity", keep={"0": 0.5}, global_keep=0.5)
    assert METHOD.apply(model, cfg, ctx).prunebench_dynamic["gated"] == ["0", "4"]
    cfg = PruningConfig("instance_sparsity", global_keep=0.5, options={"select": "all"})
    assert METHOD.apply(model, cfg, ctx).prunebench_dynamic["gated"] == ["0", "4"]


def test_no_input_keeps_zero_channels() -> None:
    """Inputs whose every channel of site 4 is below its threshold still keep one channel."""
    model, ctx = constructed_network(), constructed_context()
    net = METHOD.apply(model, PruningConfig("instance_sparsity", global_keep=0.25), ctx)
    x = _levels(8, low=0.0)[:4] * torch.tensor([1.0, 0.05])[None, :, None, None]
    with torch.no_grad():
        ref = model[:7](x)  # site 4's gated map: all zero for the first input, tiny for others
        net(x)
    assert ref[0].abs().max() == 0
    kept = net.model.get_submodule("6").decision.channels.sum(1)
    assert kept.tolist() == [1, 1, 1, 1]
    consumer_macs = 8 * 4 * 16  # conv "7": 8 input channels -> 4 outputs, 1x1, 4x4 positions
    eff = effective_macs(net, [x]).per_input
    floor = count_macs(model, x[:1]).macs - consumer_macs + consumer_macs / 8
    assert all(v >= floor for v in eff)


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("test_resnet").eval()
    for m in model.modules():  # non-trivial BN so norms differ between channels and inputs
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.bias.data.uniform_(-0.3, 0.3)
    return model


def _prefix(model: nn.Module, mode: str, keep: float = 0.5, **options: object) -> nn.Module:
    cfg = PruningConfig("instance_sparsity", global_keep=keep, exec_mode=mode,
                        options={"select": "all", "rule": "prefix", "round_to": 1, **options})
    return METHOD.apply(model, cfg, PruneContext(X[:1]))


def test_fast_equals_its_masked_reference_and_reports_effective_macs() -> None:
    model = _resnet()
    xs = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    outs, macs = {}, {}
    for mode in ("masked", "gathered", "fast"):
        net = _prefix(model, mode)
        assert net.prunebench_dynamic["rule"] == "prefix"
        with torch.no_grad():
            outs[mode] = net(xs)
            one = torch.cat([net(xs[i:i + 1]) for i in range(len(xs))])  # batch-1 fast path
        torch.testing.assert_close(one, outs[mode], atol=1e-5, rtol=1e-5)
        macs[mode] = effective_macs(net, [xs]).per_input
    torch.testing.assert_close(outs["fast"], outs["masked"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["gathered"], outs["masked"], atol=1e-5, rtol=1e-5)
    assert macs["fast"] == pytest.approx(macs["masked"])
    assert macs["gathered"] == pytest.approx(macs["masked"])
    assert len(set(macs["fast"])) > 1  # inputs really compute different widths
    dense = count_macs(model, xs[:1]).macs
    assert max(macs["fast"]) < dense
    # the per-input widths are those the fast block's rule gives its conv1 features
    fast = _prefix(model, "fast")
    block = fast.model.layer3[0]
    assert isinstance(block, InstanceWidthBlock) and len(block.widths) > 1
    with torch.no_grad():
        h = block._conv1(fast.model.layer2(fast.model.layer1(
            torch.relu(fast.model.conv1(xs)))))
    widths = [block.widths[block.lut[max(1, k)]] for k in block.counts(h)]
    assert all(1 <= w <= block.w1.shape[0] for w in widths)


def test_fast_at_keep_one_is_dense() -> None:
    model = _resnet()
    net = _prefix(model, "fast", keep=1.0)
    with torch.no_grad():
        torch.testing.assert_close(net(X), model(X), atol=1e-4, rtol=1e-4)


def test_prefix_rule_floors_at_one_channel() -> None:
    net = _prefix(_resnet(), "fast", keep=0.25)
    block = net.model.layer3[0]
    h = torch.zeros(2, block.w1.shape[0], 8, 8)
    assert block.counts(h) == [0, 0]
    assert all(block.widths[j] >= 1 for j in block._indices(h).tolist())


def test_fast_needs_basic_blocks_and_the_prefix_rule() -> None:
    model = create_model("test_convnet").eval()
    with pytest.raises(PrunebenchError, match="residual network of basic blocks"):
        METHOD.apply(model, PruningConfig("instance_sparsity", global_keep=0.5,
                                          exec_mode="fast"), PruneContext(X[:1]))
    with pytest.raises(PrunebenchError, match="runs rule prefix"):
        _prefix(_resnet(), "fast", rule="exact")
    with pytest.raises(PrunebenchError, match="select='maybe' .* one of cv, all"):
        METHOD.apply(_resnet(), PruningConfig("instance_sparsity", global_keep=0.5,
                                              options={"select": "maybe"}),
                     PruneContext(X[:1]))


def test_feature_decay_penalty_has_gradient() -> None:
    model = create_model("test_resnet").train()
    decay = FeatureDecay(model, 1e-3)
    out = model(X)
    penalty = decay.loss_hook(model, X, out, torch.zeros(4, dtype=torch.long))
    assert penalty is not None and penalty.item() > 0
    penalty.backward()
    assert model.layer1[0].conv1.weight.grad is not None
    assert decay.penalty() is None  # maps are consumed once
    decay.remove()
    model(X)
    assert decay.penalty() is None


def test_feature_decay_weight_ramps_up() -> None:
    model = create_model("test_resnet").train()
    decay = FeatureDecay(model, 0.4, warmup_steps=4)
    weights = []
    for _ in range(6):
        weights.append(decay.weight())
        model(X)
        decay.penalty()
    decay.remove()
    assert weights == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    with pytest.raises(PrunebenchError, match="warm-up"):
        FeatureDecay(model, 0.1, warmup_steps=-1)


def _site_norm(model: nn.Module, inputs: torch.Tensor) -> float:
    """Mean over inputs of the summed channel RMS norms of every gated map."""
    norms = site_attention(model, find_sites(model), inputs, power=2.0)
    return float(sum(v.sum(1).mean() for v in norms.values()))


def test_feature_decay_lowers_feature_norms() -> None:
    """A few steps with feature decay leave the gated maps with smaller norms than the same
    steps without it, from the same start."""
    splits = load_dataset("digits")
    torch.manual_seed(0)
    start = create_model("test_resnet", 10, 1)
    recipe = DEFAULT_RECIPE.with_(epochs=1, batch_size=64, seed=0)
    plain = finetune_dynamic(copy.deepcopy(start), splits, recipe, progress=False)
    decayed = finetune_dynamic(copy.deepcopy(start), splits, recipe, feature_decay=0.2,
                               progress=False)
    val = torch.stack([splits.val[i][0] for i in range(128)])
    assert not any(m.training for m in decayed.modules())
    assert _site_norm(decayed, val) < 0.7 * _site_norm(plain, val)


def test_silent_channels_are_dropped_even_when_the_quantile_is_zero() -> None:
    """Feature decay can silence more than 1 - keep of a layer's channels: the threshold is then
    0, which must not turn the gate into a pass-through that computes every silent channel."""
    from prunebench.harness.pruning.dynamic.gates import GateRule, channel_mask
    from prunebench.harness.pruning.dynamic.instance_sparsity import SILENT

    att = torch.tensor([[0.0, 0.0, 0.0, 2.0], [0.0, 1.0, 0.0, 0.0]])
    rule = GateRule("absolute", max(float(torch.quantile(att.flatten(), 0.5)), SILENT), 1.0, 2.0)
    assert not rule.passthrough
    assert channel_mask(att, rule).tolist() == [[False, False, False, True],
                                                [False, True, False, False]]
