"""Grad-CAM (Selvaraju et al. 2017) on a network's last convolutional block.

The map is computed at model-input resolution, mapped back to the source image (rows x columns) with
the `Placement` used in preprocessing, and scaled to [0, 1]. It is an explanation aid for the overlay,
not a segmentation; where a model without masks must still place a mark, `localise.peak_inside` takes
its peak inside the head.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dicom_node.ml.nets import last_conv_block
from dicom_node.ml.preprocess import Placement, unplace


def grad_cam(model: nn.Module, x: torch.Tensor, output_index: int) -> np.ndarray:
    """Grad-CAM for one input `x` (1, C, H, W) and one output logit -> (H, W) float32 in [0, 1].

    Runs in float32 with gradients enabled (whatever the caller's autocast/inference mode).
    """
    layer = last_conv_block(model)
    store: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inp: object, out: torch.Tensor) -> None:
        out.retain_grad()
        store["act"] = out

    handle = layer.register_forward_hook(hook)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            inp = x.detach().clone().float().requires_grad_(True)
            logits = model(inp)
            model.zero_grad(set_to_none=True)
            logits[0, output_index].backward()
            act = store["act"]
            if act.grad is None:
                raise RuntimeError("Grad-CAM: no gradient reached the last convolutional block")
            weights = act.grad.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * act).sum(dim=1, keepdim=True))
            cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
            heat: np.ndarray = cam.detach().cpu().numpy().astype(np.float32)
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    peak = float(heat.max())
    return heat / peak if peak > 0 else heat


def to_source(cam: np.ndarray, p: Placement) -> np.ndarray:
    """A model-input map back onto the source image's rows x columns, float32 in [0, 1]."""
    heat = np.clip(unplace(cam, p), 0.0, None)
    peak = float(heat.max())
    return (heat / peak if peak > 0 else heat).astype(np.float32)
