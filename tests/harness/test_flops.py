"""MAC counting: hand-computed layers exactly, torchvision references within 2%."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunebench.harness.measure.flops import (
    count_macs,
    effective_macs,
    module_macs,
    record_effective_macs,
)
from prunebench.harness.models import create_model


def test_conv_exact() -> None:
    conv = nn.Conv2d(3, 8, 3, stride=1, padding=1, bias=True)
    # every output element (8 x 16 x 16) takes 3 x 3 x 3 MACs; bias adds are not counted
    res = count_macs(conv, torch.randn(1, 3, 16, 16))
    assert res.macs == 8 * 16 * 16 * 27 and res.flops == 2 * res.macs


def test_grouped_conv_and_linear_exact() -> None:
    dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    assert count_macs(dw, torch.randn(2, 8, 10, 10)).macs == 2 * 8 * 10 * 10 * 9
    fc = nn.Linear(20, 7)
    assert count_macs(fc, torch.randn(3, 20)).macs == 3 * 20 * 7


def test_module_macs_split_the_count_by_module() -> None:
    # test_resnet at 32x32: the stem and block 1's convs run at 32x32, block 2 at 16x16
    model = create_model("test_resnet")
    x = torch.randn(1, 3, 32, 32)
    per = module_macs(model, x)
    assert per["conv1"] == 4 * 3 * 9 * 1024
    assert per["layer1.0.conv2"] == 4 * 4 * 9 * 1024
    assert per["layer2.0.conv1"] == 8 * 4 * 9 * 256
    assert per["layer2.0.shortcut.0"] == 8 * 4 * 256
    assert per["fc"] == 16 * 10
    assert "layer1.0.bn1" not in per and "layer1.0" not in per  # nothing of their own
    for name in ("test_resnet", "test_convnet", "resnet20", "mobilenetv2"):
        model = create_model(name)
        assert sum(module_macs(model, x).values()) == count_macs(model, x).macs


def test_module_macs_count_what_a_parent_computes_itself() -> None:
    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 4)
            self.w = nn.Parameter(torch.randn(4, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) @ self.w  # the matmul belongs to Head itself

    model = nn.Sequential(nn.Linear(5, 6), Head())
    per = module_macs(model, torch.randn(2, 5))
    assert per == {"0": 2 * 5 * 6, "1.fc": 2 * 6 * 4, "1": 2 * 4 * 3}
    assert sum(per.values()) == count_macs(model, torch.randn(2, 5)).macs


def test_count_restores_training_mode() -> None:
    m = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)).train()
    count_macs(m, torch.randn(1, 1, 4, 4))
    assert m.training


def test_effective_macs_static_equals_count() -> None:
    m = create_model("test_convnet").eval()
    x = torch.randn(3, 3, 32, 32)
    stats = effective_macs(m, [x, x[:2]])
    one = count_macs(m, x[:1]).macs
    assert not stats.dynamic and stats.per_input == (float(one),) * 5 and stats.mean == one


def test_effective_macs_dynamic_per_input() -> None:
    class Dyn(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            record_effective_macs(x.flatten(1).sum(1))  # "cost" = the input's value
            return x

    xs = [torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0], [4.0]])]
    stats = effective_macs(Dyn(), xs)
    assert stats.dynamic and stats.per_input == (1.0, 2.0, 3.0, 4.0)
    assert stats.mean == 2.5 and stats.p50 == 2.5 and stats.p90 == pytest.approx(3.7)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "gmacs"), [
    ("tv_resnet18", 1.81), ("tv_resnet50", 4.09), ("tv_mobilenet_v2", 0.30)])
def test_torchvision_reference_gmacs(name: str, gmacs: float) -> None:
    model = create_model(name, num_classes=1000)
    macs = count_macs(model, torch.randn(1, 3, 224, 224)).macs
    assert macs / 1e9 == pytest.approx(gmacs, rel=0.02)
