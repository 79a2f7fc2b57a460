"""Dynamic pruning on torchvision ResNets (basic, bottleneck) and MobileNetV2 (inverted
residuals): sites read from the module graph, antidote and antidote_fast equal to their masked
references, effective MACs below dense, clear refusals."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.flops import count_macs, effective_macs
from prunebench.harness.models import create_model
from prunebench.harness.pruning import PruneContext, PruningConfig, get_method
from prunebench.harness.pruning.dynamic.export import exportable_reason
from prunebench.harness.pruning.dynamic.fast_blocks import FastBasicBlock
from prunebench.harness.pruning.dynamic.fast_chain import FastChainBlock
from prunebench.harness.pruning.dynamic.sites import find_sites

MakeModel = Callable[..., nn.Module]  # the bn_model fixture (tests/harness/pruning/conftest.py)
pytestmark = pytest.mark.filterwarnings("ignore:no data set given")

# not the seeded calibration images (seed 0): a threshold calibrated on an input sits exactly
# on one of its channel norms, where float rounding decides
X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def _apply(model: nn.Module, method: str, mode: str, **options: object) -> nn.Module:
    cfg = PruningConfig(method, global_keep=0.5, exec_mode=mode,
                        options={"calibration_samples": 32, **options}
                        if method == "antidote_fast" else dict(options))
    return get_method(method).apply(model, cfg, PruneContext(X[:1]))


def test_sites_of_each_kind() -> None:
    basic = {s.name: s for s in find_sites(create_model("tv_resnet18"))}
    s = basic["layer1.0.conv1"]  # torchvision shares one relu: the gate is bn1, applying it
    assert (s.gate, s.act, s.consumer) == ("layer1.0.bn1", "relu", "layer1.0.conv2")
    assert len(basic) == 8
    bottleneck = [s.name for s in find_sites(create_model("tv_resnet50"))]
    assert bottleneck[:2] == ["layer1.0.conv1", "layer1.0.conv2"] and len(bottleneck) == 32
    inverted = {s.name: s for s in find_sites(create_model("tv_mobilenet_v2"))}
    s = inverted["features.2.conv.0.0"]
    assert s.follow == ("features.2.conv.1.0",) and s.consumer == "features.2.conv.2"
    cifar = {s.name: s for s in find_sites(create_model("mobilenetv2"))}
    assert cifar["features.4.conv.0"].follow == ("features.4.conv.3",)
    # a block's input feeds its shortcut too: only AntiDote's input sites gate it
    with_inputs = [s.name for s in find_sites(create_model("tv_resnet18"), inputs=True)]
    assert with_inputs[:2] == ["layer1.0", "layer1.0.conv1"]


@pytest.mark.parametrize("name", ["tv_resnet18", "mobilenetv2",
                                  pytest.param("tv_resnet50", marks=pytest.mark.slow)])
def test_antidote_gathered_equals_masked(bn_model: MakeModel, name: str) -> None:
    model = bn_model(name)
    dense = count_macs(model, X[:1]).macs
    for inputs in (0, 1):
        masked = _apply(model, "antidote", "masked", inputs=inputs)
        gathered = _apply(model, "antidote", "gathered", inputs=inputs)
        with torch.no_grad():
            torch.testing.assert_close(gathered(X), masked(X), rtol=1e-4, atol=1e-4)
        m, g = effective_macs(masked, [X]).mean, effective_macs(gathered, [X]).mean
        assert m == pytest.approx(g) and m < 0.9 * dense


@pytest.mark.parametrize("name,block", [("tv_resnet18", FastBasicBlock),
                                        ("mobilenetv2", FastChainBlock),
                                        pytest.param("tv_resnet50", FastChainBlock,
                                                     marks=pytest.mark.slow)])
def test_antidote_fast_equals_its_references(bn_model: MakeModel, name: str, block: type) -> None:
    model = bn_model(name)
    dense = count_macs(model, X[:1]).macs
    nets = {mode: _apply(model, "antidote_fast", mode) for mode in ("masked", "gathered", "fast")}
    assert any(isinstance(m, block) for m in nets["fast"].modules())
    with torch.no_grad():
        ref = nets["masked"](X)
        for net in nets.values():
            torch.testing.assert_close(net(X), ref, rtol=1e-4, atol=1e-4)
            one_by_one = torch.cat([net(X[i:i + 1]) for i in range(len(X))])  # batch-1 path
            torch.testing.assert_close(one_by_one, ref, rtol=1e-4, atol=1e-4)
    macs = {mode: effective_macs(net, [X]).mean for mode, net in nets.items()}
    assert macs["fast"] == pytest.approx(macs["masked"]) == pytest.approx(macs["gathered"])
    assert macs["fast"] < 0.8 * dense


def _two_level_bottleneck(bn_model: MakeModel, mode: str
                          ) -> tuple[FastChainBlock, torch.Tensor]:
    """A torchvision bottleneck as a chain block at two levels, and inputs at both levels."""
    from prunebench.harness.pruning.dynamic.fast_chain import fast_units

    wrapper = nn.Sequential(bn_model("tv_resnet50").layer1[0])
    unit = next(iter(fast_units(wrapper, find_sites(wrapper)).values()))
    order = [torch.randperm(64, generator=torch.Generator().manual_seed(i)) for i in (1, 2)]
    x = torch.randn(4, 64, 8, 8, generator=torch.Generator().manual_seed(3))
    pw = torch.randn(64, generator=torch.Generator().manual_seed(4))
    cut = float((x.sum((2, 3)) @ pw).median()) / 64  # half of the inputs above, half below
    block = FastChainBlock(wrapper[0], unit.spec, unit.stages, order, (pw[None], torch.zeros(1)),
                           [cut], [[16, 48], [32, 8]], mode)
    return block, x


def test_chain_block_levels_follow_the_input(bn_model: MakeModel) -> None:
    """The masked reference zeroes exactly what the packed weights leave out, per input, so
    fast equals masked with inputs at different levels."""
    fast, x = _two_level_bottleneck(bn_model, "fast")
    masked, _ = _two_level_bottleneck(bn_model, "masked")
    assert set(fast._levels(x).tolist()) == {0, 1}
    with torch.no_grad():
        torch.testing.assert_close(fast(x), masked(x), rtol=1e-4, atol=1e-4)


def test_chain_blocks_export_with_their_levels_as_branches(bn_model: MakeModel) -> None:
    """ONNX Runtime runs a chain block's exported ``If`` form with eager's outputs, for inputs
    at both levels (``Engine.lower`` refuses a lowering that differs)."""
    from dataclasses import replace

    from prunebench.harness.engines import get_engine
    from prunebench.harness.profiles import load_profile
    from prunebench.harness.pruning.dynamic.gates import DynamicNetwork

    block, x = _two_level_bottleneck(bn_model, "fast")
    net = DynamicNetwork(nn.Sequential(block), 0.0,
                         {"method": "antidote_fast", "exec_mode": "fast"}).eval()
    assert exportable_reason(net) is None
    profile = replace(load_profile("cpu-1t"), engine="onnxruntime", batch_sizes=(1,))
    lowered = get_engine("onnxruntime").lower(net, x[:1], profile,
                                              [x[i:i + 1] for i in range(len(x))])
    assert lowered.prunebench_engine.max_abs_diff < 1e-4


def test_refusals(bn_model: MakeModel) -> None:
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    with pytest.raises(PrunebenchError, match="no gateable layer in Sequential"):
        _apply(plain, "antidote", "masked")
    with pytest.raises(PrunebenchError, match="found no block it runs fast in CifarVGG"):
        _apply(create_model("vgg16_bn"), "antidote_fast", "fast")
    small = bn_model("mobilenetv2")
    with pytest.raises(PrunebenchError, match="basic blocks only"):
        _apply(small, "antidote_fast", "fast", decide="stage")
    with pytest.raises(PrunebenchError, match="basic blocks only"):
        _apply(small, "antidote_fast", "fast", rows=0.5)


def test_antidote_fast_networks_are_exportable(bn_model: MakeModel) -> None:
    for name in ("mobilenetv2", "tv_resnet18"):
        assert exportable_reason(_apply(bn_model(name), "antidote_fast", "fast")) is None


@pytest.mark.parametrize("name", ["tv_resnet18", "mobilenetv2"])
def test_instance_sparsity_exact_gathered_equals_masked(bn_model: MakeModel, name: str) -> None:
    model = bn_model(name)
    opts = {"fraction": 0.25, "calibration_samples": 16}  # a few sites: each calibrates anew
    masked, gathered = (_apply(model, "instance_sparsity", mode, **opts)
                        for mode in ("masked", "gathered"))
    with torch.no_grad():
        torch.testing.assert_close(gathered(X), masked(X), rtol=1e-4, atol=1e-4)
    assert effective_macs(masked, [X]).mean == pytest.approx(effective_macs(gathered, [X]).mean)
    assert effective_macs(masked, [X]).mean < count_macs(model, X[:1]).macs


def test_instance_sparsity_prefix_on_torchvision_basic_blocks_only(bn_model: MakeModel) -> None:
    opts = {"select": "all", "calibration_samples": 16}
    model = bn_model("tv_resnet18")
    fast, masked = (_apply(model, "instance_sparsity", mode, rule="prefix", **opts)
                    for mode in ("fast", "masked"))
    with torch.no_grad():
        torch.testing.assert_close(fast(X), masked(X), rtol=1e-4, atol=1e-4)
    with pytest.raises(PrunebenchError, match="needs a residual network of basic blocks"):
        _apply(create_model("mobilenetv2"), "instance_sparsity", "fast", **opts)
