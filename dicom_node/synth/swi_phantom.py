"""Brain MR phantom for cerebral microbleeds on susceptibility-weighted imaging (SWI).

`render_swi(rng, svd_class, size, n_slices)` samples a subject (`anatomy.HeadModel`), places the
microbleeds its small-vessel-disease class implies, adds the mimics a detector must not call, and returns
float images in [0, ~1.2] (the study writer scales them to 12 bits):

- **SWI** (phase-mask enhanced magnitude, 3 mm axial): tissue contrast of an SWI (veins, sinuses and
  iron-rich deep grey matter dark), a smooth coil shading and Rician noise;
- **raw magnitude**: the same acquisition without the phase-mask enhancement (weaker susceptibility);
- **phase** (radians, high-pass filtered): blood and veins negative, calcification positive (the
  opposite sign), strong wraps near air-bone interfaces;
- **mIP**: minimum intensity over three neighbouring SWI slices (a 9 mm slab per image);
- **T1 / T2 / FLAIR** (5 mm axial, distractors): CADASIL's confluent white-matter change on FLAIR/T2.

Microbleeds (`Bleed`): round foci 2-10 mm across as they appear on SWI (the dark core; the blooming halo
around it fades over another ~40 % of the radius), with partial volume across the slice thickness. Sites
follow the class: **CAA** lobar (cortical / juxtacortical, posterior predominance), **aSVD** deep (basal
ganglia, thalamus, brainstem, deep white matter; sometimes one lobar), **CADASIL** mixed deep and lobar
(thalamus and temporal lobes favoured) with confluent white-matter hyperintensity; **none** has no bleed.
Mimics in every subject: medullary veins in plane (lines) and through plane (dots that continue over
several slices), calcification (pineal, choroid plexus, sometimes bilateral pallidal; darker on SWI than
tissue but not black, no blooming, positive phase) and air-bone susceptibility artefact next to the
sphenoid, ethmoid and mastoid air cells.

`masks` is the ground truth: per SWI slice, the index (1..n) of the bleed whose core covers at least half
of a pixel's slice thickness (0 elsewhere); every bleed has at least one pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from dicom_node.synth.anatomy import HeadModel, HeadParams, Plane, Tissue
from dicom_node.synth.phantom_ct import blur
from dicom_node.synth.phantom_mr import _T1, _T2, _bias, _lut

CLASSES: tuple[str, ...] = ("none", "asvd", "caa", "cadasil")
FOV_MM = 230.0
SLICE_MM = 3.0  # SWI slice thickness = spacing (contiguous 3D slab)
STRUCT_SLICE_MM = 5.0  # T1 / T2 / FLAIR
STRUCT_GAP_MM = 1.0
FULL_SLICES = 40  # with 40 slices the slab runs from the skull base to the high convexity
DIAMETER_MM = (2.0, 10.0)
SUB_PLANES = 5  # partial volume across the slice thickness
LOBAR_SITES = ("cortex", "juxtacortical")
DEEP_SITES = ("basal_ganglia", "thalamus", "brainstem", "deep_white_matter")

# Relative signal per tissue on SWI (veins and iron-rich deep grey matter dark, CSF bright).
_SWI = {Tissue.AIR: 0.0, Tissue.SKIN: 0.5, Tissue.FAT: 0.55, Tissue.MUSCLE: 0.3, Tissue.BONE: 0.03,
        Tissue.DIPLOE: 0.3, Tissue.CSF: 0.78, Tissue.GM: 0.52, Tissue.WM: 0.64, Tissue.DEEP_GM: 0.42,
        Tissue.VENTRICLE: 0.78, Tissue.DURA: 0.3, Tissue.FALX: 0.25, Tissue.SINUS: 0.08, Tissue.BRAINSTEM: 0.56,
        Tissue.CEREBELLUM: 0.52, Tissue.CHOROID: 0.6, Tissue.CALC: 0.3, Tissue.AIR_CELLS: 0.02, Tissue.CORD: 0.5,
        Tissue.SUBDURAL_FLUID: 0.7, Tissue.EYE: 0.75, Tissue.SOFT: 0.4}
_FLAIR = {Tissue.AIR: 0.0, Tissue.SKIN: 0.5, Tissue.FAT: 0.8, Tissue.MUSCLE: 0.25, Tissue.BONE: 0.03,
          Tissue.DIPLOE: 0.5, Tissue.CSF: 0.08, Tissue.GM: 0.55, Tissue.WM: 0.42, Tissue.DEEP_GM: 0.5,
          Tissue.VENTRICLE: 0.08, Tissue.DURA: 0.2, Tissue.FALX: 0.15, Tissue.SINUS: 0.05, Tissue.BRAINSTEM: 0.48,
          Tissue.CEREBELLUM: 0.52, Tissue.CHOROID: 0.3, Tissue.CALC: 0.05, Tissue.AIR_CELLS: 0.02, Tissue.CORD: 0.45,
          Tissue.SUBDURAL_FLUID: 0.3, Tissue.EYE: 0.1, Tissue.SOFT: 0.35}
# Phase (radians) of tissues with a susceptibility of their own: venous blood negative, calcium positive.
_PHASE = {Tissue.SINUS: -1.2, Tissue.CALC: 1.0, Tissue.DEEP_GM: -0.15}
# Air cells as susceptibility sources (model mm, before scaling): centre, radius.
_AIR_SOURCES = (((0.0, -18.0, -40.0), 10.0), ((27.0, -46.0, -58.0), 15.0), ((-27.0, -46.0, -58.0), 15.0),
                ((47.0, 22.0, -44.0), 9.0), ((-47.0, 22.0, -44.0), 9.0), ((0.0, -62.0, -48.0), 12.0))


@dataclass(frozen=True)
class Bleed:
    index: int  # 1-based, the segment number in the ground-truth SEG
    center: tuple[float, float, float]  # patient coordinates (LPS, mm)
    diameter_mm: float  # of the dark core as it appears on SWI (blooming included)
    location: str  # "lobar" | "deep"
    site: str  # one of LOBAR_SITES + DEEP_SITES


@dataclass(frozen=True)
class Vessel:
    start: tuple[float, float, float]
    end: tuple[float, float, float]
    radius_mm: float
    darkening: float


@dataclass(frozen=True)
class Calcification:
    center: tuple[float, float, float]
    radius_mm: float


@dataclass(frozen=True)
class SwiVolumes:
    swi: np.ndarray  # (slices, rows, cols) float32, inferior slice first
    magnitude: np.ndarray  # same geometry, raw magnitude
    phase: np.ndarray  # same geometry, radians in [-pi, pi)
    mip: np.ndarray  # same geometry, minimum over 3 slices
    masks: np.ndarray  # (slices, rows, cols) int16 bleed index, 0 = none
    z: np.ndarray  # patient z of each SWI slice (mm)
    t1: np.ndarray  # (struct slices, rows, cols) float32
    t2: np.ndarray
    flair: np.ndarray
    z_struct: np.ndarray
    coords: np.ndarray  # patient x (columns) and y (rows) of pixel centres (mm), same for both
    spacing: float
    bleeds: tuple[Bleed, ...]
    svd_class: str
    wmh: bool  # confluent white-matter hyperintensity rendered (CADASIL)
    calcifications: tuple[Calcification, ...] = ()
    vessels: tuple[Vessel, ...] = ()


def class_for_index(seed: int, patient_index: int) -> str:
    """The class of study `patient_index`: each block of four consecutive indices holds every class once,
    in an order drawn from (seed, block) only, so a study's class never depends on how many are generated."""
    order = np.random.default_rng([seed, patient_index // len(CLASSES), 303]).permutation(len(CLASSES))
    return CLASSES[int(order[patient_index % len(CLASSES)])]


def slab(n_slices: int) -> float:
    """Patient z of the lowest SWI slice: the skull base for FULL_SLICES, else a slab centred on the
    basal ganglia and centrum semiovale (both bleed territories) for fewer slices."""
    if n_slices >= FULL_SLICES:
        return -45.0
    return 8.0 - (n_slices - 1) * SLICE_MM / 2


def _point_plane(p: tuple[float, float, float]) -> Plane:
    return Plane(np.full((1, 1), p[0], np.float32), np.full((1, 1), p[1], np.float32),
                 np.full((1, 1), p[2], np.float32), (1, 1))


def tissue_at(head: HeadModel, p: tuple[float, float, float]) -> tuple[Tissue, float]:
    """Tissue at patient point `p` and its depth below the skull's inner table (mm)."""
    s = head.sample(_point_plane(p))
    return Tissue(int(s.labels[0, 0])), float(-s.d[0, 0])


def _diameter(rng: np.random.Generator, cap: float = DIAMETER_MM[1]) -> float:
    lo, hi = DIAMETER_MM
    return float(min(cap, lo + (hi - lo) * rng.beta(1.4, 2.4)))


def _site_point(rng: np.random.Generator, head: HeadModel, site: str, caa: bool) -> tuple[float, float, float] | None:
    """One proposal for a bleed centre at `site` (patient mm), or None when the proposal is rejected."""
    p = head.p
    s = p.scale
    ox, oy, oz = head.offset
    side = float(rng.choice([-1.0, 1.0]))

    def ellipsoid(c: tuple[float, float, float], semi: tuple[float, float, float]) -> tuple[float, float, float]:
        u = rng.normal(size=3)
        u *= rng.uniform(0, 1) ** (1 / 3) / np.linalg.norm(u)
        return (c[0] * s + u[0] * semi[0] * s + ox, c[1] * s + u[1] * semi[1] * s + oy,
                c[2] * s + u[2] * semi[2] * s + oz)

    want: tuple[Tissue, ...]
    if site == "basal_ganglia":
        pt = ellipsoid((22 * side, -6, 2), (5, 11, 7)) if rng.random() < 0.7 else ellipsoid((13 * side, -16, 10),
                                                                                          (3.5, 6, 6))
        want = (Tissue.DEEP_GM,)
    elif site == "thalamus":
        pt = ellipsoid((10 * side, 10, -p.sag_mm * 0.5), (6, 9, 6))
        want = (Tissue.DEEP_GM,)
    elif site == "brainstem":
        pt = ellipsoid((0, 10, -20 - p.sag_mm), (7, 6, 5)) if rng.random() < 0.6 else ellipsoid(
            (0, 13, -36 - p.sag_mm), (8, 7, 6))
        want = (Tissue.BRAINSTEM,)
    elif site == "deep_white_matter":
        pt = ellipsoid((24 * side, 0, 22), (8, 28, 10))
        want = (Tissue.WM,)
    else:  # lobar: cortex or juxtacortical white matter of the cerebral hemispheres
        pt = (float(rng.uniform(-62, 62)) * s + ox, float(rng.uniform(-80, 85)) * s + oy,
              float(rng.uniform(-25, 72)) * s + oz)
        want = (Tissue.GM,) if site == "cortex" else (Tissue.WM,)
        if caa and pt[1] - oy < 0 and rng.random() < 0.5:  # CAA: posterior predominance
            return None
        if pt[1] - oy < -30 * s and pt[2] - oz < -12 * s:  # orbitofrontal: the air-bone artefact territory
            return None
    tissue, depth = tissue_at(head, pt)
    if tissue not in want:
        return None
    if site in LOBAR_SITES and not p.csf_mm + 1.0 <= depth <= p.csf_mm + 12.0:
        return None
    if site == "deep_white_matter" and depth < 24.0:
        return None
    if site in LOBAR_SITES and pt[2] - oz < -22 * s and abs(pt[0] - ox) < 30 * s:  # not the posterior fossa
        return None
    return pt


def _sites(rng: np.random.Generator, svd_class: str) -> list[str]:
    if svd_class == "none":
        return []
    if svd_class == "caa":
        n = int(rng.integers(2, 11))
        return [str(rng.choice(LOBAR_SITES, p=[0.55, 0.45])) for _ in range(n)]
    if svd_class == "asvd":
        n = int(rng.integers(2, 9))
        deep = [str(rng.choice(DEEP_SITES, p=[0.4, 0.3, 0.18, 0.12])) for _ in range(n)]
        if n >= 3 and rng.random() < 0.3:
            deep[-1] = "juxtacortical"
        return deep
    n = int(rng.integers(3, 11))  # cadasil: mixed
    n_deep = max(1, min(n - 1, round(n * rng.uniform(0.35, 0.65))))
    sites = [str(rng.choice(("thalamus", "basal_ganglia", "deep_white_matter"), p=[0.5, 0.25, 0.25]))
             for _ in range(n_deep)]
    sites += [str(rng.choice(LOBAR_SITES)) for _ in range(n - n_deep)]
    return sites


def place_bleeds(rng: np.random.Generator, head: HeadModel, svd_class: str, z_range: tuple[float, float]
                 ) -> tuple[Bleed, ...]:
    """Bleed centres and sizes for the class, inside the slab `z_range` and apart from each other."""
    bleeds: list[Bleed] = []
    for site in _sites(rng, svd_class):
        cap = 6.0 if site in ("brainstem", "thalamus") else DIAMETER_MM[1]
        for _ in range(200):
            diameter = _diameter(rng, cap)
            pt = _site_point(rng, head, site, svd_class == "caa")
            if pt is None:
                continue
            r = diameter / 2
            if not z_range[0] + r <= pt[2] <= z_range[1] - r:
                continue
            if any(math.dist(pt, b.center) < r + b.diameter_mm / 2 + 4.0 for b in bleeds):
                continue
            location = "lobar" if site in LOBAR_SITES else "deep"
            bleeds.append(Bleed(len(bleeds) + 1, tuple(round(v, 2) for v in pt), round(diameter, 2),  # type: ignore[arg-type]
                                location, site))
            break
    return tuple(bleeds)


def _vessels(rng: np.random.Generator, head: HeadModel) -> tuple[Vessel, ...]:
    """Medullary and deep veins: 60-90 straight segments in the white matter, a third of them steep (seen
    as dots that continue over several slices), the rest nearly in plane (lines)."""
    s = head.p.scale
    ox, oy, oz = head.offset
    out = []
    for _ in range(int(rng.integers(60, 90))):
        steep = rng.random() < 0.35
        for _ in range(40):
            start = (float(rng.uniform(-45, 45)) * s + ox, float(rng.uniform(-55, 60)) * s + oy,
                     float(rng.uniform(-10, 60)) * s + oz)
            tissue, depth = tissue_at(head, start)
            if tissue == Tissue.WM and depth > 8:
                break
        else:
            continue
        length = float(rng.uniform(12, 35))
        if steep:
            d = np.array([rng.normal(0, 0.25), rng.normal(0, 0.25), 1.0])
        else:
            radial = np.array([start[0] - ox, start[1] - oy - 5.0, 0.0])
            d = radial / max(1e-3, float(np.linalg.norm(radial))) + rng.normal(0, 0.35, 3) * np.array([1, 1, 0.15])
        d = d / np.linalg.norm(d)
        end = tuple(float(v) for v in np.asarray(start) + d * length)
        out.append(Vessel(start, end, float(rng.uniform(0.45, 0.8)), float(rng.uniform(0.6, 0.85))))  # type: ignore[arg-type]
    return tuple(out)


def _calcifications(rng: np.random.Generator, head: HeadModel) -> tuple[Calcification, ...]:
    """Bilateral pallidal calcification in about a third of subjects (pineal and choroid come from anatomy)."""
    if rng.random() >= 0.35:
        return ()
    s = head.p.scale
    ox, oy, oz = head.offset
    r = float(rng.uniform(1.5, 2.8))
    y, z = float(rng.uniform(-8, -2)), float(rng.uniform(-2, 4))
    return tuple(Calcification((side * 18 * s + ox, y * s + oy, z * s + oz), r) for side in (-1.0, 1.0))


def _smooth_field(rng: np.random.Generator, size: int, cells: int = 6) -> np.ndarray:
    """A smooth random texture around 1 (0.6-1.4): low-resolution noise, bilinearly enlarged."""
    low = rng.uniform(0.6, 1.4, (cells + 1, cells + 1)).astype(np.float32)
    t = np.linspace(0, cells, size, dtype=np.float32)
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    rows = low[i] * (1 - f)[:, None] + low[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


class _Slice:
    """Pixel coordinates of one axial SWI slice and the sub-planes across its thickness."""

    def __init__(self, coords: np.ndarray, z: float, thickness: float) -> None:
        self.coords = coords
        self.z = z
        self.offsets = (np.arange(SUB_PLANES, dtype=np.float32) / (SUB_PLANES - 1) - 0.5) * thickness * 0.9
        self.spacing = float(coords[1] - coords[0])

    def window(self, x: float, y: float, reach: float) -> tuple[slice, slice] | None:
        c0 = float(self.coords[0])
        n = len(self.coords)
        lo_c, hi_c = int((x - reach - c0) / self.spacing), math.ceil((x + reach - c0) / self.spacing) + 1
        lo_r, hi_r = int((y - reach - c0) / self.spacing), math.ceil((y + reach - c0) / self.spacing) + 1
        lo_c, lo_r = max(0, lo_c), max(0, lo_r)
        hi_c, hi_r = min(n, hi_c), min(n, hi_r)
        if lo_c >= hi_c or lo_r >= hi_r:
            return None
        return slice(lo_r, hi_r), slice(lo_c, hi_c)


def _sphere(sl: _Slice, center: tuple[float, float, float], radius: float, halo: float
            ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """(window, core fraction, halo weight) of a sphere on a slice, averaged over the sub-planes."""
    if abs(sl.z - center[2]) > radius + halo + SLICE_MM:
        return None
    win = sl.window(center[0], center[1], radius + halo + sl.spacing)
    if win is None:
        return None
    xs = sl.coords[win[1]][None, :] - center[0]
    ys = sl.coords[win[0]][:, None] - center[1]
    rho2 = xs * xs + ys * ys
    core = np.zeros(rho2.shape, np.float32)
    ring = np.zeros(rho2.shape, np.float32)
    edge = max(0.25, 0.3 * sl.spacing)
    for t in sl.offsets:
        dz = sl.z + float(t) - center[2]
        delta = np.sqrt(rho2 + dz * dz) - radius
        core += 1.0 / (1.0 + np.exp(np.clip(delta / edge, -30, 30)))
        if halo > 0:
            ring += np.where(delta > 0, np.exp(-(np.maximum(delta, 0) / halo) ** 2), 0.0)
    return win, core / SUB_PLANES, ring / SUB_PLANES


def _tube(sl: _Slice, v: Vessel) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """(window, weight) of a vessel segment on a slice: a Gaussian profile of its radius, averaged over
    the sub-planes."""
    a, b = np.asarray(v.start, np.float32), np.asarray(v.end, np.float32)
    reach = v.radius_mm * 3 + sl.spacing
    if sl.z + SLICE_MM < min(a[2], b[2]) - reach or sl.z - SLICE_MM > max(a[2], b[2]) + reach:
        return None
    lo = np.minimum(a, b) - reach
    hi = np.maximum(a, b) + reach
    win = sl.window(float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2, float(max(hi[0] - lo[0], hi[1] - lo[1])) / 2)
    if win is None:
        return None
    xs = sl.coords[win[1]][None, :]
    ys = sl.coords[win[0]][:, None]
    ab = b - a
    denom = float(ab @ ab) or 1.0
    weight = np.zeros((len(sl.coords[win[0]]), len(sl.coords[win[1]])), np.float32)
    for t in sl.offsets:
        z = sl.z + float(t)
        px, py, pz = xs - a[0], ys - a[1], z - a[2]
        u = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / denom, 0.0, 1.0)
        dx, dy, dz = px - u * ab[0], py - u * ab[1], pz - u * ab[2]
        weight += np.exp(-(dx * dx + dy * dy + dz * dz) / (v.radius_mm ** 2))
    return win, weight / SUB_PLANES


def _wmh_field(rng: np.random.Generator) -> list[tuple[np.ndarray, float]]:
    dirs = rng.normal(size=(4, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return [(d.astype(np.float32), float(p)) for d, p in zip(dirs, rng.uniform(0, 2 * np.pi, 4), strict=True)]


def _wmh_mask(labels: np.ndarray, depth: np.ndarray, coords: np.ndarray, z: float, head: HeadModel,
              field: list[tuple[np.ndarray, float]], extent: float) -> np.ndarray:
    """Confluent white-matter hyperintensity: periventricular and anterior temporal, patchy."""
    ox, oy, oz = head.offset
    s = head.p.scale
    x = coords[None, :] - ox
    y = coords[:, None] - oy
    zz = np.float32(z - oz)
    k = np.float32(2 * np.pi / 45.0)
    f = np.zeros(labels.shape, np.float32)
    for d, p in field:
        f += np.sin(k * (d[0] * x + d[1] * y + d[2] * zz) + np.float32(p))
    prior = np.where(depth > 20, 0.9, 0.0) + np.where((y < -15 * s) & (zz < -5 * s) & (np.abs(x) > 22 * s), 1.2, 0.0)
    return (labels == Tissue.WM) & (f / 2 + prior > 1.35 - extent)


def render_swi(rng: np.random.Generator, svd_class: str, size: int = 256, n_slices: int = FULL_SLICES
               ) -> SwiVolumes:
    if svd_class not in CLASSES:
        raise ValueError(f"svd_class must be one of {CLASSES}, got {svd_class!r}")
    if size < 64 or n_slices < 6:
        raise ValueError("size must be >= 64 and the SWI series needs >= 6 slices")
    # independent streams: subject, lesions, mimics and noise
    anat_rng, lesion_rng, mimic_rng, rng = rng.spawn(4)
    params = HeadParams.random(anat_rng)
    params = replace(params, dura_mm=float(anat_rng.uniform(0.4, 0.8)))
    head = HeadModel(params, offset=(float(anat_rng.uniform(-5, 5)), float(anat_rng.uniform(-6, 6)), 0.0))
    spacing = FOV_MM / size
    coords = ((np.arange(size, dtype=np.float32) - (size - 1) / 2) * spacing).astype(np.float32)
    z0 = slab(n_slices)
    z = (z0 + SLICE_MM * np.arange(n_slices)).astype(np.float32)
    bleeds = place_bleeds(lesion_rng, head, svd_class, (float(z[0]) - SLICE_MM / 2, float(z[-1]) + SLICE_MM / 2))
    vessels = _vessels(mimic_rng, head)
    calcs = _calcifications(mimic_rng, head)
    wmh = svd_class == "cadasil"
    field = _wmh_field(lesion_rng)
    wmh_extent = float(lesion_rng.uniform(0.3, 0.7)) if wmh else -1.0
    punctate = svd_class == "asvd" and lesion_rng.random() < 0.5  # mild WMH on FLAIR only
    air_gain = float(mimic_rng.uniform(0.55, 0.9))
    s = params.scale
    air = [((c[0] * s + head.offset[0], c[1] * s + head.offset[1], c[2] * s + head.offset[2]), r * s)
           for c, r in _AIR_SOURCES]

    lut_swi = _lut(_SWI, anat_rng, 0.03)
    lut_phase = np.zeros(256, np.float32)
    for tissue, value in _PHASE.items():
        lut_phase[int(tissue)] = value
    bias = _bias(rng, size)
    noise = float(anat_rng.uniform(0.018, 0.03))
    bleed_dark = {b.index: (float(lesion_rng.uniform(0.8, 0.93)), float(lesion_rng.uniform(0.25, 0.45)))
                  for b in bleeds}

    n = n_slices
    swi = np.empty((n, size, size), np.float32)
    mag = np.empty((n, size, size), np.float32)
    phase = np.empty((n, size, size), np.float32)
    masks = np.zeros((n, size, size), np.int16)
    best_core = np.zeros((n, size, size), np.float32)
    best_slice: dict[int, tuple[float, int, tuple[slice, slice], np.ndarray]] = {}
    for i, zi in enumerate(z):
        sample = head.sample(Plane.axial(float(zi), coords, coords))
        labels = sample.labels
        brain = np.isin(labels, np.array((Tissue.GM, Tissue.WM, Tissue.DEEP_GM, Tissue.BRAINSTEM, Tissue.CEREBELLUM,
                                          Tissue.CSF, Tissue.VENTRICLE, Tissue.CHOROID, Tissue.CALC), np.uint8))
        base = lut_swi[labels]
        if wmh:
            base = np.where(_wmh_mask(labels, -sample.d, coords, float(zi), head, field, wmh_extent), base * 1.12, base)
        dark = np.ones((size, size), np.float32)  # multiplicative susceptibility darkening on SWI
        ph = blur(lut_phase[labels])
        sl = _Slice(coords, float(zi), SLICE_MM)
        for v in vessels:
            hit = _tube(sl, v)
            if hit is not None:
                win, w = hit
                w = w * brain[win]
                dark[win] *= 1.0 - v.darkening * w
                ph[win] -= 0.8 * w
        for c in calcs:
            sph = _sphere(sl, c.center, c.radius_mm, 0.0)
            if sph is not None:
                win, core, _ = sph
                dark[win] *= 1.0 - 0.45 * core
                ph[win] += 1.1 * core
        for b in bleeds:
            sph = _sphere(sl, b.center, b.diameter_mm / 2, 0.4 * b.diameter_mm / 2 + 0.5)
            if sph is None:
                continue
            win, core, ring = sph
            a, h = bleed_dark[b.index]
            dark[win] *= 1.0 - a * core - h * ring * (1.0 - core)
            ph[win] += -1.6 * core + 0.45 * ring * (1.0 - core)
            take = (core >= 0.5) & (core > best_core[i][win])
            masks[i][win] = np.where(take, b.index, masks[i][win])
            best_core[i][win] = np.maximum(best_core[i][win], core)
            peak = float(core.max())
            if peak > best_slice.get(b.index, (0.0,))[0]:
                best_slice[b.index] = (peak, i, win, core)
        art = np.zeros((size, size), np.float32)
        for (cx, cy, cz), r in air:
            dz = float(zi) - cz
            if abs(dz) > r + 30:
                continue
            dist = np.sqrt((coords[None, :] - cx) ** 2 + (coords[:, None] - cy) ** 2 + dz * dz) - r
            art = np.maximum(art, np.exp(-np.maximum(dist, 0) / 7.0))
        if art.max() > 0.05:
            texture = _smooth_field(mimic_rng, size)
            art = np.clip(art * air_gain * texture, 0.0, 0.95) * brain
            dark *= 1.0 - art
            ph += art * 3.0 * (texture - 1.0) * 4.0
        img_swi = blur(base * dark) * bias
        img_mag = blur(base * (1.0 - 0.55 * (1.0 - dark)) + 0.06 * (labels == Tissue.DEEP_GM)) * bias
        swi[i] = _rician(rng, img_swi, noise)
        mag[i] = _rician(rng, img_mag, noise)
        outside = labels == Tissue.AIR
        ph = np.where(outside, rng.uniform(-np.pi, np.pi, ph.shape).astype(np.float32),
                      ph + rng.normal(0, 0.08, ph.shape).astype(np.float32))
        phase[i] = np.mod(ph + np.pi, 2 * np.pi) - np.pi
    _ensure_visible(masks, best_slice)
    mip = np.stack([swi[max(0, i - 1): i + 2].min(axis=0) for i in range(n)])

    n_struct = max(4, round(n * SLICE_MM / (STRUCT_SLICE_MM + STRUCT_GAP_MM)))
    step = STRUCT_SLICE_MM + STRUCT_GAP_MM
    z_struct = (float(z[0] + z[-1]) / 2 + step * (np.arange(n_struct) - (n_struct - 1) / 2)).astype(np.float32)
    luts = {"t1": _lut(_T1, anat_rng, 0.03), "t2": _lut(_T2, anat_rng, 0.03), "flair": _lut(_FLAIR, anat_rng, 0.03)}
    struct = {k: np.empty((n_struct, size, size), np.float32) for k in luts}
    bias2 = _bias(rng, size)
    for i, zi in enumerate(z_struct):
        sample = head.sample(Plane.axial(float(zi), coords, coords))
        labels = sample.labels
        lesion = np.zeros(labels.shape, bool)
        if wmh:
            lesion = _wmh_mask(labels, -sample.d, coords, float(zi), head, field, wmh_extent)
        elif punctate:
            lesion = _wmh_mask(labels, -sample.d, coords, float(zi), head, field, -0.35)
        for key, lut in luts.items():
            img = lut[labels]
            if key == "flair":
                img = np.where(lesion, 0.85, img)
            elif key == "t2":
                img = np.where(lesion, np.maximum(img, 0.75), img)
            else:
                img = np.where(lesion, img * 0.85, img)
            struct[key][i] = _rician(rng, blur(img) * bias2, noise)
    return SwiVolumes(swi, mag, phase, mip.astype(np.float32), masks, z, struct["t1"], struct["t2"], struct["flair"],
                      z_struct, coords, spacing, bleeds, svd_class, wmh, calcs, vessels)


def _rician(rng: np.random.Generator, img: np.ndarray, sd: float) -> np.ndarray:
    re = img + rng.normal(0, sd, img.shape).astype(np.float32)
    im = rng.normal(0, sd, img.shape).astype(np.float32)
    return np.sqrt(re * re + im * im).astype(np.float32)


def _ensure_visible(masks: np.ndarray, best: dict[int, tuple[float, int, tuple[slice, slice], np.ndarray]]) -> None:
    """A bleed whose core covers half a slice nowhere (small, between two slices) is labelled on its best
    slice where its core fraction is at least half its peak, so every bleed in the CSV has pixels in the SEG."""
    present = set(np.unique(masks).tolist())
    for index, (peak, i, win, core) in best.items():
        if index in present or peak <= 0:
            continue
        take = (core >= 0.5 * peak) & (masks[i][win] == 0)
        masks[i][win] = np.where(take, index, masks[i][win])


def bleed_slices(masks: np.ndarray, bleed: Bleed) -> dict[int, int]:
    """Slice index -> pixel count of a bleed's ground-truth mask."""
    counts = {}
    for i in range(len(masks)):
        c = int((masks[i] == bleed.index).sum())
        if c:
            counts[i] = c
    return counts
