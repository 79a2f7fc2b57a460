"""Model zoo: CIFAR-style networks for 32x32 inputs, tiny test nets, torchvision adapters.

Every factory takes ``num_classes`` and ``in_channels``. Metadata records the nominal input size
``(C, H, W)`` (C is the default; ``in_channels`` replaces it) and the family.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from prunebench.harness.errors import PrunebenchError, UnknownNameError
from prunebench.harness.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


def create_model(name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Build the registered model ``name`` (unknown names raise, listing the known ones).

    ``name`` may also be ``package.module:factory`` (a user's model, registered on first use)
    or the name of an entry point of the group ``prunebench.models``
    (:mod:`prunebench.harness.user_models`).
    """
    model = MODELS.get(name)(num_classes=num_classes, in_channels=in_channels)
    if not isinstance(model, nn.Module):
        raise PrunebenchError(f"model factory {name!r} returned {type(model).__name__}, not a "
                              "torch.nn.Module; return the network from the factory")
    return model


def nominal_input_size(name: str, in_channels: int | None = None) -> tuple[int, int, int]:
    """The input size ``(C, H, W)`` the model was designed for."""
    size = MODELS.metadata(name).get("input_size")
    if size is None:
        raise PrunebenchError(f"model {name!r} declares no input size; give --input-shape "
                              "CxHxW or a data set (or set input_size = (C, H, W) on its "
                              "factory)")
    c, h, w = size
    return (in_channels or c, h, w)


