"""A labelled 3D head phantom defined in continuous patient coordinates, sampled on any axis-aligned plane.

Coordinates are DICOM patient coordinates (LPS, millimetres): +x towards the patient's left, +y towards
posterior, +z towards the head. The inner table of the skull is an ellipsoid; every other structure is
placed relative to it. `HeadModel.sample(plane)` paints tissue labels (`Tissue`) on a plane, in a fixed
order (outer tissues first), evaluating each ellipsoid only inside its bounding window, so a 512 x 512
slice costs a few tens of milliseconds. CT maps labels to Hounsfield units (`phantom_ct`), MR to signal
intensities (`phantom_mr`); both add their lesions using the returned distance field.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

INNER_CENTER = (0.0, 5.0, 8.0)
INNER_SEMI = (68.0, 88.0, 78.0)


class Tissue(enum.IntEnum):
    AIR = 0
    SKIN = 1
    FAT = 2
    MUSCLE = 3
    BONE = 4
    DIPLOE = 5
    CSF = 6
    GM = 7
    WM = 8
    DEEP_GM = 9
    VENTRICLE = 10
    DURA = 11
    FALX = 12
    SINUS = 13
    BRAINSTEM = 14
    CEREBELLUM = 15
    CHOROID = 16
    CALC = 17
    AIR_CELLS = 18
    CORD = 19
    SUBDURAL_FLUID = 20
    EYE = 21
    SOFT = 22


PARENCHYMA = (Tissue.GM, Tissue.WM, Tissue.DEEP_GM, Tissue.BRAINSTEM, Tissue.CEREBELLUM)
EXTRA_AXIAL_CSF = (Tissue.CSF,)


@dataclass(frozen=True)
class Plane:
    """An axis-aligned sampling grid: x, y, z arrays broadcastable to (rows, columns)."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    shape: tuple[int, int]

    @staticmethod
    def axial(z: float, xs: np.ndarray, ys: np.ndarray) -> Plane:
        """Rows run along +y (anterior to posterior), columns along +x (right to left)."""
        return Plane(xs[None, :].astype(np.float32), ys[:, None].astype(np.float32),
                     np.full((1, 1), z, np.float32), (len(ys), len(xs)))

    @staticmethod
    def coronal(y: float, xs: np.ndarray, zs: np.ndarray) -> Plane:
        """Rows run along the given z values (usually decreasing), columns along +x."""
        return Plane(xs[None, :].astype(np.float32), np.full((1, 1), y, np.float32),
                     zs[:, None].astype(np.float32), (len(zs), len(xs)))

    @staticmethod
    def sagittal(x: float, ys: np.ndarray, zs: np.ndarray) -> Plane:
        """Rows run along the given z values, columns along +y."""
        return Plane(np.full((1, 1), x, np.float32), ys[None, :].astype(np.float32),
                     zs[:, None].astype(np.float32), (len(zs), len(ys)))

    def window(self, center: tuple[float, float, float], semi: tuple[float, float, float]
               ) -> tuple[slice, slice] | None:
        """Index window of the plane that can intersect the box center +- semi, or None."""
        rows, cols = slice(0, self.shape[0]), slice(0, self.shape[1])
        for coord, c, s in zip((self.x, self.y, self.z), center, semi):
            inside = np.abs(coord.ravel() - c) <= s
            if not inside.any():
                return None
            if coord.size == 1:
                continue
            idx = np.flatnonzero(inside)
            sl = slice(int(idx[0]), int(idx[-1]) + 1)
            if coord.shape[0] > 1:
                rows = sl
            else:
                cols = sl
        return rows, cols

    def sub(self, coord: np.ndarray, win: tuple[slice, slice]) -> np.ndarray:
        return coord[win[0] if coord.shape[0] > 1 else slice(None), win[1] if coord.shape[1] > 1 else slice(None)]

    def ellipsoid(self, center: tuple[float, float, float], semi: tuple[float, float, float]
                  ) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """(window, normalised squared radius inside the window) of an axis-aligned ellipsoid."""
        win = self.window(center, semi)
        if win is None:
            return None
        q = ((self.sub(self.x, win) - center[0]) / semi[0]) ** 2
        q = q + ((self.sub(self.y, win) - center[1]) / semi[1]) ** 2
        q = q + ((self.sub(self.z, win) - center[2]) / semi[2]) ** 2
        return win, q


