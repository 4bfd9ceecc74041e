"""Cerebral microbleeds on SWI: select the SWI series, detect bleeds slice by slice (Mask R-CNN), merge the
detections across slices into bleeds, place each one (lobar or deep), classify the small-vessel disease
from the bleeds (attention MIL).

    slices, which = select_swi(instances, rules)      # the SWI magnitude series, else the mIP series
    volume = read_swi_volume(slices)                   # pixels and geometry
    result = CmbModel(settings, detector, classifier, device).run(volume)   # CmbResult

Steps (docs/models.md, "Microbleeds"):
1. **Input**: the series' intensities scaled so its 1st and 99th percentiles (of the non-zero voxels, whole
   series) map to 0 and 1; each slice with its two neighbours as three channels, resized (aspect kept,
   zero-padded) to the manifest's input size.
2. **Detection** per slice: boxes, scores and masks; detections scoring below `score_min` are dropped.
3. **Merging**: detections on neighbouring slices whose centres lie within max(2.5 mm, 0.75 x the larger
   diameter) of each other, or whose masks overlap on one slice, are one bleed. A bleed's score is its best
   detection's; its diameter the equivalent-circle diameter of its largest cross-section; its centre the
   area-weighted mean of its cross-sections' centroids (patient mm); its key image the slice where it is
   largest. A chain longer than `tube_factor` x its diameter + 2 slices is a vessel, not a bleed.
4. **Location**: depth below the head's surface (3D distance transform of the head mask); a bleed at least
   `deep_min_depth_mm` deep is deep (basal ganglia, thalamus, brainstem, deep white matter), else lobar.
   The threshold is fitted on the training bleeds' lobar/deep labels.
5. **Confidence** (`ml/cmb_rescore.py`, when the manifest has a rescorer): a logistic regression over the
   candidate as a whole (instance features, slices spanned, extent, diameter, detector features) gives the
   probability that it is a bleed; without one, the confidence is the detector score. A bleed is reported
   when it is not a vessel and its confidence reaches the `microbleeds` threshold.
6. **Class**: the MIL network over the reported bleeds: per bleed eight numbers (`INSTANCE_FEATURES`)
   and, when the manifest's `classifier.detector_features` says so, the detector's box-head features of
   its key detection; per study log(1 + count), the deep fraction and, when the classifier was trained
   with them, the FLAIR white-matter hyperintensity extent and whether a FLAIR was read (`ml/wmh.py`; the
   rule "flair").
   Softmax over none / aSVD / CAA / CADASIL.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
import torch

from dicom_node.errors import PixelDataError, SelectionError
from dicom_node.ml.analysis import AnalysisStatus, Finding, InstanceRef, KeyImage, Measurement, StudyAnalysis
from dicom_node.ml.cmb_rescore import CandidateRescorer, rescore
from dicom_node.ml.mil import BAG_FEATURES, AttentionMIL
from dicom_node.ml.preprocess import Placement, resize_pad, unplace
from dicom_node.ml.rules import Orientation, SeriesRule
from dicom_node.ml.selection import MR_IMAGE_STORAGE, select_series, slice_position
from dicom_node.ml.wmh import FLAIR_RULE, NO_FLAIR, FlairExtent

log = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = ("none", "asvd", "caa", "cadasil")  # MIL outputs, in this order
CLASS_LABELS: tuple[str, ...] = ("asvd", "caa", "cadasil")  # reported findings ("none": all three absent)
LABELS: tuple[str, ...] = ("microbleeds", *CLASS_LABELS)
BLEED_LABEL = "microbleed"  # one finding per reported bleed, instance 1..n
INSTANCE_FEATURES = ("depth", "deep", "lateral", "anteroposterior", "log_diameter", "score", "elongation",
                     "context")

_PHASE = r"\bpha(se)?\b|filt ?pha"
_MIP = r"\bm(i?n)?ip\b|min ?ip|mnip"
SWI_RULE = SeriesRule(
    label="axial SWI (magnitude, phase-mask enhanced)",
    modalities=("MR",),
    sop_classes=(MR_IMAGE_STORAGE,),
    body_part=r"head|brain|skull|neuro",
    description_include=(r"\bswi", r"\bswan\b", r"\bswip\b", r"venbold", r"susceptib"),
    description_exclude=(_PHASE, _MIP, r"\bmag\b", r"\bqsm\b", r"locali[sz]er|scout|survey"),
    image_type_exclude=("P", "PHASE", "PHASE MAP", "MNIP", "MINIP", "MIN IP", "PROJECTION IMAGE", "LOCALIZER",
                        "MPR", "REFORMATTED"),
    orientation=Orientation.AXIAL,
    slice_thickness_mm=(0.5, 5.0),
    min_images=8,
)
MIP_RULE = SeriesRule(
    label="axial SWI minimum intensity projection",
    modalities=("MR",),
    sop_classes=(MR_IMAGE_STORAGE,),
    body_part=r"head|brain|skull|neuro",
    description_include=(_MIP,),
    description_exclude=(_PHASE, r"locali[sz]er|scout|survey"),
    image_type_exclude=("P", "PHASE", "PHASE MAP", "LOCALIZER"),
    orientation=Orientation.AXIAL,
    slice_thickness_mm=(0.5, 5.0),
    min_images=8,
)
DEFAULT_RULES: dict[str, SeriesRule] = {"swi": SWI_RULE, "mip": MIP_RULE, "flair": FLAIR_RULE}
REQUIRED_RULES = ("swi", "mip")  # "flair" is optional in a manifest (default FLAIR_RULE)


def select_swi(instances: Sequence[InstanceRef], rules: Mapping[str, SeriesRule] | None = None
               ) -> tuple[list[InstanceRef], str]:
    """The SWI magnitude series (rule "swi"), else the minimum intensity projection ("mip"), slices sorted;
    SelectionError naming every series and why when there is neither."""
    rules = rules or DEFAULT_RULES
    try:
        return select_series(instances, rules["swi"]), "swi"
    except SelectionError as swi_error:
        try:
            return select_series(instances, rules["mip"]), "mip"
        except SelectionError:
            raise SelectionError(f"no SWI series for microbleeds (neither an {rules['swi'].label} nor an "
                                 f"{rules['mip'].label}): {_reasons(str(swi_error))}") from None


def _reasons(message: str) -> str:
    return message.split("; ", 1)[1] if "; " in message else message


@dataclass
class SwiVolume:
    """A sorted SWI series: pixels (slices, rows, cols) in stored units and its geometry."""

    slices: list[InstanceRef]
    pixels: np.ndarray
    row_spacing: float  # mm between rows
    col_spacing: float  # mm between columns
    slice_spacing: float  # mm between slices
    origins: np.ndarray  # (slices, 3) ImagePositionPatient
    row_dir: np.ndarray  # direction of increasing column index
    col_dir: np.ndarray  # direction of increasing row index

    def patient(self, i: float, row: float, col: float) -> np.ndarray:
        """Patient coordinates (mm) of (slice i, row, col); fractional slices interpolate."""
        k = int(min(max(math.floor(i), 0), len(self.origins) - 1))
        k2 = min(k + 1, len(self.origins) - 1)
        t = float(i) - k
        origin = self.origins[k] * (1 - t) + self.origins[k2] * t
        return origin + col * self.col_spacing * self.row_dir + row * self.row_spacing * self.col_dir


def read_swi_volume(slices: Sequence[InstanceRef]) -> SwiVolume:
    """Decode a sorted series; PixelDataError when a slice cannot be decoded or the geometry differs."""
    arrays: list[np.ndarray] = []
    origins: list[list[float]] = []
    spacing: tuple[float, float] = (1.0, 1.0)
    orientation = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    for k, ref in enumerate(slices):
        try:
            ds = pydicom.dcmread(ref.path)
            pixels = ds.pixel_array
        except Exception as exc:  # pydicom raises many types for unsupported/corrupt pixel data
            raise PixelDataError(f"cannot decode pixel data of {ref.path}: {type(exc).__name__}: {exc}") from exc
        if pixels.ndim != 2 or (arrays and pixels.shape != arrays[0].shape):
            raise PixelDataError(f"{ref.path}: slice of shape {pixels.shape} does not fit the series")
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        arrays.append(pixels.astype(np.float32) * slope + intercept)
        if k == 0:
            ps = ds.get("PixelSpacing")
            spacing = (float(ps[0]), float(ps[1])) if ps and len(ps) == 2 else (1.0, 1.0)
            iop = ref.image_orientation or orientation
            orientation = tuple(float(v) for v in iop)  # type: ignore[assignment]
        pos = ref.image_position if ref.image_position and len(ref.image_position) == 3 else (0.0, 0.0, float(k))
        origins.append([float(v) for v in pos])
    positions = [slice_position(r) for r in slices]
    steps = np.diff(positions) if len(positions) > 1 else np.array([1.0])
    thickness = float(np.median(np.abs(steps))) or float(slices[0].slice_thickness or 1.0)
    return SwiVolume(list(slices), np.stack(arrays), spacing[0], spacing[1], thickness,
                     np.asarray(origins, np.float64), np.asarray(orientation[:3], np.float64),
                     np.asarray(orientation[3:], np.float64))


def normalise(pixels: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Whole-series percentile scaling to [0, 1] (clipped), on the non-zero voxels."""
    values = pixels[::2, ::4, ::4]
    values = values[values > 0]
    if values.size < 16:
        values = pixels.ravel()
    lo, hi = (float(v) for v in np.percentile(values, [low, high]))
    if hi - lo < 1e-6:
        return np.zeros_like(pixels, dtype=np.float32)
    return np.clip((pixels - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def slice_inputs(norm: np.ndarray, size: int) -> tuple[np.ndarray, Placement]:
    """(slices, 3, size, size) float32: each slice between its neighbours (ends repeated), and the placement."""
    n = len(norm)
    out = np.empty((n, 3, size, size), np.float32)
    placement = None
    for i in range(n):
        stack = norm[[max(0, i - 1), i, min(n - 1, i + 1)]]
        out[i], placement = resize_pad(stack, size)
    assert placement is not None
    return out, placement


def head_depth(norm: np.ndarray, volume: SwiVolume, threshold: float = 0.08) -> np.ndarray:
    """Depth (mm) of every voxel below the head's surface: 3D distance to the outside of the head mask.

    The slab's lowest slice is never treated as a surface (the brain goes on below it); its highest is only
    when the head there is less than half its widest cross-section (the slab reaches the vertex)."""
    from scipy import ndimage

    head = np.zeros(norm.shape, bool)
    for i in range(len(norm)):
        m = ndimage.binary_fill_holes(ndimage.binary_opening(norm[i] > threshold, iterations=1))
        labels, count = ndimage.label(m)
        if count:
            sizes = ndimage.sum(m, labels, range(1, count + 1))
            head[i] = labels == (int(np.argmax(sizes)) + 1)
    areas = head.sum(axis=(1, 2))
    top_open = bool(areas.max() > 0 and areas[-1] < 0.5 * areas.max())
    padded = np.concatenate([head[:1], head, np.zeros_like(head[:1]) if top_open else head[-1:]])
    depth = ndimage.distance_transform_edt(padded, sampling=(volume.slice_spacing, volume.row_spacing,
                                                              volume.col_spacing))
    return np.asarray(depth[1:-1], np.float32)


@dataclass
class Candidate:
    """Detections merged across slices: one bleed (or a vessel, when `tubular`)."""

    score: float
    masks: dict[int, np.ndarray]  # slice index -> bool mask (source pixels)
    features: np.ndarray  # box-head features of the key detection
    key_slice: int
    center_px: tuple[float, float]  # (row, col) of the key cross-section's centroid
    radius_px: float
    diameter_mm: float
    center_mm: tuple[float, float, float]
    extent_mm: float  # along the slice normal
    tubular: bool = False
    depth_mm: float = 0.0
    location: str = "lobar"
    instance: list[float] = field(default_factory=list)  # INSTANCE_FEATURES values
    confidence: float = 0.0  # probability of a bleed (`cmb_rescore`), else the detector score; reported on it


@dataclass
class CmbResult:
    candidates: list[Candidate]  # every merged candidate (vessels flagged), most confident first
    bleeds: list[Candidate]  # reported: not tubular, confidence >= threshold; most confident first
    class_probabilities: dict[str, float]  # CLASSES -> probability
    heat: dict[int, np.ndarray]  # slice index -> float map in [0, 1] of the reported bleeds' mask probabilities
    probability: float  # of any bleed in the study (`CmbModel.result`)
    flair: FlairExtent = NO_FLAIR  # what the classifier was given about FLAIR

    @property
    def svd_class(self) -> str:
        return max(self.class_probabilities, key=lambda k: self.class_probabilities[k])

    def count(self, location: str | None = None) -> int:
        return sum(1 for b in self.bleeds if location is None or b.location == location)


@dataclass(frozen=True)
class CmbSettings:
    """What the manifest says about the task beyond its networks (see `cmb_manifest`)."""

    size: int
    percentiles: tuple[float, float]
    threshold: float  # report a bleed at this score
    score_min: float = 0.1  # detections kept for merging
    mask_threshold: float = 0.5
    tube_factor: float = 1.6
    deep_min_depth_mm: float = 38.0
    head_threshold: float = 0.08
    temperature: float = 1.0  # the classifier's logits are divided by this before the softmax (calibration)


class _Detection:
    __slots__ = ("area", "centroid", "feature", "mask", "prob", "score", "slice")

    def __init__(self, slice_index: int, score: float, mask: np.ndarray, prob: np.ndarray, feature: np.ndarray):
        self.slice, self.score, self.mask, self.prob, self.feature = slice_index, score, mask, prob, feature
        rows, cols = np.nonzero(mask)
        self.area = len(rows)
        self.centroid = (float(rows.mean()), float(cols.mean())) if len(rows) else (0.0, 0.0)


def detections(detector: torch.nn.Module, inputs: np.ndarray, placement: Placement, settings: CmbSettings,
               device: torch.device, batch_size: int = 8) -> tuple[list[_Detection], float]:
    """Every detection scoring at least `score_min`, its mask in source pixels; and the series' peak bleed
    probability over all proposals (`detect_with_features`)."""
    from dicom_node.ml.cmb_detector import detect_with_features

    found: list[_Detection] = []
    peak = 0.0
    for start in range(0, len(inputs), batch_size):
        batch = torch.from_numpy(inputs[start: start + batch_size]).to(device)
        for k, det in enumerate(detect_with_features(detector, batch)):
            i = start + k
            peak = max(peak, float(det["peak"]))
            for j in range(len(det["scores"])):
                score = float(det["scores"][j])
                if score < settings.score_min:
                    continue
                prob = unplace(det["masks"][j, 0].float().cpu().numpy(), placement)
                mask = prob >= settings.mask_threshold
                if not mask.any():  # a tiny bleed: its most probable pixels
                    mask = prob >= 0.5 * float(prob.max()) if prob.max() > 0 else mask
                if not mask.any():
                    continue
                found.append(_Detection(i, score, mask, prob, det["features"][j].float().cpu().numpy()))
    return found, peak


def merge(found: list[_Detection], volume: SwiVolume, settings: CmbSettings) -> list[Candidate]:
    """Detections on neighbouring (or the same) slices that belong to one object, as candidates."""
    parent = list(range(len(found)))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    pixel_mm = math.sqrt(volume.row_spacing * volume.col_spacing)
    for a in range(len(found)):
        for b in range(a + 1, len(found)):
            da, db = found[a], found[b]
            gap = abs(da.slice - db.slice)
            if gap > 1:
                continue
            if gap == 0:
                linked = bool((da.mask & db.mask).any())
            else:
                dist = math.dist(da.centroid, db.centroid) * pixel_mm
                diam = 2 * math.sqrt(max(da.area, db.area) / math.pi) * pixel_mm
                linked = dist <= max(2.5, 0.75 * diam)
            if linked:
                parent[root(a)] = root(b)
    groups: dict[int, list[_Detection]] = {}
    for k, d in enumerate(found):
        groups.setdefault(root(k), []).append(d)
    candidates = [_candidate(members, volume, settings) for members in groups.values()]
    return sorted(candidates, key=lambda c: -c.score)


def _candidate(members: list[_Detection], volume: SwiVolume, settings: CmbSettings) -> Candidate:
    masks: dict[int, np.ndarray] = {}
    for d in members:
        masks[d.slice] = masks[d.slice] | d.mask if d.slice in masks else d.mask.copy()
    areas = {i: int(m.sum()) for i, m in masks.items()}
    key = max(areas, key=lambda i: areas[i])
    rows, cols = np.nonzero(masks[key])
    center_px = (float(rows.mean()), float(cols.mean()))
    best = max(members, key=lambda d: d.score)
    points, weights = [], []
    for i, m in masks.items():
        r, c = np.nonzero(m)
        points.append(volume.patient(i, float(r.mean()), float(c.mean())))
        weights.append(len(r))
    center = np.average(np.asarray(points), axis=0, weights=weights)
    diameter = 2 * math.sqrt(areas[key] * volume.row_spacing * volume.col_spacing / math.pi)
    extent = (max(masks) - min(masks) + 1) * volume.slice_spacing
    tubular = extent > settings.tube_factor * diameter + 2 * volume.slice_spacing
    return Candidate(score=best.score, confidence=best.score, masks=masks, features=best.feature, key_slice=key,
                     center_px=center_px, radius_px=math.sqrt(areas[key] / math.pi), diameter_mm=diameter,
                     center_mm=(float(center[0]), float(center[1]), float(center[2])), extent_mm=extent,
                     tubular=tubular)


def place(candidates: list[Candidate], norm: np.ndarray, depth: np.ndarray, volume: SwiVolume,
          settings: CmbSettings) -> None:
    """Depth, lobar/deep and the instance features of every candidate (in place)."""
    from scipy import ndimage

    for c in candidates:
        i = c.key_slice
        r, col = (round(v) for v in c.center_px)
        c.depth_mm = float(depth[i, r, col])
        c.location = "deep" if c.depth_mm >= settings.deep_min_depth_mm else "lobar"
        head = depth[i] > 0
        hr, hc = np.nonzero(head)
        cy, cx = (float(hr.mean()), float(hc.mean())) if len(hr) else (r, col)
        mask = c.masks[i]
        ring = ndimage.binary_dilation(mask, iterations=max(2, round(6.0 / volume.row_spacing))) & ~ndimage.binary_dilation(mask, iterations=2) & head
        tissue = norm[i][head & (norm[i] > 0.2)]
        ref = float(np.median(tissue)) if tissue.size else 1.0
        context = float(norm[i][ring].mean()) / ref if ring.any() and ref > 0 else 1.0
        c.instance = [
            c.depth_mm / 50.0,
            1.0 if c.location == "deep" else 0.0,
            abs(col - cx) * volume.col_spacing / 70.0,
            (r - cy) * volume.row_spacing / 90.0,
            math.log(max(c.diameter_mm, 0.5)),
            c.score,
            c.extent_mm / max(c.diameter_mm, 0.5) / 3.0,
            context,
        ]


def bag(bleeds: Sequence[Candidate]) -> tuple[np.ndarray, list[float]]:
    """MIL inputs of a study: (n, len(INSTANCE_FEATURES) + detector features) and the bag features."""
    from dicom_node.ml.mil import bag_features

    if not bleeds:
        return np.zeros((0, 0), np.float32), bag_features(0, 0)
    x = np.stack([np.concatenate([np.asarray(b.instance, np.float32), b.features.astype(np.float32)])
                  for b in bleeds])
    return x, bag_features(len(bleeds), sum(b.location == "deep" for b in bleeds))


def reported(candidates: Sequence[Candidate], threshold: float) -> list[Candidate]:
    """The bleeds a study reports: candidates that are not vessels with a confidence at the threshold."""
    return [c for c in candidates if not c.tubular and c.confidence >= threshold]


class CmbModel:
    """Detector, rescorer (optional) and classifier with the manifest's settings: `run(volume)` -> CmbResult."""

    def __init__(self, settings: CmbSettings, detector: torch.nn.Module, classifier: AttentionMIL,
                 device: torch.device, batch_size: int = 8, rescorer: CandidateRescorer | None = None) -> None:
        self.settings, self.detector, self.classifier = settings, detector, classifier
        self.device, self.batch_size, self.rescorer = device, batch_size, rescorer

    def candidates(self, volume: SwiVolume, norm: np.ndarray | None = None
                   ) -> tuple[list[Candidate], np.ndarray, float]:
        """Every merged candidate (vessels flagged, placed, confidence set), most confident first; the
        normalised series (given or computed) and the series' peak proposal score (`detections`)."""
        s = self.settings
        norm = normalise(volume.pixels, *s.percentiles) if norm is None else norm.astype(np.float32)
        inputs, placement = slice_inputs(norm, s.size)
        found, peak = detections(self.detector, inputs, placement, s, self.device, self.batch_size)
        candidates = merge(found, volume, s)
        place(candidates, norm, head_depth(norm, volume, s.head_threshold), volume, s)
        if self.rescorer is not None:  # else the confidence stays the detector score
            rescore(self.rescorer, candidates)
        return sorted(candidates, key=lambda c: -c.confidence), norm, peak

    def classify(self, bleeds: Sequence[Candidate], flair: FlairExtent = NO_FLAIR) -> dict[str, float]:
        """Class probabilities: the softmax of the calibrated logits."""
        z = self.logits(bleeds, flair) / self.settings.temperature
        probs = np.exp(z - z.max())
        return {c: float(p) for c, p in zip(CLASSES, probs / probs.sum(), strict=True)}

    def logits(self, bleeds: Sequence[Candidate], flair: FlairExtent = NO_FLAIR) -> np.ndarray:
        """The classifier's raw logits (len(CLASSES),) for a study's reported bleeds."""
        x, bf = bag(bleeds)
        if self.reads_flair:
            bf = bf + flair.bag_features()
        width = self.classifier.in_features  # the instance features, then as many detector features as it reads
        x = x[:, :width] if len(x) else np.zeros((0, width), np.float32)
        with torch.no_grad():
            self.classifier.eval()
            logits = self.classifier([torch.from_numpy(x).to(self.device)],
                                     torch.tensor([bf], dtype=torch.float32, device=self.device))
        return np.asarray(logits.float()[0].cpu().numpy(), np.float64)

    @property
    def reads_flair(self) -> bool:
        return self.classifier.bag_width > len(BAG_FEATURES)

    def run(self, volume: SwiVolume, threshold: float | None = None, flair: FlairExtent = NO_FLAIR) -> CmbResult:
        candidates, _, peak = self.candidates(volume)
        return self.result(candidates, self.settings.threshold if threshold is None else threshold, flair, peak)

    def result(self, candidates: list[Candidate], threshold: float, flair: FlairExtent = NO_FLAIR,
               peak: float = 0.0) -> CmbResult:
        """The reported bleeds, the class and the study's bleed probability: the best non-vessel candidate's
        confidence, or, with none, the peak proposal score (below the candidate floor `score_min`)."""
        bleeds = reported(candidates, threshold)
        heat: dict[int, np.ndarray] = {}
        for b in bleeds:
            m = heat.setdefault(b.key_slice, np.zeros(b.masks[b.key_slice].shape, np.float32))
            np.maximum(m, b.masks[b.key_slice].astype(np.float32) * b.confidence, out=m)
        probability = max((c.confidence for c in candidates if not c.tubular),
                          default=min(peak, self.settings.score_min))
        return CmbResult(candidates, bleeds, self.classify(bleeds, flair), heat, probability, flair)


def analysis_of(result: CmbResult, volume: SwiVolume, which: str, info: Any, threshold: float) -> StudyAnalysis:
    """The StudyAnalysis the node reports for a result (findings, counts, masks, the key image)."""
    slices = volume.slices
    first = slices[0]
    bleeds = result.bleeds
    findings = [Finding(label="microbleeds", probability=result.probability, threshold=threshold,
                        present=bool(bleeds))]
    masks: dict[str, np.ndarray] = {}
    for k, b in enumerate(bleeds, start=1):
        ref = slices[b.key_slice]
        findings.append(Finding(
            label=BLEED_LABEL, probability=b.confidence, threshold=threshold, present=True,
            key_sop_instance_uid=ref.sop_instance_uid, key_series_uid=ref.series_uid,
            region_center=b.center_px, region_radius=max(2.0, b.radius_px), instance=k, detail=b.location,
            measurements=(Measurement("diameter", round(b.diameter_mm, 1), "mm"),)))
        for i, m in b.masks.items():
            uid = slices[i].sop_instance_uid
            masks[uid] = masks[uid] | m if uid in masks else m.copy()
    probs = result.class_probabilities
    chosen = result.svd_class
    for label in CLASS_LABELS:
        others = max(p for c, p in probs.items() if c != label)
        findings.append(Finding(label=label, probability=probs[label], threshold=round(others, 6),
                                present=chosen == label))
    key_images = []
    if bleeds:
        key = bleeds[0].key_slice
        heat = result.heat[key]
        key_images.append(KeyImage(slices[key].sop_instance_uid, [BLEED_LABEL], heat / max(float(heat.max()), 1e-6)))
    lobar, deep = result.count("lobar"), result.count("deep")
    reason = (f"{len(slices)} slices of series {first.series_number} {first.series_description!r} ({which}) "
              f"analysed; {len(bleeds)} microbleeds ({lobar} lobar, {deep} deep); class {chosen} "
              f"({probs[chosen]:.0%})")
    flair = result.flair
    if flair.present or flair.reason:
        reason += f"; {flair.describe()}"
    evaluated = list(slices) + list(flair.series)
    return StudyAnalysis(
        model=info, status=AnalysisStatus.ANALYSED, reason=reason, study_uid=first.study_uid,
        evaluated_series_uids=list(dict.fromkeys(r.series_uid for r in evaluated)),
        evaluated_sop_instance_uids=[r.sop_instance_uid for r in evaluated],
        findings=findings, key_images=key_images, masks={BLEED_LABEL: masks} if masks else {},
        measurements=[Measurement("microbleed_count", len(bleeds), "{count}"),
                      Measurement("lobar_microbleed_count", lobar, "{count}"),
                      Measurement("deep_microbleed_count", deep, "{count}"),
                      *([Measurement("flair_wmh_fraction", round(100 * flair.extent, 1), "%")] if flair.present else [])])
