"""Intracranial hemorrhages with their typical site, shape and density, painted on sampled planes in HU.

Each lesion is a 3D shape in model coordinates (see `anatomy`), so the slices it appears on, and hence
the slice labels, follow from the geometry: a slice is positive for a subtype when the lesion covers at
least `MIN_AREA_MM2` of it.

- epidural: biconvex lens against the inner table, thick and short (bounded by the sutures);
- subdural: crescent along the convexity (long, thin, concave towards the brain) or along the falx;
- subarachnoid: blood replacing CSF in sulci, fissures and basal cisterns inside a region;
- intraventricular: dependent layering (posterior, patient supine) in the occipital horns, or a cast;
- intraparenchymal: irregular blob in the parenchyma with a hypodense oedema rim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dicom_node.synth.anatomy import INNER_CENTER, PARENCHYMA, HeadModel, Sample, Tissue

SUBTYPES: tuple[str, ...] = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
MIN_AREA_MM2 = 4.0


@dataclass(frozen=True)
class Lesion:
    kind: str
    variant: str
    center: tuple[float, float, float]  # model coordinates, mm
    size: float  # extent radius, mm
    thickness: float  # mm (surface lesions), rim width (intraparenchymal), level (intraventricular)
    hu: float  # blood density
    side: int  # -1 right, +1 left, 0 midline/both
    shape: tuple[float, ...] = ()  # irregularity harmonics (intraparenchymal)

    @property
    def z_extent(self) -> tuple[float, float]:
        return self.center[2] - self.size, self.center[2] + self.size


def surface_point(head: HeadModel, azimuth: float, z: float) -> tuple[float, float, float]:
    """Point on the inner table at height z, azimuth 0 = patient's left, pi/2 = posterior."""
    a, b, c = head.semi
    k = float(np.sqrt(max(1e-3, 1.0 - ((z - INNER_CENTER[2]) / c) ** 2)))
    return (a * k * float(np.cos(azimuth)), INNER_CENTER[1] + b * k * float(np.sin(azimuth)), z)


def random_lesion(kind: str, rng: np.random.Generator, head: HeadModel, z_lo: float, z_hi: float) -> Lesion:
    """A lesion of `kind` whose centre lies between model heights z_lo and z_hi."""
    side = int(rng.choice((-1, 1)))
    subtle = rng.random() < 0.25
    hu = float(rng.uniform(52, 60) if subtle else rng.uniform(60, 88))
    s = head.p.scale

    def z_in(lo: float, hi: float) -> float:
        lo2, hi2 = max(lo * s, z_lo), min(hi * s, z_hi)
        return float(rng.uniform(lo2, hi2)) if hi2 > lo2 else float((z_lo + z_hi) / 2)

    if kind == "epidural":
        az = float(rng.choice([0.0, -0.6, 0.5, -1.3, 1.2])) if side > 0 else float(
            rng.choice([np.pi, np.pi + 0.6, np.pi - 0.5, np.pi + 1.3, np.pi - 1.2]))
        z = z_in(-12, 55)
        thick = float(rng.uniform(3, 8) if subtle else rng.uniform(7, 18))
        return Lesion(kind, "convexity", surface_point(head, az, z), float(rng.uniform(16, 32)), thick, hu, side)
    if kind == "subdural":
        if rng.random() < 0.2:
            z = z_in(20, 70)
            return Lesion(kind, "falx", (0.0, float(rng.uniform(-30, 30)), z), float(rng.uniform(20, 40)),
                          float(rng.uniform(1.5, 4.0)), hu, 0)
        az = float(rng.uniform(-1.0, 1.0)) + (0.0 if side > 0 else np.pi)
        z = z_in(0, 55)
        thick = float(rng.uniform(2, 5) if subtle else rng.uniform(4, 13))
        return Lesion(kind, "convexity", surface_point(head, az, z), float(rng.uniform(45, 80)), thick, hu, side)
    if kind == "subarachnoid":
        hu = float(rng.uniform(52, 60) if subtle else rng.uniform(60, 82))
        if z_lo < -20 * s < z_hi and rng.random() < 0.6:
            return Lesion(kind, "basal", (0.0, -8.0 * s, -20.0 * s), float(rng.uniform(22, 42)), 0.0, hu, 0)
        az = float(rng.uniform(-1.2, 1.2)) + (0.0 if side > 0 else np.pi)
        return Lesion(kind, "convexity", surface_point(head, az, z_in(0, 60)), float(rng.uniform(18, 35)),
                      0.0, hu, side)
    if kind == "intraventricular":
        if rng.random() < 0.75:
            level = float(rng.uniform(30, 44) if subtle else rng.uniform(20, 34)) * s
            sides = 0 if rng.random() < 0.5 else side
            return Lesion(kind, "layering", (0.0, level, 3.0 * s), 14.0 * s, level, hu, sides)
        return Lesion(kind, "cast", (0.0, -4.0 * s, -8.0 * s), float(rng.uniform(10, 20)), 0.0, hu, 0)
    if kind == "intraparenchymal":
        site = int(rng.integers(0, 4))
        radius = float(rng.uniform(3.5, 7) if subtle else rng.uniform(7, 20))
        centers = [(22.0 * side, -6.0, 2.0), (10.0 * side, 10.0, 0.0), (24.0 * side, 44.0, -40.0)]
        if site < 3:
            cx, cy, cz = (v * s for v in centers[site])
        else:
            az = float(rng.uniform(0, 2 * np.pi))
            sp = surface_point(head, az, z_in(-5, 55))
            inward = float(rng.uniform(0.55, 0.75))
            cx, cy, cz = sp[0] * inward, INNER_CENTER[1] + (sp[1] - INNER_CENTER[1]) * inward, sp[2]
        harmonics = tuple(float(v) for v in rng.uniform(-0.2, 0.2, 6))
        return Lesion(kind, ("basal ganglia", "thalamus", "cerebellum", "lobar")[site], (cx, cy, cz),
                      radius, float(rng.uniform(1.5, 5.0)), hu, side, harmonics)
    raise ValueError(f"unknown hemorrhage kind {kind!r}; expected one of {SUBTYPES}")


