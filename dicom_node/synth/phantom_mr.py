"""Brain MR phantom: T1 pre- and post-contrast, T2, axial and coronal, with or without the signs of SIH.

The SIH signs are those the Bern score counts, drawn as anatomy parameters (`anatomy.HeadParams`):
- smooth diffuse pachymeningeal enhancement: a thick (1.4-3 mm) dura that enhances strongly after
  gadolinium, visible along the convexity on axial and coronal post-contrast images;
- venous sinus engorgement: enlarged superior sagittal and transverse sinuses with convex margins;
- brain sag: brainstem and diencephalon lowered, prepontine cistern narrowed (<= 3 mm), mamillary
  bodies closer to the pons, suprasellar cistern effaced;
- subdural fluid collections: thin bilateral crescents over the convexity.
A positive study shows two to four of these at varying strength; negatives vary in normal anatomy.

Where each sign is (`SIGN_TISSUES`, the strong annotation of a positive study): the enhancing dura and falx,
the engorged sinuses, the sagging brainstem, the subdural collections. `MRVolumes.sign_masks` holds, for
each post-contrast series, the pixels of the signs the study shows (empty for a negative study), and
`MRVolumes.sign_parts` the same pixels sign by sign (the tissues do not overlap, so neither do the signs).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from dicom_node.outputs.codes import SIH_SIGNS
from dicom_node.synth.anatomy import HeadModel, HeadParams, Plane, Tissue
from dicom_node.synth.phantom_ct import blur

FOV_MM = 230.0
SLICE_MM = 5.0
GAP_MM = 1.0
# the tissue labels where each sign is seen
SIGN_TISSUES = {"pachymeningeal": (Tissue.DURA, Tissue.FALX), "sinus": (Tissue.SINUS,),
                "sag": (Tissue.BRAINSTEM,), "subdural": (Tissue.SUBDURAL_FLUID,)}
POST_CONTRAST_ROLES = ("t1_ax_post", "t1_cor_post")

_T1 = {Tissue.AIR: 0.0, Tissue.SKIN: 0.55, Tissue.FAT: 0.95, Tissue.MUSCLE: 0.35, Tissue.BONE: 0.03,
       Tissue.DIPLOE: 0.7, Tissue.CSF: 0.12, Tissue.GM: 0.42, Tissue.WM: 0.58, Tissue.DEEP_GM: 0.46,
       Tissue.VENTRICLE: 0.12, Tissue.DURA: 0.2, Tissue.FALX: 0.15, Tissue.SINUS: 0.3, Tissue.BRAINSTEM: 0.52,
       Tissue.CEREBELLUM: 0.48, Tissue.CHOROID: 0.35, Tissue.CALC: 0.1, Tissue.AIR_CELLS: 0.02, Tissue.CORD: 0.5,
       Tissue.SUBDURAL_FLUID: 0.2, Tissue.EYE: 0.12, Tissue.SOFT: 0.4}
_ENHANCED = {Tissue.SINUS: 0.85, Tissue.DURA: 0.42, Tissue.FALX: 0.4, Tissue.CHOROID: 0.8, Tissue.MUSCLE: 0.45,
             Tissue.SKIN: 0.6, Tissue.SOFT: 0.5}
_T2 = {Tissue.AIR: 0.0, Tissue.SKIN: 0.5, Tissue.FAT: 0.75, Tissue.MUSCLE: 0.25, Tissue.BONE: 0.03,
       Tissue.DIPLOE: 0.55, Tissue.CSF: 1.0, Tissue.GM: 0.6, Tissue.WM: 0.42, Tissue.DEEP_GM: 0.5,
       Tissue.VENTRICLE: 1.0, Tissue.DURA: 0.15, Tissue.FALX: 0.1, Tissue.SINUS: 0.05, Tissue.BRAINSTEM: 0.45,
       Tissue.CEREBELLUM: 0.55, Tissue.CHOROID: 0.6, Tissue.CALC: 0.05, Tissue.AIR_CELLS: 0.02, Tissue.CORD: 0.45,
       Tissue.SUBDURAL_FLUID: 0.9, Tissue.EYE: 0.95, Tissue.SOFT: 0.35}


@dataclass(frozen=True)
class MRSeriesPixels:
    role: str  # "t1_ax_pre", "t2_ax", "t1_ax_post", "t1_cor_post"
    pixels: np.ndarray  # (slices, rows, cols) uint16
    positions: list[tuple[float, float, float]]  # patient position of pixel (0, 0) per slice
    orientation: tuple[float, ...]
    spacing: float


@dataclass(frozen=True)
class MRVolumes:
    series: dict[str, MRSeriesPixels]
    params: HeadParams
    signs: tuple[str, ...]
    # post-contrast role -> sign shown -> (slices, rows, cols) bool: where that sign is
    sign_parts: dict[str, dict[str, np.ndarray]]

    @property
    def sign_masks(self) -> dict[str, np.ndarray]:
        """Post-contrast role -> (slices, rows, cols) bool: where the signs shown are (all False without SIH)."""
        return {role: np.logical_or.reduce([*parts.values()], axis=0) if parts
                else np.zeros(self.series[role].pixels.shape, bool) for role, parts in self.sign_parts.items()}


def sih_params(anat_rng: np.random.Generator, rng: np.random.Generator, sih: bool
               ) -> tuple[HeadParams, tuple[str, ...]]:
    """A random subject (from `anat_rng`); when `sih`, two to four Bern-score signs at random strength."""
    p = HeadParams.random(anat_rng)
    if not sih:
        return replace(p, dura_mm=float(rng.uniform(0.4, 0.9)), sag_mm=float(rng.uniform(0, 1.0))), ()
    while True:
        present = tuple(s for s in SIH_SIGNS if rng.random() < 0.7)
        if len(present) >= 2:
            break
    if "pachymeningeal" in present:
        p = replace(p, dura_mm=float(rng.uniform(1.4, 3.0)))
    if "sinus" in present:
        p = replace(p, sinus_scale=float(rng.uniform(1.45, 2.0)))
    if "sag" in present:
        p = replace(p, sag_mm=float(rng.uniform(3.0, 8.0)), prepontine_mm=float(rng.uniform(0.8, 3.0)))
    if "subdural" in present:
        p = replace(p, subdural_mm=float(rng.uniform(1.5, 5.0)))
    return p, present


def _lut(table: dict[Tissue, float], rng: np.random.Generator, jitter: float = 0.04) -> np.ndarray:
    lut = np.zeros(256, np.float32)
    for tissue, value in table.items():
        lut[int(tissue)] = max(0.0, value + (jitter * float(rng.uniform(-1, 1)) if value > 0.05 else 0.0))
    return lut


def render_mr_sih(rng: np.random.Generator, sih: bool, size: int = 256, n_axial: int = 20,
                  n_coronal: int = 20) -> MRVolumes:
    if size < 64 or n_axial < 4 or n_coronal < 4:
        raise ValueError("size must be >= 64 and each series needs >= 4 slices")
    # independent streams: the same seed gives the same subject and noise with or without the signs
    anat_rng, sign_rng, rng = rng.spawn(3)
    params, signs = sih_params(anat_rng, sign_rng, sih)
    head = HeadModel(params, offset=(float(anat_rng.uniform(-5, 5)), float(anat_rng.uniform(-6, 6)), 0.0))
    dura_gain = float(sign_rng.uniform(0.75, 0.95) if "pachymeningeal" in signs else sign_rng.uniform(0.3, 0.5))
    luts = {"t1_pre": _lut(_T1, anat_rng), "t2": _lut(_T2, anat_rng)}
    luts["t1_post"] = luts["t1_pre"].copy()
    for tissue, value in _ENHANCED.items():
        luts["t1_post"][int(tissue)] = value + 0.04 * float(anat_rng.uniform(-1, 1))
    luts["t1_post"][int(Tissue.DURA)] = dura_gain
    luts["t1_post"][int(Tissue.FALX)] = dura_gain * 0.9
    spacing = FOV_MM / size
    coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2) * spacing
    step = SLICE_MM + GAP_MM
    z_axial = -52.0 + step * np.arange(n_axial)  # inferior to superior
    y_coronal = -50.0 + step * np.arange(n_coronal)  # anterior to posterior
    z_rows = (-5.0 - coords).astype(np.float32)  # coronal rows run from head to feet
    noise = float(anat_rng.uniform(0.015, 0.035))
    gain = float(anat_rng.uniform(1500, 2200))
    axial_planes = [Plane.axial(float(z), coords, coords) for z in z_axial]
    coronal_planes = [Plane.coronal(float(y), coords, z_rows) for y in y_coronal]
    ax_labels = [head.sample(pl).labels for pl in axial_planes]
    cor_labels = [head.sample(pl).labels for pl in coronal_planes]
    bias_ax = _bias(rng, size)
    bias_cor = _bias(rng, size)
    ax_pos = [(float(coords[0]), float(coords[0]), float(z)) for z in z_axial]
    cor_pos = [(float(coords[0]), float(y), float(z_rows[0])) for y in y_coronal]
    axial_o = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    coronal_o = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)

    def series(role: str, lut: np.ndarray, labels: list[np.ndarray], bias: np.ndarray) -> np.ndarray:
        out = np.empty((len(labels), size, size), np.uint16)
        for i, lab in enumerate(labels):
            img = blur(lut[lab]) * bias
            re = img + rng.normal(0, noise, img.shape).astype(np.float32)
            im = rng.normal(0, noise, img.shape).astype(np.float32)
            out[i] = np.clip(np.sqrt(re * re + im * im) * gain, 0, 4095).astype(np.uint16)
        return out

    result = {
        "t1_ax_pre": MRSeriesPixels("t1_ax_pre", series("t1_ax_pre", luts["t1_pre"], ax_labels, bias_ax),
                                    ax_pos, axial_o, spacing),
        "t2_ax": MRSeriesPixels("t2_ax", series("t2_ax", luts["t2"], ax_labels, bias_ax), ax_pos, axial_o, spacing),
        "t1_ax_post": MRSeriesPixels("t1_ax_post", series("t1_ax_post", luts["t1_post"], ax_labels, bias_ax),
                                     ax_pos, axial_o, spacing),
        "t1_cor_post": MRSeriesPixels("t1_cor_post", series("t1_cor_post", luts["t1_post"], cor_labels, bias_cor),
                                      cor_pos, coronal_o, spacing),
    }
    labels = {"t1_ax_post": ax_labels, "t1_cor_post": cor_labels}
    parts = {role: {s: sign_mask(lab, (s,)) for s in signs} for role, lab in labels.items()}
    return MRVolumes(result, params, signs, parts)


def sign_mask(labels: list[np.ndarray], signs: tuple[str, ...]) -> np.ndarray:
    """(slices, rows, cols) bool: the pixels of the tissues where the `signs` are seen."""
    tissues = [int(t) for s in signs for t in SIGN_TISSUES[s]]
    stack = np.stack(labels)
    return np.isin(stack, tissues) if tissues else np.zeros(stack.shape, bool)


def _bias(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth receive-coil shading: 0.85-1.15 across the field of view."""
    t = np.linspace(-1, 1, size, dtype=np.float32)
    a, b, c = rng.uniform(-0.1, 0.1, 3).astype(np.float32)
    return 1.0 + a * t[None, :] + b * t[:, None] + c * (t[None, :] ** 2 + t[:, None] ** 2 - 0.66)
