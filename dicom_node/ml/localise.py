"""Where a finding is, from a segmentation model's mask outputs (not from the explanation map).

Mask logits come out of the network at half the model input resolution; `to_source` maps one slice's
probabilities back onto the source image (rows x columns) with the preprocessing `Placement`. A
finding's region (`region_from_mask`) is its largest connected component on the key slice: the centre
is the component's innermost pixel (the maximum of its distance transform, so it lies inside the
lesion even for a crescent, whose centroid does not) and the radius that of a disc with the
component's area. Grad-CAM stays the overlay's heat map (an explanation); when a model without masks,
or a present label whose mask is empty, needs a location, `peak_inside` takes the heat map's peak
within the head (never in air).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from dicom_node.ml.preprocess import Placement, unplace

MASK_LEVEL = 0.5
HEAD_HU = -300.0  # pixels denser than this, with the holes filled, are the head


def to_source(mask_probs: np.ndarray, p: Placement) -> np.ndarray:
    """(M, h, w) probabilities at model resolution -> (M, rows, cols) float32 on the source image."""
    t = torch.from_numpy(np.ascontiguousarray(mask_probs, dtype=np.float32))[None]
    square = F.interpolate(t, size=(p.size, p.size), mode="bilinear", align_corners=False)[0].numpy()
    return np.stack([unplace(square[k], p) for k in range(square.shape[0])]).astype(np.float32)


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    return np.asarray(labels == 1 + int(np.argmax(sizes)))


def region_from_mask(mask: np.ndarray) -> tuple[tuple[float, float], float] | None:
    """((row, col), radius) of the mask's largest component, or None for an empty mask."""
    if not mask.any():
        return None
    comp = largest_component(mask)
    depth = ndimage.distance_transform_edt(np.pad(comp, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return (float(r), float(c)), max(1.0, math.sqrt(float(comp.sum()) / math.pi))


def near(mask: np.ndarray, row: float, col: float, pixels: int = 1) -> bool:
    """Is (row, col) on `mask` or within `pixels` of it (a square neighbourhood)?"""
    r, c = round(row), round(col)
    return bool(mask[max(0, r - pixels) : r + pixels + 1, max(0, c - pixels) : c + pixels + 1].any())


def mask_dice(found: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray], images: Iterable[str]) -> float | None:
    """Dice of `found` against `truth` (masks by SOP Instance UID) over `images`: an image missing from
    either counts as empty there; None when both are empty on every image."""
    inter = total = 0
    for uid in images:
        a, b = found.get(uid), truth.get(uid)
        if a is not None and b is not None:
            inter += int((a & b).sum())
        total += (int(a.sum()) if a is not None else 0) + (int(b.sum()) if b is not None else 0)
    return 2 * inter / total if total else None


def head_mask(hu: np.ndarray) -> np.ndarray:
    """The head on a CT slice: pixels denser than air, holes filled (the skull's contents included)."""
    return np.asarray(ndimage.binary_fill_holes(hu > HEAD_HU))


def signal_head_mask(image: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """The head on an MR image: its largest connected region brighter than `fraction` of the 99th
    percentile, holes filled (the magnitude background is noise well below that)."""
    img = np.asarray(image, dtype=np.float32)
    top = float(np.percentile(img, 99)) if img.size else 0.0
    if top <= 0:
        return np.zeros(img.shape, bool)
    return np.asarray(ndimage.binary_fill_holes(largest_component(img > fraction * top)))


def peak_inside(heat: np.ndarray, allowed: np.ndarray) -> tuple[tuple[float, float], float]:
    """The heat map's peak among `allowed` pixels (all pixels when none is allowed) and the radius of a
    disc with the area where the map is >= half that peak."""
    h = np.where(allowed, heat, -1.0) if allowed.any() else heat
    r, c = np.unravel_index(int(np.argmax(h)), h.shape)
    top = float(h[r, c])
    area = float((h >= 0.5 * top).sum()) if top > 0 else 1.0
    return (float(r), float(c)), max(1.0, math.sqrt(area / math.pi))
