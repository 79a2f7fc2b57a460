"""Dynamic methods by hand: effective MACs counted layer by layer, sites, input gates.

What every dynamic method guarantees is in ``tests/harness/pruning/test_conformance.py``.
"""

from __future__ import annotations

import pytest
import torch

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.measure.flops import count_macs, effective_macs
from prunebench.harness.models import create_model
from prunebench.harness.pruning import PruneContext, PruningConfig, get_method
from prunebench.harness.pruning.dynamic.build import gated_layers

pytestmark = pytest.mark.filterwarnings("ignore:no data set given")

def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name).eval()
    for m in model.modules():  # non-trivial BN so attention differs between channels
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return model


def _apply(model: torch.nn.Module, method: str, keep: float, mode: str, options: dict
           ) -> torch.nn.Module:
    cfg = PruningConfig(method, global_keep=keep, exec_mode=mode, options=options)
    return get_method(method).apply(model, cfg, PruneContext(torch.randn(1, 3, 32, 32)))


X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_hand_count_antidote_test_resnet() -> None:
    # test_resnet: stem 4x3x9x1024; block1 conv1/conv2 4x4x9x1024 each; block2 (stride 2, 16x16)
    # conv1 8x4x9x256, conv2 8x8x9x256, shortcut 8x4x256; block3 (8x8) conv1 16x8x9x64,
    # conv2 16x16x9x64, shortcut 16x8x64; fc 16x10.
    dense = 110592 + 2 * 147456 + (73728 + 147456 + 8192) + (73728 + 147456 + 8192) + 160
    assert count_macs(_model("test_resnet"), X[:1]).macs == dense
    # keep 0.5: each conv2 reads half its input channels; each gate reads its map once (C x HW)
    gated = dense - 3 * 147456 + 3 * 73728 + (4 * 1024 + 8 * 256 + 16 * 64)
    net = _apply(_model("test_resnet"), "antidote", 0.5, "gathered", {})
    assert effective_macs(net, [X]).per_input == pytest.approx([gated] * 3)
    # columns 0.5 on top: conv2 computes half of its output positions, column attention read
    cols = dense - 3 * 147456 + 3 * 73728 // 2 + 2 * (4 * 1024 + 8 * 256 + 16 * 64)
    net = _apply(_model("test_resnet"), "antidote", 0.5, "gathered", {"columns": 0.5})
    assert effective_macs(net, [X]).per_input == pytest.approx([cols] * 3)


def test_hand_count_antidote_inputs_test_resnet() -> None:
    """inputs=1: each block's conv1 also reads half its input channels, chosen by the block
    input's attention (read once, C x HW); the shortcuts still read every channel."""
    dense = count_macs(_model("test_resnet"), X[:1]).macs
    internal = dense - 3 * 147456 + 3 * 73728 + (4 * 1024 + 8 * 256 + 16 * 64)
    conv1 = 147456 + 73728 + 73728  # block1 (4 in), block2 (4 in, stride 2), block3 (8 in)
    inputs = internal - conv1 // 2 + (4 * 1024 + 4 * 1024 + 8 * 256)
    net = _apply(_model("test_resnet"), "antidote", 0.5, "gathered", {"inputs": 1})
    assert effective_macs(net, [X]).per_input == pytest.approx([inputs] * 3)
    assert net.prunebench_dynamic["gated"] == sorted([
        "layer1.0", "layer1.0.conv1", "layer2.0", "layer2.0.conv1", "layer3.0",
        "layer3.0.conv1"])


