"""The shape of the extra-axial collections: how long the blood the ensemble calls epidural is.

An epidural haematoma is a short biconvex lens held in by the sutures; a subdural one is a long crescent that
crosses them. The members now and then call part of a thick subdural crescent epidural, though their masks
outline it well (docs/models.md). So an ensemble can also measure its own served mask: the epidural and
subdural channels joined into 3D collections, each collection's length its longest in-plane extent (Feret
diameter, mm) over its slices. The study's feature is how far the shortest collection the epidural channel
marks runs past a reference length (`REFERENCE_MM`), as a clipped log-ratio: 0 for a lens whatever else the
study holds, 0 when nothing is marked epidural. It enters the fitted study logit of the labels the manifest
gives it a weight for (`ich_ensemble`), and its weight is fitted with the members' weights on the
calibration studies (`train_ensemble`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from scipy import ndimage

from dicom_node.errors import ModelError
from dicom_node.ml.localise import MASK_LEVEL

FEATURE = "epidural_collection_length"  # the manifest's name for the feature defined here
REFERENCE_MM = 64.0  # the feature is 0 at this length (the longest an epidural lens of the generator reaches)
CLIP = 2.0  # log2(length / REFERENCE_MM) beyond which the feature stops growing
MIN_AREA_MM2 = 20.0  # a collection smaller than this on every slice is noise, not a collection
MAX_POINTS = 256  # boundary points per slice the Feret diameter is measured on
LABELS = ("epidural",)  # the study labels whose fitted logit the feature enters
DEFAULT_FOV_MM = 230.0  # the field of view assumed for an image whose header has no Pixel Spacing


def collections(union: np.ndarray, epidural: np.ndarray, mm_per_px: float) -> list[tuple[float, bool]]:
    """(length mm, marked epidural) of each 3D connected collection of `union` (N, h, w) bool, slices in
    order; a collection is joined across neighbouring slices where it overlaps (8-connected in plane), is
    marked epidural when the `epidural` mask covers MIN_AREA_MM2 of it on some slice, and is dropped when it
    is smaller than that on every slice."""
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True
    structure[0, 1, 1] = structure[2, 1, 1] = True
    labels, _ = ndimage.label(union, structure=structure)
    min_px = MIN_AREA_MM2 / mm_per_px**2
    out = []
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        comp = labels[box] == k
        if comp.sum(axis=(1, 2)).max() < min_px:
            continue
        marked = bool((comp & epidural[box]).sum(axis=(1, 2)).max() >= min_px)
        out.append((max(_feret(sl) for sl in comp if sl.any()) * mm_per_px, marked))
    return out


def _feret(region: np.ndarray) -> float:
    """Largest distance (pixels, centre to centre, plus one) between two pixels of a 2D region."""
    edge = region & ~ndimage.binary_erosion(region)
    pts = np.argwhere(edge).astype(np.float64)
    if len(pts) > MAX_POINTS:
        pts = pts[np.linspace(0, len(pts) - 1, MAX_POINTS).astype(int)]
    if len(pts) < 2:
        return 1.0
    d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(axis=-1))
    return float(d.max()) + 1.0


def epidural_length_feature(masks: np.ndarray | None, mask_labels: tuple[str, ...], mm_per_px: float) -> float:
    """The study feature from the ensemble's mask probabilities (N, L-1, h, w), channels in `mask_labels`'
    order: how far the shortest collection the epidural channel marks runs past REFERENCE_MM,
    log2(length / REFERENCE_MM) clipped to [0, CLIP]; 0 when the mask marks no epidural collection. A lens
    scores 0 whatever else the study holds; a long crescent the mask calls partly epidural scores up to CLIP."""
    if masks is None:
        return 0.0
    m = np.asarray(masks) >= MASK_LEVEL
    e, s = mask_labels.index("epidural"), mask_labels.index("subdural")
    found = [length for length, marked in collections(m[:, e] | m[:, s], m[:, e], mm_per_px) if marked]
    if not found:
        return 0.0
    return float(np.clip(np.log2(min(found) / REFERENCE_MM), 0.0, CLIP))


def mm_per_grid_pixel(path: str, rows: int, cols: int, grid: int) -> float:
    """Millimetres per pixel of a size-`grid` mask square that covers the source image's longer side, from
    the source's Pixel Spacing; a header without one is taken to span DEFAULT_FOV_MM (a head CT's field)."""
    spacing = 0.0
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PixelSpacing"])
        value = ds.get("PixelSpacing")
        if value is not None and len(value) == 2:
            spacing = float(value[1]) if rows < cols else float(value[0])
    except (OSError, InvalidDicomError, ValueError, TypeError):
        spacing = 0.0
    if not np.isfinite(spacing) or spacing <= 0:
        return DEFAULT_FOV_MM / grid
    return spacing * max(rows, cols) / grid


def shape_entry(weights: np.ndarray, labels: tuple[str, ...]) -> dict[str, Any]:
    """The ensemble manifest's "shape" object: the feature's definition and its weight per label (L,)."""
    return {"feature": FEATURE, "reference_mm": REFERENCE_MM, "clip": CLIP, "min_area_mm2": MIN_AREA_MM2,
            "weights": {label: round(float(weights[j]), 6) for j, label in enumerate(labels) if label in LABELS}}


def shape_weights(entry: Any, labels: tuple[str, ...], where: str) -> np.ndarray | None:
    """(L,) the feature's weight per label from the manifest's "shape" object (0 for a label it does not
    enter), or None without one; an entry fitted for another definition of the feature is refused."""
    if entry is None:
        return None
    defined = {"feature": FEATURE, "reference_mm": REFERENCE_MM, "clip": CLIP, "min_area_mm2": MIN_AREA_MM2}
    if not isinstance(entry, dict) or any(entry.get(k) != v for k, v in defined.items()):
        raise ModelError(f"{where}: ensemble shape must be {defined} with a weight per label (this dicom-node "
                         f"measures that feature only), got {entry!r}")
    given = entry.get("weights")
    if not isinstance(given, dict) or not given or sorted(set(given) - set(LABELS)):
        raise ModelError(f"{where}: ensemble shape weights must give a number for some of {list(LABELS)}")
    out = np.zeros(len(labels))
    for label, w in given.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w):
            raise ModelError(f"{where}: ensemble shape weight for {label!r} must be a number, got {w!r}")
        out[labels.index(label)] = float(w)
    return out
