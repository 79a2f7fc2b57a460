"""Shared fixtures of the pruning tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from prunebench.harness.models import create_model


@pytest.fixture
def bn_model() -> Callable[..., nn.Module]:
    """``bn_model(name, num_classes=10)``: a registered model in eval mode, seeded random weights
    and non-trivial BatchNorm statistics (so folding, masks and attention differ per channel)."""
    def make(name: str, num_classes: int = 10) -> nn.Module:
        torch.manual_seed(0)
        model = create_model(name, num_classes).eval()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.3, 0.3)
        return model
    return make
