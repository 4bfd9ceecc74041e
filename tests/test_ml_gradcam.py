"""Grad-CAM maps back onto the source image geometry, and its peak becomes the finding's region."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dicom_node.ml.gradcam import grad_cam, to_source
from dicom_node.ml.localise import peak_inside
from dicom_node.ml.preprocess import resize_pad


class _SpotNet(nn.Module):
    """layer4 passes the input through (ReLU of a 1x1 conv); the logit is its global mean: Grad-CAM's map
    is then the input itself, so its peak must land on the input's bright spot."""

    def __init__(self) -> None:
        super().__init__()
        self.layer4 = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU())
        nn.init.constant_(self.layer4[0].weight, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(x).mean(dim=(2, 3))


def test_heat_map_peak_lands_on_the_source_spot() -> None:
    rows, cols = 200, 120  # not square: exercises the aspect-preserving placement and its inverse
    src = np.zeros((1, rows, cols), dtype=np.float32)
    src[0, 140:150, 30:40] = 1.0
    x, placement = resize_pad(src, 64)
    cam = grad_cam(_SpotNet(), torch.from_numpy(x[None]), 0)
    assert cam.shape == (64, 64) and cam.max() == 1.0 and cam.min() >= 0.0
    heat = to_source(cam, placement)
    assert heat.shape == (rows, cols) and heat.dtype == np.float32
    assert 0.0 <= heat.min() and heat.max() == 1.0
    (r, c), radius = peak_inside(heat, np.ones(heat.shape, bool))
    assert 135 <= r <= 155 and 25 <= c <= 45
    assert 3 <= radius <= 15


def test_grad_cam_works_inside_inference_mode() -> None:
    net = _SpotNet()  # loaded outside inference mode, as the registry does
    with torch.inference_mode():
        x = torch.rand(1, 1, 32, 32)  # an inference tensor, as the pipelines' inputs are
        cam = grad_cam(net, x, 0)
    assert cam.shape == (32, 32) and np.isfinite(cam).all()