def _coords(sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pl = sample.plane
    shape = pl.shape
    return np.broadcast_to(pl.x, shape), np.broadcast_to(pl.y, shape), np.broadcast_to(pl.z, shape)


def paint_lesion(lesion: Lesion, sample: Sample, hu: np.ndarray) -> np.ndarray:
    """Paint `lesion` into the HU map of `sample`; returns the boolean mask of blood pixels."""
    x, y, z = _coords(sample)
    lab = sample.labels
    d = sample.d
    cx, cy, cz = lesion.center
    inside = (d < 0) & ~np.isin(lab, np.array((Tissue.BONE, Tissue.DIPLOE, Tissue.SOFT, Tissue.AIR_CELLS,
                                                Tissue.AIR, Tissue.FAT, Tissue.EYE), np.uint8))
    if lesion.kind in ("epidural", "subdural") and lesion.variant == "convexity":
        dist = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2)
        u = np.clip(1.0 - (dist / lesion.size) ** 2, 0.0, None)
        profile = lesion.thickness * (u if lesion.kind == "epidural" else np.sqrt(u))
        mask = inside & (-d < profile) & (x * lesion.side > 1.0)
    elif lesion.kind == "subdural":  # along the falx
        mask = inside & (np.abs(x) < lesion.thickness) & (np.abs(y - cy) < lesion.size)
        mask &= (z > cz - lesion.size / 2) & (z > 20)
    elif lesion.kind == "subarachnoid":
        dist = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2)
        mask = (lab == Tissue.CSF) & inside & (dist < lesion.size)
        if lesion.variant == "convexity":
            mask &= (-d < 16.0) & (x * lesion.side > 0)
    elif lesion.kind == "intraventricular":
        vent = lab == Tissue.VENTRICLE
        if lesion.variant == "layering":
            mask = vent & (y > lesion.thickness)
            if lesion.side:
                mask &= x * lesion.side > 0
        else:
            dist = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2)
            mask = vent & (dist < lesion.size)
    elif lesion.kind == "intraparenchymal":
        return _paint_iph(lesion, sample, hu, inside, x, y, z)
    else:
        raise ValueError(f"unknown hemorrhage kind {lesion.kind!r}")
    hu[mask] = lesion.hu
    return mask


def _paint_iph(lesion: Lesion, sample: Sample, hu: np.ndarray, inside: np.ndarray, x: np.ndarray,
               y: np.ndarray, z: np.ndarray) -> np.ndarray:
    cx, cy, cz = lesion.center
    reach = lesion.size * 1.3 + lesion.thickness
    mask = np.zeros(sample.labels.shape, bool)
    win = sample.plane.window(lesion.center, (reach, reach, reach))
    if win is None:
        return mask
    dx, dy, dz = x[win] - cx, y[win] - cy, z[win] - cz
    dist = np.sqrt(dx * dx + dy * dy + dz * dz)
    az = np.arctan2(dy, dx)
    el = np.arctan2(dz, np.sqrt(dx * dx + dy * dy))
    h = lesion.shape or (0.0,) * 6
    radius = lesion.size * (1.0 + h[0] * np.sin(2 * az + h[1] * 10) + h[2] * np.sin(3 * az + h[3] * 10)
                            + h[4] * np.cos(2 * el + h[5] * 10))
    parenchyma = np.isin(sample.labels[win], np.array(PARENCHYMA, np.uint8))
    blood = (dist < radius) & parenchyma
    rim = (dist >= radius) & (dist < radius + lesion.thickness) & parenchyma
    sub = hu[win]
    sub[rim] = np.minimum(sub[rim], 12.0 + 8.0 * np.clip((dist[rim] - radius[rim]) / lesion.thickness, 0, 1))
    sub[blood] = lesion.hu
    mask[win] = blood
    return mask
