"""Instance-wise sparsity: layer selection by coefficient of variation, thresholds, decay."""

from __future__ import annotations

import pytest
import torch

from prunebench.harness.models import create_model
from prunebench.harness.pruning import PruneContext, PruningConfig, get_method
from prunebench.harness.pruning.dynamic.instance_sparsity import (
    coefficient_of_variation,
    select_layers,
)
from prunebench.harness.pruning.dynamic.training import FeatureDecay

pytestmark = pytest.mark.filterwarnings("ignore:no data set given")
X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def test_select_layers_by_cv() -> None:
    steady = torch.ones(10, 4)
    varied = torch.linspace(0.1, 2.0, 10)[:, None].repeat(1, 4)
    assert coefficient_of_variation(steady) == pytest.approx(0.0)
    assert select_layers({"a": steady, "b": varied, "c": steady * 2}, 0.34) == ["b"]
    assert select_layers({"a": steady, "b": varied}, 1.0) == ["a", "b"]


def test_selection_gates_only_chosen_layers() -> None:
    model = create_model("test_resnet").eval()
    cfg = PruningConfig("instance_sparsity", global_keep=0.5, options={"select": 0.34})
    net = get_method("instance_sparsity").apply(model, cfg, PruneContext(X[:1]))
    assert len(net.prunebench_dynamic["selected"]) == 1
    cfg = PruningConfig("instance_sparsity", keep={"layer1.0.conv1": 0.5, "layer2.0.conv1": 0.5},
                        options={"select": 0.34})
    net = get_method("instance_sparsity").apply(model, cfg, PruneContext(X[:1]))
    assert {"layer1.0.conv1", "layer2.0.conv1"} <= set(net.prunebench_dynamic["selected"])


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
