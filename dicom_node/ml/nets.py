"""Classifier networks by name: torchvision's ResNet family and a narrow ResNet for the shipped demo weights.

All networks take `in_channels` input channels and return `num_outputs` logits, and expose their last
convolutional block as `.layer4` (where Grad-CAM hooks in).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.resnet import BasicBlock

from dicom_node.errors import ModelError


class NarrowResNet(nn.Module):
    """A torchvision-style ResNet with one BasicBlock per stage and few channels (~0.3 M parameters at
    widths 16-32-64-128): small enough to ship and to run at a few hundred slices/s on a CPU."""

    def __init__(self, in_channels: int, num_outputs: int, widths: tuple[int, int, int, int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        layers = []
        inplanes = widths[0]
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
            layers.append(nn.Sequential(BasicBlock(inplanes, planes, stride, downsample)))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_outputs)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _torchvision(factory: Callable[..., resnet.ResNet]) -> Callable[[int, int], nn.Module]:
    def build(in_channels: int, num_outputs: int) -> nn.Module:
        model = factory(weights=None, num_classes=num_outputs)
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return model

    return build


ARCHITECTURES: dict[str, Callable[[int, int], nn.Module]] = {
    "resnet18": _torchvision(resnet.resnet18),
    "resnet34": _torchvision(resnet.resnet34),
    "resnet50": _torchvision(resnet.resnet50),
    "resnext50_32x4d": _torchvision(resnet.resnext50_32x4d),
    "narrow_resnet": lambda c, n: NarrowResNet(c, n),
    "narrow_resnet_w8": lambda c, n: NarrowResNet(c, n, widths=(8, 16, 32, 64)),
}


def build_model(architecture: str, in_channels: int, num_outputs: int) -> nn.Module:
    """A fresh (randomly initialised) network; raises ModelError for an unknown name."""
    try:
        factory = ARCHITECTURES[architecture]
    except KeyError:
        raise ModelError(
            f"unknown architecture {architecture!r}; supported: {', '.join(sorted(ARCHITECTURES))}"
        ) from None
    return factory(in_channels, num_outputs)


def last_conv_block(model: nn.Module) -> nn.Module:
    """The block Grad-CAM explains: `layer4` for every network built here."""
    layer = getattr(model, "layer4", None)
    if not isinstance(layer, nn.Module):
        raise ModelError(f"{type(model).__name__} has no layer4 block for Grad-CAM")
    return layer
