"""Microbleed detector: torchvision Mask R-CNN on SWI slices, built from torchvision parts by name.

Architectures (`detector.architecture` in the manifest), both randomly initialised (nothing is downloaded):

- `maskrcnn_tiny_fpn`: the shipped demo. A torchvision-style ResNet body with one BasicBlock per stage,
  widths 16-32-64-128, a stride-2 stem without max-pooling (so the finest FPN level is at stride 2, where a
  2 mm bleed is still a few cells), torchvision's `BackboneWithFPN` (32 channels), square anchors 4-64 px,
  two-layer box head (128) and a two-convolution mask head. ~0.4 M parameters.
- `maskrcnn_resnet50_fpn`: torchvision's full-size Mask R-CNN (ResNet-50 FPN), with anchors 8-128 px.

The input is three channels, the slices above and below the one read stacked around it (a vein runs on
through its neighbours, a bleed ends), scaled as in `microbleeds.swi_input`. Outputs are torchvision's:
boxes, scores, labels (1 = microbleed) and mask probabilities at input resolution. `roi_features` gives
the box head's representation of given boxes: the detector features the MIL classifier reads.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.resnet import BasicBlock
from torchvision.ops import MultiScaleRoIAlign

from dicom_node.errors import ModelError

DETECTORS = ("maskrcnn_tiny_fpn", "maskrcnn_resnet50_fpn")
DEFAULT_ANCHORS = {"maskrcnn_tiny_fpn": (4, 8, 16, 32, 64), "maskrcnn_resnet50_fpn": (8, 16, 32, 64, 128)}
IN_CHANNELS = 3


class TinyResNetBody(nn.Module):
    """Stem (3x3, stride 2) and four single-BasicBlock stages at strides 2, 4, 8, 16."""

    def __init__(self, in_channels: int = IN_CHANNELS, widths: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        inplanes = widths[0]
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or inplanes != planes:
                down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
            self.add_module(f"layer{i + 1}", nn.Sequential(BasicBlock(inplanes, planes, stride, down)))
            inplanes = planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # only used through IntermediateLayerGetter
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return x


def _anchors(sizes: Sequence[int]) -> AnchorGenerator:
    return AnchorGenerator(sizes=tuple((int(s),) for s in sizes), aspect_ratios=((1.0,),) * len(sizes))


def build_detector(architecture: str, size: int, anchor_sizes: Sequence[int] | None = None) -> MaskRCNN:
    """A fresh detector for `size` x `size` inputs (the transform never resizes them)."""
    if architecture not in DETECTORS:
        raise ModelError(f"unknown detector {architecture!r}; supported: {', '.join(DETECTORS)}")
    sizes = tuple(anchor_sizes or DEFAULT_ANCHORS[architecture])
    common = {"min_size": size, "max_size": size, "image_mean": [0.5] * 3, "image_std": [0.25] * 3,
                  "rpn_anchor_generator": _anchors(sizes), "box_detections_per_img": 60, "box_score_thresh": 0.05,
                  "rpn_pre_nms_top_n_test": 400, "rpn_post_nms_top_n_test": 150, "rpn_pre_nms_top_n_train": 800,
                  "rpn_post_nms_top_n_train": 300, "rpn_batch_size_per_image": 128, "box_batch_size_per_image": 128}
    if architecture == "maskrcnn_resnet50_fpn":
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        if len(sizes) != 5:
            raise ModelError("maskrcnn_resnet50_fpn needs 5 anchor sizes (one per FPN level)")
        return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2, **common)
    body = TinyResNetBody()
    channels = 32
    backbone = BackboneWithFPN(body, return_layers={f"layer{i}": str(i - 1) for i in range(1, 5)},
                               in_channels_list=[16, 32, 64, 128], out_channels=channels)
    if len(sizes) != 5:
        raise ModelError("maskrcnn_tiny_fpn needs 5 anchor sizes (four FPN levels and the pooled one)")
    levels = ["0", "1", "2", "3"]
    return MaskRCNN(
        backbone, num_classes=None,
        box_roi_pool=MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(channels * 7 * 7, 128),
        box_predictor=FastRCNNPredictor(128, 2),
        mask_roi_pool=MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=2),
        mask_head=MaskRCNNHeads(channels, [32, 32], 1),
        mask_predictor=MaskRCNNPredictor(32, 32, 2),
        **common,
    )


def feature_size(model: MaskRCNN) -> int:
    """Length of the box head's representation (`roi_features`)."""
    head = model.roi_heads.box_head
    last = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
    return int(last.out_features)


@torch.no_grad()
def detect_with_features(model: MaskRCNN, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Inference on a batch (B, 3, S, S): torchvision's detections per image plus `features`, the box head's
    representation of each detected box (N, feature_size), and `peak`, the highest bleed probability the box
    head gives any of the image's proposals (what the detector thinks of its likeliest region, also when
    nothing is detected)."""
    model.eval()
    image_list, _ = model.transform(list(images))
    features = model.backbone(image_list.tensors)
    proposals, _ = model.rpn(image_list, features)
    logits: list[torch.Tensor] = []  # the box predictor's class logits for every proposal, as roi_heads runs it
    hook = model.roi_heads.box_predictor.register_forward_hook(lambda _m, _i, out: logits.append(out[0]))
    try:
        detections, _ = model.roi_heads(features, proposals, image_list.image_sizes)
    finally:
        hook.remove()
    bleed = torch.softmax(logits[0], dim=-1)[:, 1]
    peaks = [p.max() if len(p) else bleed.new_zeros(()) for p in bleed.split([len(p) for p in proposals])]
    boxes = [d["boxes"] for d in detections]
    pooled = model.roi_heads.box_roi_pool(features, boxes, image_list.image_sizes)
    reps = model.roi_heads.box_head(pooled) if sum(len(b) for b in boxes) else torch.zeros((0, feature_size(model)))
    detections = model.transform.postprocess(detections, image_list.image_sizes, [tuple(images.shape[-2:])] * len(images))
    out = []
    start = 0
    for d, peak in zip(detections, peaks, strict=True):
        n = len(d["boxes"])
        d = dict(d)
        d["features"] = reps[start: start + n]
        d["peak"] = peak
        start += n
        out.append(d)
    return out


def state_dict_cpu(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict((k, v.detach().cpu()) for k, v in model.state_dict().items())
