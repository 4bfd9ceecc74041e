"""Non-contrast head CT phantom in Hounsfield units: anatomy, hemorrhages, soft and bone kernels, scout.

`render_ct_head` samples a random subject (`anatomy.HeadParams.random`), places the requested
hemorrhages (`hemorrhage.random_lesion`) inside the covered slab, and returns HU volumes for the soft
(H30s-like: slight blur, ~5 HU noise) and bone (H70h-like: edge-enhanced, ~20 HU noise) kernels plus the
per-slice subtype labels, which follow from where each lesion is visible (see VISIBLE_DELTA_HU): a
one-pixel sliver at the edge of a lesion does not make a slice positive. `masks` holds each subtype's
blood pixels on the slices labelled positive for it (bit k = `hemorrhage.SUBTYPES[k]`): the strong
annotation that `synth` writes as a DICOM SEG.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from dicom_node.synth.anatomy import HeadModel, HeadParams, Plane, Tissue
from dicom_node.synth.hemorrhage import MIN_AREA_MM2, SUBTYPES, Lesion, paint_lesion, random_lesion

FOV_MM = 230.0
SLICE_MM = 5.0
SCOUT_PX = 256
SCOUT_MM = 1.0
MAX_ATTEMPTS = 8
# a slice is positive for a lesion when, after the point-spread blur, at least MIN_AREA_MM2 of it is
# VISIBLE_DELTA_HU denser than without the lesion, at least VISIBLE_MIN_HU (hyperdense to brain) and
# not already bright from the partial volume of the skull (below VISIBLE_MAX_REF_HU without the lesion)
VISIBLE_DELTA_HU = 8.0
VISIBLE_MIN_HU = 42.0
VISIBLE_MAX_REF_HU = 60.0

# mean HU per tissue and the per-subject spread of that mean
_HU: dict[Tissue, tuple[float, float]] = {
    Tissue.AIR: (-1000, 0), Tissue.SKIN: (35, 5), Tissue.FAT: (-95, 10), Tissue.MUSCLE: (48, 5),
    Tissue.BONE: (1350, 150), Tissue.DIPLOE: (650, 120), Tissue.CSF: (6, 3), Tissue.GM: (38, 3),
    Tissue.WM: (28, 2), Tissue.DEEP_GM: (36, 2), Tissue.VENTRICLE: (5, 2), Tissue.DURA: (36, 3),
    Tissue.FALX: (48, 6), Tissue.SINUS: (47, 5), Tissue.BRAINSTEM: (32, 2), Tissue.CEREBELLUM: (35, 2),
    Tissue.CHOROID: (32, 3), Tissue.CALC: (220, 60), Tissue.AIR_CELLS: (-750, 80), Tissue.CORD: (32, 3),
    Tissue.SUBDURAL_FLUID: (8, 3), Tissue.EYE: (10, 3), Tissue.SOFT: (42, 5),
}


@dataclass(frozen=True)
class CTVolume:
    soft: np.ndarray  # (slices, rows, cols) int16 HU, soft-tissue kernel, inferior slice first
    bone: np.ndarray  # same geometry, bone kernel
    z: np.ndarray  # patient z of each slice (mm)
    origin_xy: tuple[float, float]  # patient x, y of the centre of pixel (0, 0)
    spacing: float  # mm per pixel
    labels: np.ndarray  # (slices, 5) uint8, subtype order of `hemorrhage.SUBTYPES`
    masks: np.ndarray  # (slices, rows, cols) uint8, bit k set where subtype k's blood is (positive slices only)
    lesions: tuple[Lesion, ...]
    scout: np.ndarray  # (SCOUT_PX, SCOUT_PX) int16, lateral projection
    scout_origin: tuple[float, float, float]
    noise_sd: float


def blur(img: np.ndarray) -> np.ndarray:
    """Separable [1 2 1]/4 smoothing: the scanner's point spread at these pixel sizes."""
    p = np.pad(img, 1, mode="edge")
    h = (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) * np.float32(0.25)
    return (h[:-2] + 2 * h[1:-1] + h[2:]) * np.float32(0.25)


def _lut(rng: np.random.Generator) -> np.ndarray:
    lut = np.zeros(256, np.float32)
    for tissue, (mean, spread) in _HU.items():
        lut[int(tissue)] = mean + spread * float(rng.uniform(-1, 1))
    return lut


def slab(n_slices: int) -> tuple[float, float]:
    """Model heights (lowest, highest) of the covered slab: the whole head for 40 slices, else centred."""
    span = (n_slices - 1) * SLICE_MM
    top = min(92.0, 15.0 + span / 2)
    return top - span, top


