"""Every registered model runs a forward pass on its nominal input with the right output shape."""

from __future__ import annotations

import pytest
import torch

from prunebench.harness.errors import UnknownNameError
from prunebench.harness.models import MODELS, create_model, nominal_input_size

FAST = [n for n in MODELS.list() if MODELS.metadata(n)["family"] in ("cifar", "test")]
# a forward pass at ImageNet geometry for one network of each torchvision family (all 80 are
# registered; tests/harness/test_user_models.py checks that they are)
SLOW = ["tv_resnet18", "tv_resnet50", "tv_mobilenet_v2", "tv_vgg16", "tv_efficientnet_b0",
        "tv_densenet121", "tv_convnext_tiny", "tv_regnet_x_400mf", "tv_shufflenet_v2_x1_0",
        "tv_inception_v3", "tv_vit_b_16"]


def _forward(name: str, num_classes: int, in_channels: int) -> None:
    model = create_model(name, num_classes=num_classes, in_channels=in_channels).eval()
    c, h, w = nominal_input_size(name, in_channels)
    assert c == in_channels
    with torch.inference_mode():
        out = model(torch.randn(2, c, h, w))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize(("num_classes", "in_channels"), [(10, 3), (7, 1)])
def test_cifar_and_test_models_forward(name: str, num_classes: int, in_channels: int) -> None:
    _forward(name, num_classes, in_channels)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
@pytest.mark.parametrize(("num_classes", "in_channels"), [(1000, 3), (5, 1)])
def test_torchvision_models_forward(name: str, num_classes: int, in_channels: int) -> None:
    _forward(name, num_classes, in_channels)


def test_metadata_is_complete() -> None:
    for name in MODELS.list():
        meta = MODELS.metadata(name)
        assert meta["family"] in {"cifar", "test", "imagenet", "user"} and meta["description"]
        if meta["family"] != "user":  # a user's factory may leave its input size open
            assert len(meta["input_size"]) == 3


def test_resnet_depths_have_expected_blocks() -> None:
    for depth in (20, 32, 56, 110):
        model = create_model(f"resnet{depth}")
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)
                 and m.kernel_size == (3, 3)]
        assert len(convs) == depth - 1  # stem + 2 per block; the fc makes depth


def test_unknown_model_names_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="unknown model 'resnet21'; known models: .*resnet2"):
        create_model("resnet21")
