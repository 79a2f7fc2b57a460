"""A user's own CNN, registered by ``--model prunebench_user_nets:small_cnn`` (tests only).

Lives outside the project; the tests put this folder on ``sys.path`` as a user's package would be.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two conv-BN-ReLU layers and a linear head."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def small_cnn(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """A user's small CNN (two convolutions)."""
    return SmallCNN(num_classes, in_channels)


small_cnn.input_size = (1, 32, 32)  # type: ignore[attr-defined]


def not_a_model(num_classes: int = 10, in_channels: int = 3) -> str:
    """A factory that returns something else than a network."""
    return "oops"
