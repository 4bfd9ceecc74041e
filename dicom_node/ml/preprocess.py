"""Pixels to model input: decode, HU, windows, MR normalisation, aspect-preserving resize and pad.

Every function here is pure numpy/torch on arrays, except `read_image`, which decodes one file.
`Placement` records how a source image was fitted into the square model input, so explanation maps
can be mapped back to the source image's rows x columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom
import torch
import torch.nn.functional as F

from dicom_node.errors import PixelDataError

# The three ICH windows (centre, width) in HU, stacked as channels in this order.
ICH_WINDOWS: tuple[tuple[float, float], ...] = ((40.0, 80.0), (80.0, 200.0), (40.0, 380.0))
ICH_WINDOW_NAMES: tuple[str, ...] = ("brain", "subdural", "soft_tissue")


@dataclass(frozen=True)
class Placement:
    """Source rows x cols scaled by `scale` and placed at (top, left) in a size x size square."""

    rows: int
    cols: int
    size: int
    scale: float
    top: int
    left: int

    @property
    def scaled_rows(self) -> int:
        return max(1, round(self.rows * self.scale))

    @property
    def scaled_cols(self) -> int:
        return max(1, round(self.cols * self.scale))


def read_image(path: str) -> np.ndarray:
    """Decode one single-frame image to float32 in modality units (HU for CT: slope/intercept applied)."""
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for unsupported/corrupt pixel data
        raise PixelDataError(f"cannot decode pixel data of {path}: {type(exc).__name__}: {exc}") from exc
    if pixels.ndim != 2:
        raise PixelDataError(f"{path}: expected one greyscale frame, got pixel array of shape {pixels.shape}")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return pixels.astype(np.float32) * slope + intercept


def apply_window(hu: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Linear window to [0, 1]: centre - width/2 -> 0, centre + width/2 -> 1, clipped outside."""
    lo = centre - width / 2.0
    return np.clip((hu - lo) / width, 0.0, 1.0).astype(np.float32)


def ct_windows(hu: np.ndarray, windows: Sequence[tuple[float, float]] = ICH_WINDOWS) -> np.ndarray:
    """HU image (H, W) -> (len(windows), H, W) float32 in [0, 1]."""
    return np.stack([apply_window(hu, c, w) for c, w in windows])


def mr_normalise(image: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0) -> np.ndarray:
    """Scale MR intensities so the low/high percentiles of the non-zero voxels map to 0 and 1 (clipped)."""
    values = image[image > 0]
    if values.size < 16:
        values = image.ravel()
    lo, hi = np.percentile(values, [low_pct, high_pct])
    if hi - lo < 1e-6:
        return np.zeros_like(image, dtype=np.float32)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def placement(rows: int, cols: int, size: int) -> Placement:
    scale = size / max(rows, cols)
    sr, sc = max(1, round(rows * scale)), max(1, round(cols * scale))
    return Placement(rows, cols, size, scale, (size - sr) // 2, (size - sc) // 2)


def resize_pad(channels: np.ndarray, size: int) -> tuple[np.ndarray, Placement]:
    """(C, H, W) -> (C, size, size): scale the longer side to `size` (aspect kept), centre, pad with 0."""
    c, h, w = channels.shape
    p = placement(h, w, size)
    t = torch.from_numpy(np.ascontiguousarray(channels, dtype=np.float32))[None]
    if (p.scaled_rows, p.scaled_cols) != (h, w):
        t = F.interpolate(t, size=(p.scaled_rows, p.scaled_cols), mode="bilinear", align_corners=False,
                          antialias=p.scale < 1)
    out = np.zeros((c, size, size), dtype=np.float32)
    out[:, p.top : p.top + p.scaled_rows, p.left : p.left + p.scaled_cols] = t[0].numpy()
    return out, p


def unplace(square: np.ndarray, p: Placement) -> np.ndarray:
    """Inverse of `resize_pad` for one map: (size, size) -> the source (rows, cols)."""
    crop = square[p.top : p.top + p.scaled_rows, p.left : p.left + p.scaled_cols]
    t = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(p.rows, p.cols), mode="bilinear", align_corners=False)[0, 0].numpy()


def ct_inputs(
    hu_slices: Sequence[np.ndarray],
    size: int,
    windows: Sequence[tuple[float, float]] = ICH_WINDOWS,
    context: int = 0,
) -> tuple[np.ndarray, list[Placement]]:
    """Model inputs of a sorted series, (N, len(windows) * (2*context+1), size, size), and each slice's
    placement: slice i's channels are the windows of slices i-context..i+context (clamped at the ends). Each
    slice is windowed and resized once and lent to its neighbours' context (windows and the resize act per
    channel, so this equals windowing and resizing each slice's stack on its own, at a third of the cost
    with one context slice)."""
    done = [resize_pad(ct_windows(hu, windows), size) for hu in hu_slices]
    n = len(done)
    out = np.empty((n, len(windows) * (2 * context + 1), size, size), dtype=np.float32)
    for i in range(n):
        for c, j in enumerate(range(i - context, i + context + 1)):
            out[i, c * len(windows) : (c + 1) * len(windows)] = done[min(max(j, 0), n - 1)][0]
    return out, [p for _, p in done]


def mr_input(image: np.ndarray, size: int, low_pct: float = 1.0, high_pct: float = 99.0) -> tuple[np.ndarray, Placement]:
    """Model input for one MR image: (1, size, size), percentile-normalised."""
    return resize_pad(mr_normalise(image, low_pct, high_pct)[None], size)