# --------------------------------------------------------------------------- CIFAR ResNets
class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (option B: 1x1 conv + BN when the shape changes)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs (He et al. 2016, section 4.2): 3 stages of 16/32/64 channels."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3,
                 width: int = 16) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        layers, in_planes = [], width
        for i, planes in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _cifar_resnet(depth: int) -> ModelFactory:
    def factory(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        return CifarResNet(depth, num_classes, in_channels)

    return factory


for _depth in (20, 32, 56, 110):
    MODELS.add(f"resnet{_depth}", _cifar_resnet(_depth), input_size=(3, 32, 32), family="cifar",
               description=f"CIFAR ResNet-{_depth} (He et al. 2016), 16/32/64 channels")


# --------------------------------------------------------------------------- VGG-16-BN (CIFAR)
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class CifarVGG(nn.Module):
    """VGG-16 with batch norm for 32x32 inputs (one 512-wide classifier layer)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1, bias=False),
                           nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@MODELS.register("vgg16_bn", input_size=(3, 32, 32), family="cifar",
                 description="VGG-16 with batch norm for 32x32 inputs")
def vgg16_bn(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """VGG-16-BN for CIFAR-sized inputs."""
    return CifarVGG(num_classes, in_channels)


# --------------------------------------------------------------------------- MobileNetV2 (CIFAR)
class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class CifarMobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018) for 32x32 inputs: stride 1 in the stem and first stages."""

    # expansion, channels, repeats, stride (strides adapted to 32x32 as is common for CIFAR)
    _CFG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 32, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(32), nn.ReLU6(inplace=True)]
        c = 32
        for t, cout, n, s in self._CFG:
            for i in range(n):
                layers.append(InvertedResidual(c, cout, s if i == 0 else 1, t))
                c = cout
        layers += [nn.Conv2d(c, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1280, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@MODELS.register("mobilenetv2", input_size=(3, 32, 32), family="cifar",
                 description="MobileNetV2 for 32x32 inputs (inverted residual, depthwise)")
def mobilenetv2(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """MobileNetV2 for CIFAR-sized inputs."""
    return CifarMobileNetV2(num_classes, in_channels)


# --------------------------------------------------------------------------- tiny test nets
class TinyConvNet(nn.Module):
    """Three conv-BN-ReLU layers and a linear head: milliseconds per test."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * width)
        self.relu3 = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@MODELS.register("test_convnet", input_size=(3, 32, 32), family="test",
                 description="tiny 3-layer conv net for tests")
def test_convnet(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Tiny plain conv net (no residuals)."""
    return TinyConvNet(num_classes, in_channels)


@MODELS.register("test_resnet", input_size=(3, 32, 32), family="test",
                 description="tiny 8-layer CIFAR ResNet (width 4) for tests")
def test_resnet(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Tiny residual net: exercises coupled (residual) channels in milliseconds."""
    return CifarResNet(8, num_classes, in_channels, width=4)


# --------------------------------------------------------------------------- torchvision adapter
# Networks whose train-mode forward returns auxiliary heads beside the logits: built without
# them (training expects one logits tensor), with the initialisation torchvision's own weights
# were trained from.
_TV_OPTIONS: dict[str, dict[str, bool]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def _torchvision(name: str) -> ModelFactory:
    def factory(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
        import torchvision

        # weights=None: nothing is downloaded; users load their own (--weights, --checkpoint).
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes,
                                             **_TV_OPTIONS.get(name, {}))
        if in_channels != 3:
            _replace_stem(model, in_channels)
        return model

    return factory


def _replace_stem(model: nn.Module, in_channels: int) -> None:
    """Swap the first convolution for one taking ``in_channels`` inputs (same geometry)."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(parent, child_name, nn.Conv2d(
                    in_channels, child.out_channels, child.kernel_size, child.stride,
                    child.padding, child.dilation, child.groups, child.bias is not None))
                return


def _register_torchvision(registry: Registry[ModelFactory]) -> None:
    """``tv_<name>`` for every classification model of ``torchvision.models``, at the input
    size its ImageNet weights were evaluated at (torchvision's own metadata, nothing fetched)."""
    import torchvision

    for name in torchvision.models.list_models(module=torchvision.models):
        weights = next(iter(torchvision.models.get_model_weights(name)))
        side = int(weights.transforms.keywords["crop_size"])
        registry.add(f"tv_{name}", _torchvision(name), input_size=(3, side, side),
                     family="imagenet", description=f"torchvision {name} (ImageNet geometry, "
                     "random init; --weights loads a state_dict, nothing is downloaded)")


MODELS.add_lazy(_register_torchvision, lambda name: name.startswith("tv_"))


# --------------------------------------------------------------------------- user models
ENTRY_POINT_GROUP = "prunebench.models"


def _user_metadata(factory: object, where: str) -> dict[str, object]:
    size = getattr(factory, "input_size", None)
    if size is not None and not (isinstance(size, tuple | list) and len(size) == 3
                                 and all(isinstance(v, int) and v > 0 for v in size)):
        raise PrunebenchError(f"{where}: input_size {size!r} must be (C, H, W) in whole pixels, "
                              "e.g. (3, 32, 32)")
    doc = (getattr(factory, "__doc__", None) or "").strip().splitlines()
    meta: dict[str, object] = {"family": "user", "source": where,
                               "description": doc[0] if doc else f"user model {where}"}
    if size is not None:
        meta["input_size"] = tuple(size)
    return meta


def _resolve_user_model(name: str) -> tuple[ModelFactory, dict[str, object]] | None:
    """``package.module:factory`` -> that callable, imported now; the factory is called as
    ``factory(num_classes=N, in_channels=C)`` and may carry ``input_size = (C, H, W)``."""
    if ":" not in name:
        if not name.startswith("tv_") and f"tv_{name}" in MODELS:
            raise UnknownNameError(f"unknown model {name!r}; torchvision's {name} is "
                                   f"tv_{name} (see `prunebench models`)")
        return None
    import importlib

    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise PrunebenchError(f"model {name!r} is not package.module:factory; e.g. "
                              "--model mypackage.nets:small_cnn")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PrunebenchError(f"model {name!r}: module {module_name!r} cannot be imported "
                              f"({exc}); install it or put it on PYTHONPATH") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise PrunebenchError(f"model {name!r}: {module_name} has no callable {attr!r}; name a "
                              "function taking num_classes and in_channels")
    return factory, _user_metadata(factory, name)


def _register_entry_points(registry: Registry[ModelFactory]) -> None:
    """Every entry point of the group ``prunebench.models`` (its name -> its factory)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in registry._items:
            raise PrunebenchError(f"entry point {ep.name!r} ({ep.value}) of group "
                                  f"{ENTRY_POINT_GROUP} reuses a registered model name; "
                                  "rename the entry point")
        try:
            factory = ep.load()
        except Exception as exc:  # a broken third-party package: name it, whatever it raised
            raise PrunebenchError(f"entry point {ep.name!r} ({ep.value}) of group "
                                  f"{ENTRY_POINT_GROUP} fails to load ({type(exc).__name__}: "
                                  f"{exc}); fix or uninstall that package") from None
        registry.add(ep.name, factory, **_user_metadata(factory, f"entry point {ep.value}"))


MODELS.add_resolver(_resolve_user_model)
MODELS.add_lazy(_register_entry_points, lambda name: ":" not in name and
                not name.startswith("tv_"))
