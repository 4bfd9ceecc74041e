"""Declarative series and image selection, on indexed headers only (`InstanceRef`), never on pixels.

A `SeriesRule` is data: each of its criteria either passes a series or gives the reason it does not.
`select_series` returns the best passing series or raises `SelectionError` naming every series and
why it was rejected, so a study that nothing suits gets a readable "not analysed" reason.

Rules shipped here:
- `ICH_CT_RULE`: one non-contrast axial head CT series (no scouts, no bone kernels, no dose reports).
- `SIH_T1C_AXIAL_RULE` / `SIH_T1C_CORONAL_RULE`: post-contrast T1 brain MR, axial and coronal.
`select_sih_images` then picks one axial and two coronal images (see docs/models.md, "Selection").
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from dicom_node.analysis import InstanceRef
from dicom_node.errors import SelectionError

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

# Sharp/bone reconstruction kernels of the main vendors (Siemens H6x-H9x/Hr6x+/J70+, GE BONE/BONEPLUS/EDGE/LUNG,
# Philips D/E/YC/YD, Canon FC3x/FC8x): a hemorrhage classifier trained on soft kernels must not read them.
BONE_KERNEL_RE = r"(?i)(\bH[6-9]\d|Hr[6-9]\d|Br6\d|J[7-9]\d|BONE|EDGE|LUNG|SHARP|\bFC[38]\d|^Y[CD]$|^[DE]$)"
CONTRAST_DESCRIPTION_RE = r"(?i)(\bpost\b|\bpost[-_ ]?(contrast|gd|c)\b|\+\s*c\b|\bc\+|\bgd\b|gado|contrast|\bce\b|\bkm\b)"
NO_CONTRAST_DESCRIPTION_RE = r"(?i)(non[-_ ]?contrast|without|w/o|\bnc\b|nativ|\bpre\b|pre[-_ ]?(contrast|gd))"


@dataclass(frozen=True)
class SeriesRule:
    """What a series must look like. Empty/None criteria accept anything."""

    name: str
    modalities: frozenset[str]
    sop_classes: frozenset[str] = frozenset()
    body_part_re: str | None = None  # applied only when BodyPartExamined is present
    description_include_re: str | None = None
    description_exclude_re: str | None = None
    image_type_require: frozenset[str] = frozenset()  # every value must appear in ImageType
    image_type_exclude: frozenset[str] = frozenset()  # none may appear
    kernel_exclude_re: str | None = None
    orientation: str | None = None  # "axial" | "coronal" | "sagittal"
    max_tilt_degrees: float = 35.0  # how far the slice normal may lean from the orientation's axis
    slice_thickness_mm: tuple[float, float] | None = None
    contrast: str | None = None  # "present" | "absent"
    min_images: int = 1

    def reject_reason(self, series: Sequence[InstanceRef]) -> str | None:
        """None when the series passes, else the first criterion it fails, in words."""
        first = series[0]
        if first.modality.upper() not in self.modalities:
            return f"modality {first.modality or '(none)'} is not {'/'.join(sorted(self.modalities))}"
        image_type = {v.upper() for r in series for v in r.image_type}
        bad = sorted(image_type & self.image_type_exclude)
        if bad:
            return f"ImageType contains {'/'.join(bad)}"
        missing = sorted(self.image_type_require - image_type)
        if missing:
            return f"ImageType lacks {'/'.join(missing)}"
        if self.sop_classes and first.sop_class_uid not in self.sop_classes:
            return f"SOP class {first.sop_class_uid} is not a single-frame image class this model reads"
        if self.body_part_re and first.body_part and not re.search(self.body_part_re, first.body_part, re.IGNORECASE):
            return f"body part {first.body_part} is not a head"
        desc = first.series_description
        if self.description_include_re and not re.search(self.description_include_re, desc):
            return f"description {desc!r} does not match {self.description_include_re!r}"
        if self.description_exclude_re and re.search(self.description_exclude_re, desc):
            return f"description {desc!r} matches excluded pattern {self.description_exclude_re!r}"
        if self.kernel_exclude_re and first.convolution_kernel and re.search(
            self.kernel_exclude_re, first.convolution_kernel
        ):
            return f"kernel {first.convolution_kernel} is a bone/sharp kernel"
        if self.orientation:
            actual = orientation_of(first)
            if actual is None:
                return "no ImageOrientationPatient"
            if actual[0] != self.orientation or actual[1] > self.max_tilt_degrees:
                return f"orientation is {actual[0]} (tilt {actual[1]:.0f} deg), not {self.orientation}"
        if self.slice_thickness_mm and first.slice_thickness is not None:
            lo, hi = self.slice_thickness_mm
            if not lo <= first.slice_thickness <= hi:
                return f"slice thickness {first.slice_thickness:g} mm outside {lo:g}-{hi:g} mm"
        if self.contrast:
            has = has_contrast(first)
            if self.contrast == "present" and not has:
                return "no contrast agent recorded (ContrastBolusAgent empty, description says nothing)"
            if self.contrast == "absent" and has:
                return f"contrast given ({first.contrast_agent or desc!r})"
        if len(series) < self.min_images:
            return f"{len(series)} image(s), fewer than {self.min_images}"
        return None


ICH_CT_RULE = SeriesRule(
    name="non-contrast axial head CT",
    modalities=frozenset({"CT"}),
    sop_classes=frozenset({CT_IMAGE_STORAGE}),
    body_part_re=r"head|brain|skull|cranium|neuro",
    description_exclude_re=r"(?i)(scout|topo|locali[sz]er|surview|dose|bone|\bcta\b|angio|perfusion|mip)",
    image_type_exclude=frozenset({"LOCALIZER", "SECONDARY", "SCREEN SAVE", "DOSE INFO"}),
    kernel_exclude_re=BONE_KERNEL_RE,
    orientation="axial",
    slice_thickness_mm=(0.5, 10.0),
    contrast="absent",
    min_images=8,
)

_T1_INCLUDE = r"(?i)(t1|mprage|spgr|bravo|vibe|tfe|fspgr)"
_T1_EXCLUDE = r"(?i)(t2|flair|swi|dwi|adc|trace|perf|pre\b|pre[-_ ]?contrast|native|nativ|localizer|scout|survey)"

SIH_T1C_AXIAL_RULE = SeriesRule(
    name="post-contrast T1 brain MR, axial",
    modalities=frozenset({"MR"}),
    sop_classes=frozenset({MR_IMAGE_STORAGE}),
    body_part_re=r"head|brain|skull|neuro",
    description_include_re=_T1_INCLUDE,
    description_exclude_re=_T1_EXCLUDE,
    image_type_exclude=frozenset({"LOCALIZER", "SECONDARY", "DERIVED"}),
    orientation="axial",
    slice_thickness_mm=(0.4, 7.0),
    contrast="present",
    min_images=5,
)

SIH_T1C_CORONAL_RULE = SeriesRule(**{**SIH_T1C_AXIAL_RULE.__dict__, "name": "post-contrast T1 brain MR, coronal",
                                     "orientation": "coronal"})


def has_contrast(ref: InstanceRef) -> bool:
    agent = ref.contrast_agent.strip().upper()
    if agent and agent not in ("NONE", "NO", "N/A"):
        return True
    if re.search(NO_CONTRAST_DESCRIPTION_RE, ref.series_description):
        return False
    return bool(re.search(CONTRAST_DESCRIPTION_RE, ref.series_description))


def normal_of(ref: InstanceRef) -> tuple[float, float, float] | None:
    o = ref.image_orientation
    if not o or len(o) != 6:
        return None
    r, c = o[:3], o[3:]
    n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    norm = math.sqrt(sum(v * v for v in n))
    if norm < 1e-6:
        return None
    return (n[0] / norm, n[1] / norm, n[2] / norm)


def orientation_of(ref: InstanceRef) -> tuple[str, float] | None:
    """(axial|coronal|sagittal, tilt in degrees) from the slice normal (x: sagittal, y: coronal, z: axial)."""
    n = normal_of(ref)
    if n is None:
        return None
    axis = max(range(3), key=lambda i: abs(n[i]))
    tilt = math.degrees(math.acos(min(1.0, abs(n[axis]))))
    return ("sagittal", "coronal", "axial")[axis], tilt


def slice_position(ref: InstanceRef) -> float:
    """Position along the slice normal (mm); falls back to InstanceNumber when geometry is missing."""
    n = normal_of(ref)
    if n is not None and ref.image_position and len(ref.image_position) == 3:
        return sum(a * b for a, b in zip(n, ref.image_position, strict=True))
    return float(ref.instance_number or 0)


def group_series(instances: Sequence[InstanceRef]) -> dict[str, list[InstanceRef]]:
    groups: dict[str, list[InstanceRef]] = defaultdict(list)
    for ref in instances:
        groups[ref.series_uid].append(ref)
    return dict(groups)


def sort_slices(series: Sequence[InstanceRef]) -> list[InstanceRef]:
    """Slices in order along the normal (for axial: feet to head), duplicate positions dropped."""
    seen: set[float] = set()
    out = []
    for ref in sorted(series, key=lambda r: (slice_position(r), r.instance_number or 0)):
        key = round(slice_position(ref), 3)
        if key in seen and normal_of(ref) is not None:
            continue
        seen.add(key)
        out.append(ref)
    return out


def _label(series: Sequence[InstanceRef]) -> str:
    first = series[0]
    number = first.series_number if first.series_number is not None else "?"
    return f"series {number} {first.series_description!r} ({first.modality}, {len(series)} images)"


def select_series(instances: Sequence[InstanceRef], rule: SeriesRule) -> list[InstanceRef]:
    """The best series passing `rule`, its slices sorted; ties: most slices, then soft kernel, then lowest number."""
    if not instances:
        raise SelectionError(f"no {rule.name} series: the study has no instances")
    candidates: list[list[InstanceRef]] = []
    reasons: list[str] = []
    for series in group_series(instances).values():
        reason = rule.reject_reason(series)
        if reason is None:
            candidates.append(series)
        else:
            reasons.append(f"{_label(series)}: {reason}")
    if not candidates:
        raise SelectionError(f"no {rule.name} series in the study; " + "; ".join(sorted(reasons)))

    def rank(series: list[InstanceRef]) -> tuple[int, int, int]:
        kernel = series[0].convolution_kernel.upper()
        soft = 1 if re.search(r"(H[1-4]\d|HR[1-4]\d|BR[1-4]\d|J[1-4]\d|SOFT|STANDARD|STND|BRAIN|FC[0-2]\d)", kernel) else 0
        number = series[0].series_number if series[0].series_number is not None else 1 << 30
        return (len(series), soft, -number)

    best = max(candidates, key=rank)
    log.debug("series selected", extra={"rule": rule.name, "series_uid": best[0].series_uid, "n": len(best)})
    return sort_slices(best)


# Fractions of the series' extent along its normal at which the SIH images are read (docs/models.md):
# axial: 0.30 of the cranio-caudal extent from the inferior end (level of the pons / prepontine cistern);
# coronal 1: 0.45 of the antero-posterior extent from the anterior end (pituitary / midbrain / mamillary bodies);
# coronal 2: 0.70 from the anterior end (posterior fossa: cerebellum, transverse sinuses).
SIH_AXIAL_FRACTION = 0.30
SIH_CORONAL1_FRACTION = 0.45
SIH_CORONAL2_FRACTION = 0.70


@dataclass(frozen=True)
class SihImages:
    axial: InstanceRef
    coronal1: InstanceRef
    coronal2: InstanceRef

    def by_role(self) -> dict[str, InstanceRef]:
        return {"axial": self.axial, "coronal1": self.coronal1, "coronal2": self.coronal2}


def image_at_fraction(slices: Sequence[InstanceRef], fraction: float) -> InstanceRef:
    """The slice nearest `fraction` of the extent from the first to the last slice position."""
    lo, hi = slice_position(slices[0]), slice_position(slices[-1])
    target = lo + fraction * (hi - lo)
    return min(slices, key=lambda r: abs(slice_position(r) - target))


def select_sih_images(instances: Sequence[InstanceRef]) -> SihImages:
    """One axial and two coronal post-contrast T1 images (see the fractions above).

    Axial slices sort inferior to superior (LPS +z is superior); coronal slices sort anterior to
    posterior (LPS +y is posterior), whatever order the scanner stored them in.
    """
    axial = select_series(instances, SIH_T1C_AXIAL_RULE)
    coronal = select_series(instances, SIH_T1C_CORONAL_RULE)
    axial = _along_axis(axial, axis=2)
    coronal = _along_axis(coronal, axis=1)
    return SihImages(
        axial=image_at_fraction(axial, SIH_AXIAL_FRACTION),
        coronal1=image_at_fraction(coronal, SIH_CORONAL1_FRACTION),
        coronal2=image_at_fraction(coronal, SIH_CORONAL2_FRACTION),
    )


def _along_axis(slices: list[InstanceRef], axis: int) -> list[InstanceRef]:
    """Sort by the patient-coordinate `axis` of ImagePositionPatient (ascending), when present."""
    if all(r.image_position and len(r.image_position) == 3 for r in slices):
        return sorted(slices, key=lambda r: r.image_position[axis])  # type: ignore[index]
    return slices
