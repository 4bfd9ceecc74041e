"""Classifier networks by name: torchvision's ResNet family and a narrow ResNet for the shipped demo weights.

All networks take `in_channels` input channels and return `num_outputs` logits, and expose their last
convolutional block as `.layer4` (where Grad-CAM hooks in). The `*_seg` architectures add a segmentation
head (a small U-Net decoder over the encoder's stages): `forward` still returns the classification
logits, `forward_with_masks` also returns mask logits at half the input resolution, one channel per
output except the first (ICH: the five subtypes, in manifest label order after "any").
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
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


class _Up(nn.Module):
    """Upsample x2, concatenate the skip connection, two 3x3 convolutions."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin + skip, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


class SegNarrowResNet(NarrowResNet):
    """NarrowResNet + a U-Net decoder: class logits from the pooled last stage (as NarrowResNet) and
    `num_masks` mask logits at half the input resolution from the decoder (strong annotation)."""

    def __init__(self, in_channels: int, num_outputs: int, num_masks: int,
                 widths: tuple[int, int, int, int] = (16, 32, 64, 128)) -> None:
        super().__init__(in_channels, num_outputs, widths)
        w0, w1, w2, w3 = widths
        self.up3 = _Up(w3, w2, w2)
        self.up2 = _Up(w2, w1, w1)
        self.up1 = _Up(w1, w0, w0)
        self.up0 = _Up(w0, w0, w0)
        self.mask_head = nn.Conv2d(w0, num_masks, 1)

    def forward_with_masks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f0 = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(self.maxpool(f0))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        logits = self.fc(torch.flatten(self.avgpool(f4), 1))
        d = self.up0(self.up1(self.up2(self.up3(f4, f3), f2), f1), f0)
        return logits, self.mask_head(d)


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """`model` (in eval mode) with each BatchNorm2d folded into the Conv2d before it, for inference: a
    module's `convN` with its `bnN` (torchvision's blocks, ours) and a Conv2d followed by a BatchNorm2d in
    an nn.Sequential. The outputs are the same to float rounding; 10 % less time for ICH's 512 px member."""
    for parent in list(model.modules()):
        children = dict(parent.named_children())
        pairs = [(n, "bn" + n[4:]) for n in children if n.startswith("conv") and n[4:].isdigit()]
        if isinstance(parent, nn.Sequential):
            names = list(children)
            pairs += list(itertools.pairwise(names))
        for conv_name, bn_name in pairs:
            conv, bn = children.get(conv_name), children.get(bn_name)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and not bn.training:
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Identity())
    return model


def has_masks(model: nn.Module) -> bool:
    return isinstance(model, SegNarrowResNet)


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
    "narrow_resnet_seg": lambda c, n: SegNarrowResNet(c, n, n - 1),
    "narrow_resnet_w8_seg": lambda c, n: SegNarrowResNet(c, n, n - 1, widths=(8, 16, 32, 64)),
}
SEGMENTATION_ARCHITECTURES = frozenset(a for a in ARCHITECTURES if a.endswith("_seg"))


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