def test_hand_count_antidote_fast_test_resnet() -> None:
    """At reduced widths each conv costs k*k*c_in*c_out*H*W at the width its input chose, plus
    the decision as ``fast_blocks.py`` documents it: a predicting block reads its input once
    (C_in*H*W adds) and multiplies the C_in channel sums by a C_in x C_hidden matrix."""
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    # keep 0.4: every block calibrates two or three widths (1-2, 3-4, 6-8 of 4, 8, 16)
    net = _apply(_model("test_resnet"), "antidote_fast", 0.4, "fast", {"round_to": 1})
    blocks = [net.model.layer1[0], net.model.layer2[0], net.model.layer3[0]]
    seen: dict[int, torch.Tensor] = {}
    hooks = [b.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0]))
             for i, b in enumerate(blocks)]
    recorded = effective_macs(net, [x]).per_input
    for h in hooks:
        h.remove()
    # the width every block chose for every input: (8 inputs, 3 blocks)
    chosen = [[b.widths[j] for j in b._choose(seen[i]).tolist()] for i, b in enumerate(blocks)]
    widths = list(zip(*chosen, strict=True))
    assert all(b.predict for b in blocks) and len(set(widths)) > 1  # widths differ per input
    stem, fc = 4 * 3 * 9 * 32 * 32, 16 * 10
    decision = [4 * 32 * 32 + 4 * 4, 4 * 32 * 32 + 4 * 8, 8 * 16 * 16 + 8 * 16]
    for (k1, k2, k3), got in zip(widths, recorded, strict=True):
        block1 = 3 * 3 * 4 * k1 * 32 * 32 + 3 * 3 * k1 * 4 * 32 * 32
        block2 = 3 * 3 * 4 * k2 * 16 * 16 + 3 * 3 * k2 * 8 * 16 * 16 + 4 * 8 * 16 * 16
        block3 = 3 * 3 * 8 * k3 * 8 * 8 + 3 * 3 * k3 * 16 * 8 * 8 + 8 * 16 * 8 * 8
        decide = sum(d for d, b in zip(decision, blocks, strict=True) if b.predict)
        assert got == stem + block1 + block2 + block3 + fc + decide


def test_input_gates_leave_the_shortcut_whole() -> None:
    """Only conv1 sees the gated input: with conv1 zeroed, the block output is the same whatever
    the input gate keeps, since the shortcut adds the whole input."""
    model = _model("test_resnet")
    for block in (model.layer1[0], model.layer2[0], model.layer3[0]):
        block.conv2.weight.data.zero_()
    outs = [_apply(model, "antidote", keep, "masked", {"inputs": 1})
            for keep in (1.0, 0.25)]
    with torch.no_grad():
        torch.testing.assert_close(outs[0](X), outs[1](X))
    cfg = PruningConfig("antidote", keep={"layer2.0": 0.5}, exec_mode="masked",
                        options={"inputs": 1})
    net = get_method("antidote").apply(model, cfg, PruneContext(X[:1]))
    assert net.prunebench_dynamic["inputs"] is True
    with pytest.raises(PrunebenchError, match="option inputs=2"):
        _apply(model, "antidote", 0.5, "masked", {"inputs": 2})
    with pytest.raises(PrunebenchError, match="unknown gated layer"):  # needs inputs=1
        get_method("antidote").apply(model, PruningConfig(
            "antidote", keep={"layer2.0": 0.5}, exec_mode="masked"), PruneContext(X[:1]))


def test_gated_layers() -> None:
    assert gated_layers(create_model("test_resnet")) == [
        "layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1"]
    assert gated_layers(create_model("test_convnet")) == ["conv1", "conv2"]
    assert len(gated_layers(create_model("resnet56"))) == 27
    # read from the graph: each VGG conv whose map the next conv reads (12 of 13)
    assert gated_layers(create_model("vgg16_bn"))[:3] == ["features.0", "features.3",
                                                          "features.7"]
    assert len(gated_layers(create_model("vgg16_bn"))) == 12
    # MobileNetV2: the stem and every expand output (its depthwise conv follows the gate)
    assert len(gated_layers(create_model("mobilenetv2"))) == 17
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
    with pytest.raises(PrunebenchError, match="no gateable layer"):
        _apply(plain, "antidote", 0.5, "masked", {})