def render_ct_head(rng: np.random.Generator, findings: Iterable[str], n_slices: int = 40,
                   size: int = 512) -> CTVolume:
    wanted = [f for f in SUBTYPES if f in set(findings)]
    unknown = set(findings) - set(SUBTYPES)
    if unknown:
        raise ValueError(f"unknown findings {sorted(unknown)}; expected a subset of {SUBTYPES}")
    if n_slices < 4 or size < 64:
        raise ValueError("n_slices must be >= 4 and size >= 64")
    # independent streams: the same seed gives the same subject and noise with or without lesions
    anat_rng, lesion_rng, rng = rng.spawn(3)
    head = HeadModel(HeadParams.random(anat_rng),
                     offset=(float(anat_rng.uniform(-6, 6)), float(anat_rng.uniform(-8, 8)), 0.0))
    lut = _lut(anat_rng)
    lo, hi = slab(n_slices)
    zs = lo + SLICE_MM * np.arange(n_slices, dtype=np.float64)
    spacing = FOV_MM / size
    coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2) * spacing
    noise_sd = float(anat_rng.uniform(3.5, 6.0))
    for _attempt in range(MAX_ATTEMPTS):
        # lesions sit in the brain part of the slab, away from its first and last slices
        lesions = tuple(random_lesion(kind, lesion_rng, head, max(lo + 10, -50.0), min(hi - 10, 80.0))
                        for kind in wanted)
        soft, bone, labels, masks = _render_slices(head, lut, lesions, zs, coords, noise_sd, copy.deepcopy(rng))
        if all(labels[:, SUBTYPES.index(kind)].any() for kind in wanted):
            break
    else:
        raise RuntimeError(f"could not place visible {wanted} in {n_slices} slices; use more slices")
    scout, scout_origin = _scout(head, lut, zs)
    origin = (float(coords[0]), float(coords[0]))
    return CTVolume(soft, bone, zs, origin, spacing, labels, masks, lesions, scout, scout_origin, noise_sd)


def _render_slices(head: HeadModel, lut: np.ndarray, lesions: tuple[Lesion, ...], zs: np.ndarray,
                   coords: np.ndarray, noise_sd: float, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n, size = len(zs), len(coords)
    soft = np.empty((n, size, size), np.int16)
    bone = np.empty_like(soft)
    labels = np.zeros((n, len(SUBTYPES)), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    spacing = float(coords[1] - coords[0])
    min_px = MIN_AREA_MM2 / (spacing * spacing)
    for i, z in enumerate(zs):
        sample = head.sample(Plane.axial(float(z), coords, coords))
        hu = lut[sample.labels]
        hu += rng.normal(0.0, 1.5, hu.shape).astype(np.float32) * (sample.labels > Tissue.AIR)
        for lesion in lesions:
            before = hu.copy()
            blood = paint_lesion(lesion, sample, hu)
            if blood.sum() >= min_px:
                after, ref = blur(hu), blur(before)
                visible = (after - ref >= VISIBLE_DELTA_HU) & (after >= VISIBLE_MIN_HU) & (ref < VISIBLE_MAX_REF_HU)
                if visible.sum() >= min_px:
                    k = SUBTYPES.index(lesion.kind)
                    labels[i, k] = 1
                    masks[i][blood] |= np.uint8(1 << k)
        smooth = blur(hu)
        s = smooth + rng.normal(0.0, noise_sd, hu.shape).astype(np.float32)
        b = hu + 0.6 * (hu - smooth) + rng.normal(0.0, noise_sd * 4, hu.shape).astype(np.float32)
        soft[i] = np.clip(np.rint(s), -1024, 3071)
        bone[i] = np.clip(np.rint(b), -1024, 3071)
    return soft, bone, labels, masks


def _scout(head: HeadModel, lut: np.ndarray, zs: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Lateral projection radiograph covering the slab with margin (rows: superior to inferior)."""
    top = float(zs[-1]) + 40.0
    z_rows = top - SCOUT_MM * np.arange(SCOUT_PX, dtype=np.float32)
    y_cols = (np.arange(SCOUT_PX, dtype=np.float32) - (SCOUT_PX - 1) / 2) * SCOUT_MM
    step = 8.0
    total = np.zeros((SCOUT_PX, SCOUT_PX), np.float32)
    for x in np.arange(-92.0, 92.1, step):
        hu = lut[head.sample(Plane.sagittal(float(x), y_cols, z_rows)).labels]
        total += np.clip(hu + 1000.0, 0, None) * np.float32(step / 1000.0)
    img = np.clip(total * 12.0, 0, 4095).astype(np.int16)
    return img, (0.0, float(y_cols[0]), top)