@dataclass(frozen=True)
class HeadParams:
    """One subject's anatomy. Defaults describe a normal adult; SIH signs are the last five fields."""

    scale: float = 1.0
    skull_mm: float = 6.5
    scalp_mm: float = 6.0
    csf_mm: float = 1.5  # subarachnoid space over the convexity (grows with atrophy)
    vent_scale: float = 1.0
    sulcus_width: float = 0.12
    waves: tuple[tuple[float, float, float, float], ...] = ((0.8, 0.5, 0.3, 0.0), (-0.3, 0.9, 0.2, 1.0),
                                                            (0.2, -0.3, 0.93, 2.0))
    wavelength_mm: float = 22.0
    pineal_calc: bool = True
    choroid_calc: bool = True
    sag_mm: float = 0.0  # downward displacement of brainstem and diencephalon (brain sag)
    prepontine_mm: float = 5.0  # width of the prepontine cistern
    sinus_scale: float = 1.0  # venous sinus size; > 1.4 with convex margins = engorgement
    dura_mm: float = 0.6  # dura thickness (pachymeningeal enhancement thickens it on MR)
    subdural_mm: float = 0.0  # bilateral subdural fluid collections

    @staticmethod
    def random(rng: np.random.Generator) -> HeadParams:
        dirs = rng.normal(size=(3, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        waves = tuple((float(d[0]), float(d[1]), float(d[2]), float(p))
                      for d, p in zip(dirs, rng.uniform(0, 2 * np.pi, 3)))
        atrophy = float(rng.uniform(0, 1))
        return HeadParams(
            scale=float(rng.uniform(0.92, 1.05)), skull_mm=float(rng.uniform(5.5, 8.0)),
            scalp_mm=float(rng.uniform(4.5, 7.5)), csf_mm=1.0 + 2.0 * atrophy,
            vent_scale=float(0.85 + 0.6 * atrophy + rng.uniform(-0.1, 0.1)),
            sulcus_width=0.08 + 0.1 * atrophy, waves=waves, wavelength_mm=float(rng.uniform(18, 26)),
            pineal_calc=bool(rng.random() < 0.7), choroid_calc=bool(rng.random() < 0.6),
            prepontine_mm=float(rng.uniform(4.0, 6.5)), sinus_scale=float(rng.uniform(0.8, 1.1)),
            dura_mm=float(rng.uniform(0.4, 0.8)))


@dataclass
class Sample:
    """Tissue labels on a plane plus the signed distance (mm, > 0 outside) to the skull's inner table."""

    labels: np.ndarray
    d: np.ndarray
    plane: Plane

    def mask(self, *tissues: Tissue) -> np.ndarray:
        return np.isin(self.labels, np.array(tissues, np.uint8))


class HeadModel:
    """Paints a subject's tissues on planes. Offsets shift the head inside the field of view."""

    def __init__(self, params: HeadParams, offset: tuple[float, float, float] = (0.0, 0.0, 0.0)):
        self.p = params
        self.offset = offset
        s = params.scale
        self.semi = (INNER_SEMI[0] * s, INNER_SEMI[1] * s, INNER_SEMI[2] * s)
        self.center = INNER_CENTER

    def to_model(self, plane: Plane) -> Plane:
        ox, oy, oz = self.offset
        return Plane(plane.x - ox, plane.y - oy, plane.z - oz, plane.shape)

    def distance(self, pl: Plane) -> np.ndarray:
        dx = pl.x - self.center[0]
        dy = pl.y - self.center[1]
        dz = pl.z - self.center[2]
        r = np.sqrt((dx / self.semi[0]) ** 2 + (dy / self.semi[1]) ** 2 + (dz / self.semi[2]) ** 2)
        rho = np.sqrt(dx * dx + dy * dy + dz * dz)
        return np.broadcast_to(rho * (1.0 - 1.0 / np.maximum(r, 1e-3)), pl.shape).astype(np.float32)

    def floor(self, pl: Plane) -> np.ndarray:
        """Height of the skull base under each point: anterior, middle and posterior cranial fossae."""
        y = pl.y / self.p.scale
        fl = np.interp(y, [-200, -60, -40, -18, 2, 22, 200], [-8, -10, -22, -42, -44, -60, -62]).astype(np.float32)
        # middle fossae are deepest laterally; the sella and clivus rise in the midline
        lateral = np.clip(np.abs(pl.x / self.p.scale) / 30.0, 0.0, 1.0)
        middle = (y > -40) & (y < 10)
        fl = np.where(middle, fl + (1.0 - lateral) * 14.0, fl).astype(np.float32)
        return np.broadcast_to(fl * self.p.scale, pl.shape)

    def sample(self, plane: Plane) -> Sample:
        pl = self.to_model(plane)
        p = self.p
        lab = np.zeros(pl.shape, np.uint8)
        d = self.distance(pl)
        z = np.broadcast_to(pl.z, pl.shape)
        floor = self.floor(pl)
        self._paint_face_and_neck(pl, lab)
        head = (d < p.skull_mm + p.scalp_mm) & (z > -75)
        lab[head & (d >= p.skull_mm + p.scalp_mm - 1.0)] = Tissue.SKIN
        lab[head & (d >= p.skull_mm + 1.5) & (d < p.skull_mm + p.scalp_mm - 1.0)] = Tissue.FAT
        lab[head & (d >= p.skull_mm) & (d < p.skull_mm + 1.5)] = Tissue.MUSCLE
        below = (d < p.skull_mm) & (z <= floor)
        lab[below] = Tissue.SOFT
        base = below & (z > floor - 9.0)
        lab[base] = Tissue.DIPLOE
        lab[base & ((z > floor - 2.0) | (z < floor - 7.0))] = Tissue.BONE
        skull = (d >= 0) & (d < p.skull_mm) & (z > floor)
        lab[skull] = Tissue.DIPLOE
        lab[skull & ((d < 1.8) | (d > p.skull_mm - 1.8))] = Tissue.BONE
        self._paint_skull_base_cavities(pl, lab)
        cavity = (d < 0) & (z > floor)
        self._paint_brain(pl, lab, d, cavity)
        return Sample(lab, d, pl)

    # -- regions outside the cranial cavity -------------------------------------------------------------
    def _paint(self, pl: Plane, lab: np.ndarray, center: tuple[float, float, float],
               semi: tuple[float, float, float], tissue: Tissue, where: np.ndarray | None = None,
               only: tuple[Tissue, ...] | None = None) -> None:
        s = self.p.scale
        found = pl.ellipsoid((center[0] * s, center[1] * s, center[2] * s), (semi[0] * s, semi[1] * s,
                                                                            semi[2] * s))
        if found is None:
            return
        win, q = found
        m = q <= 1.0
        if where is not None:
            m &= where[win]
        if only is not None:
            m &= np.isin(lab[win], np.array(only, np.uint8))
        lab[win][m] = tissue

    def _paint_face_and_neck(self, pl: Plane, lab: np.ndarray) -> None:
        self._paint(pl, lab, (0, -38, -62), (50, 48, 48), Tissue.SKIN)
        self._paint(pl, lab, (0, -38, -62), (48, 46, 46), Tissue.SOFT)
        self._paint(pl, lab, (0, 12, -110), (52, 52, 60), Tissue.SKIN)
        self._paint(pl, lab, (0, 12, -110), (50, 50, 58), Tissue.SOFT)
        self._paint(pl, lab, (0, 12, -110), (14, 13, 50), Tissue.BONE)  # cervical vertebrae
        self._paint(pl, lab, (0, 12, -110), (11, 10, 50), Tissue.DIPLOE)
        self._paint(pl, lab, (0, 32, -100), (8, 7, 50), Tissue.CSF)
        self._paint(pl, lab, (0, 32, -100), (5, 5, 50), Tissue.CORD)
        self._paint(pl, lab, (0, -18, -110), (9, 7, 45), Tissue.AIR)  # pharynx

    def _paint_skull_base_cavities(self, pl: Plane, lab: np.ndarray) -> None:
        outside = (Tissue.SOFT, Tissue.BONE, Tissue.DIPLOE, Tissue.SKIN, Tissue.FAT, Tissue.MUSCLE)
        for sx in (-1, 1):
            self._paint(pl, lab, (31 * sx, -60, -26), (17, 16, 15), Tissue.FAT, only=outside)
            self._paint(pl, lab, (32 * sx, -64, -26), (11, 11, 11), Tissue.EYE, only=(Tissue.FAT,))
            self._paint(pl, lab, (27 * sx, -46, -58), (13, 16, 17), Tissue.AIR_CELLS, only=outside)
            self._paint(pl, lab, (47 * sx, 22, -44), (8, 10, 9), Tissue.AIR_CELLS, only=outside)
        self._paint(pl, lab, (0, -18, -40), (12, 10, 9), Tissue.AIR_CELLS, only=outside)
        self._paint(pl, lab, (0, -62, -52), (9, 20, 13), Tissue.AIR, only=outside)

    # -- the brain ------------------------------------------------------------------------------------------
    def _sulcal_field(self, pl: Plane, idx: tuple[np.ndarray, ...], phase: float) -> np.ndarray:
        xs = np.broadcast_to(pl.x, pl.shape)[idx]
        ys = np.broadcast_to(pl.y, pl.shape)[idx]
        zs = np.broadcast_to(pl.z, pl.shape)[idx]
        k = np.float32(2 * np.pi / (self.p.wavelength_mm * self.p.scale))
        f = np.zeros(xs.shape, np.float32)
        for wx, wy, wz, ph in self.p.waves:
            f += np.sin(k * (wx * xs + wy * ys + wz * zs) + np.float32(ph + phase))
        return f / np.float32(len(self.p.waves) ** 0.5)

    def _paint_brain(self, pl: Plane, lab: np.ndarray, d: np.ndarray, cavity: np.ndarray) -> None:
        p = self.p
        lab[cavity] = Tissue.CSF
        idx = np.nonzero(cavity)
        if idx[0].size == 0:
            return
        depth = -d[idx] - p.dura_mm - p.subdural_mm
        f = self._sulcal_field(pl, idx, 0.0)
        g = self._sulcal_field(pl, idx, 1.3)
        gm_thick = 2.5 + 3.0 * (0.5 + 0.5 * g)
        vals = np.full(depth.shape, Tissue.WM, np.uint8)
        vals[depth < p.csf_mm + gm_thick] = Tissue.GM
        sulcus = (np.abs(f) < p.sulcus_width) & (depth < p.csf_mm + 14.0)
        vals[sulcus | (depth < p.csf_mm)] = Tissue.CSF
        if p.subdural_mm > 0:
            vals[(-d[idx] > p.dura_mm) & (-d[idx] <= p.dura_mm + p.subdural_mm)] = Tissue.SUBDURAL_FLUID
        vals[-d[idx] <= p.dura_mm] = Tissue.DURA
        lab[idx] = vals
        brain = (Tissue.GM, Tissue.WM, Tissue.CSF)
        self._paint_posterior_fossa(pl, lab, cavity)
        self._paint_deep(pl, lab, brain)
        self._paint_midline(pl, lab, d, cavity)
        self._paint_sinuses(pl, lab, d, cavity)

    def _paint_posterior_fossa(self, pl: Plane, lab: np.ndarray, cavity: np.ndarray) -> None:
        p = self.p
        s = p.scale
        sag = p.sag_mm
        infra = cavity & (np.broadcast_to(pl.y, pl.shape) > 8 * s) & (np.broadcast_to(pl.z, pl.shape) <
                                                                        (-26 - 0.15 * sag) * s)
        lab[infra & (np.isin(lab, np.array((Tissue.GM, Tissue.WM), np.uint8)))] = Tissue.CEREBELLUM
        # prepontine cistern between clivus and pons; the pons moves down and forward with brain sag
        pons_y = 15.0 - (5.0 - p.prepontine_mm) * 0.9
        front = pons_y - 12.0
        self._paint(pl, lab, (0, front - p.prepontine_mm / 2, -40 - sag),
                    (13, p.prepontine_mm / 2 + 0.6, 16), Tissue.CSF, where=cavity)
        self._paint(pl, lab, (0, 34, -40 - sag), (9, 7, 14), Tissue.CSF, where=cavity)  # 4th ventricle region
        self._paint(pl, lab, (0, pons_y, -40 - sag), (14, 12, 15), Tissue.BRAINSTEM, where=cavity)
        self._paint(pl, lab, (0, 31, -41 - sag), (5, 3.5, 7), Tissue.VENTRICLE, where=cavity)
        self._paint(pl, lab, (0, 20, -57 - sag), (9, 9, 10), Tissue.BRAINSTEM, where=cavity)
        self._paint(pl, lab, (0, 58, -48), (10, 12, 10), Tissue.CSF, where=cavity)  # cisterna magna

    def _paint_deep(self, pl: Plane, lab: np.ndarray, brain: tuple[Tissue, ...]) -> None:
        p = self.p
        v = p.vent_scale
        sag = p.sag_mm
        for sx in (-1, 1):
            self._paint(pl, lab, (36 * sx, -8, -6), (6, 22, 13), Tissue.GM, only=brain)  # insula
            self._paint(pl, lab, (41 * sx, -8, -8), (2.5 * v, 24, 12), Tissue.CSF, only=brain)  # sylvian
            self._paint(pl, lab, (22 * sx, -6, 2), (7, 14, 10), Tissue.DEEP_GM, only=brain)  # lentiform
            self._paint(pl, lab, (13 * sx, -16, 10), (6, 9, 10), Tissue.DEEP_GM, only=brain)  # caudate
            self._paint(pl, lab, (10 * sx, 10, 0 - sag * 0.5), (9, 13, 9), Tissue.DEEP_GM, only=brain)
            vent = (Tissue.GM, Tissue.WM, Tissue.CSF, Tissue.DEEP_GM)
            self._paint(pl, lab, (9 * sx * v ** 0.5, -4, 17), (4.5 * v, 26, 9 * v), Tissue.VENTRICLE, only=vent)
            self._paint(pl, lab, (10 * sx, -26, 6), (5 * v, 11, 9 * v), Tissue.VENTRICLE, only=vent)
            self._paint(pl, lab, (17 * sx, 30, 4), (5.5 * v, 15, 8 * v), Tissue.VENTRICLE, only=vent)
            self._paint(pl, lab, (19 * sx, 42, 2), (3.5 * v, 10, 5 * v), Tissue.VENTRICLE, only=vent)
            self._paint(pl, lab, (29 * sx, -4, -20), (3 * v, 13, 4 * v), Tissue.VENTRICLE, only=vent)
            chor = Tissue.CALC if p.choroid_calc else Tissue.CHOROID
            self._paint(pl, lab, (18 * sx, 31, 4), (2.5, 4.5, 2.5), chor, only=(Tissue.VENTRICLE,))
            self._paint(pl, lab, (3 * sx, -6, -24 - sag), (2.2, 2.2, 2.2), Tissue.GM, only=brain)  # mamillary
        self._paint(pl, lab, (0, -4, -8 - sag * 0.5), (2.2 * v, 13, 11), Tissue.VENTRICLE,
                    only=(Tissue.GM, Tissue.WM, Tissue.CSF, Tissue.DEEP_GM))
        self._paint(pl, lab, (0, 24, -5 - sag * 0.5), (3, 3, 3), Tissue.CALC if p.pineal_calc else Tissue.GM,
                    only=brain + (Tissue.DEEP_GM,))
        self._paint(pl, lab, (0, -12, -22), (12, 8, 6 - min(sag, 4) * 0.8), Tissue.CSF, only=brain)
        self._paint(pl, lab, (0, 12, -20 - sag), (17, 16, 8), Tissue.CSF, only=brain + (Tissue.DEEP_GM,))
        self._paint(pl, lab, (0, 10, -20 - sag), (12, 11, 9), Tissue.BRAINSTEM,
                    only=brain + (Tissue.DEEP_GM, Tissue.CEREBELLUM))

    def _paint_midline(self, pl: Plane, lab: np.ndarray, d: np.ndarray, cavity: np.ndarray) -> None:
        s = self.p.scale
        x = np.broadcast_to(pl.x, pl.shape)
        y = np.broadcast_to(pl.y, pl.shape)
        z = np.broadcast_to(pl.z, pl.shape)
        above_cc = (z > 26 * s) | (np.abs(y - 2 * s) > 38 * s)
        fissure = cavity & (np.abs(x) < 1.4 + 0.4 * self.p.csf_mm) & above_cc & (z > -20 * s)
        fissure &= np.isin(lab, np.array((Tissue.GM, Tissue.WM, Tissue.CSF), np.uint8))
        lab[fissure] = Tissue.CSF
        lab[fissure & (np.abs(x) < 0.6)] = Tissue.FALX

    def _paint_sinuses(self, pl: Plane, lab: np.ndarray, d: np.ndarray, cavity: np.ndarray) -> None:
        p = self.p
        s = p.scale
        x = np.broadcast_to(pl.x, pl.shape)
        y = np.broadcast_to(pl.y, pl.shape)
        z = np.broadcast_to(pl.z, pl.shape)
        power = 0.8 if p.sinus_scale < 1.3 else 1.8  # concave margins when normal, convex when engorged
        depth = np.maximum(-d, 0)
        h = 5.5 * p.sinus_scale
        w = 4.5 * p.sinus_scale
        sss = cavity & (depth < h) & (z > -10 * s) & (y > -70 * s)
        sss &= (np.abs(x) / w) ** power + (depth / h) ** power <= 1.0
        lab[sss] = Tissue.SINUS
        ht = 5.0 * p.sinus_scale
        wt = 4.0 * p.sinus_scale
        zt = -28.0 * s
        ts = cavity & (depth < ht) & (y > 30 * s) & (np.abs(z - zt) < wt)
        ts &= (np.abs(z - zt) / wt) ** power + (depth / ht) ** power <= 1.0
        lab[ts] = Tissue.SINUS
