"""Series and image selection on indexed headers only (`InstanceRef`), never on pixels.

The rules are data (`ml/rules.py`): each model's manifest declares them under `"selection"` and a site
overrides their keys in `config.toml`; the constants below are the defaults for a manifest that has none
(and what `train` writes into a new one). `reject_reason(rule, series)` passes a series or names the first
criterion it fails; `select_series` returns the best passing series, ranked by closeness to the rule's
preferred slice thickness, then soft kernel, then most slices, or raises `SelectionError` naming every
series and why it was rejected, so a study that nothing suits gets a readable "not analysed" reason.

Rules shipped here:
- `ICH_CT_RULE`: one non-contrast axial head CT series (no scouts, bone kernels, dose reports, 3D/MIP).
- `SIH_T1C_AXIAL_RULE` / `SIH_T1C_CORONAL_RULE`: post-contrast T1 brain MR, axial and coronal.
`select_sih_images` then picks one axial and two coronal images (see docs/models.md, "Selection").
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dicom_node.errors import SelectionError
from dicom_node.ml.analysis import InstanceRef
from dicom_node.ml.rules import Contrast, Orientation, SeriesRule

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

# Descriptions are matched with "_" read as a space (`description_text`), so \b separates t1_mprage_Gd.
# "Without contrast" wins over "with": CT HEAD WO CONTRAST, HEAD NO CONTRAST, HEAD C-, T1 PRE, NATIV, SIN CONTRASTE.
NO_CONTRAST_DESCRIPTION_RE = (
    r"(?i)(\bnon[- ]?(contrast|con|enh\w*|ce)\b|\bnoncon\w*|\bunenhanced\b|\bwithout\b|\bw/o\b|\bwo\b"
    r"|\bno[- ]?(contrast|con|iv|gd|gad\w*)\b|\bncc?t?\b|\bnativ\w*|\bplain\b|\bpre\b"
    r"|\bpre[- ]?(contrast|con|gd|gad\w*|c)\b|\bc-(?![a-z0-9])|\b(sin|ohne|sans|senza)\b)"
)
# Post-contrast: POST (not post fossa / post-op), +C, C+, GD, GAD, gadolinium, CE, KM, contrast, agent names.
CONTRAST_DESCRIPTION_RE = (
    r"(?i)(\bpost(?:[- ]?(?:contrast|con|gd|gad\w*|c))?\b(?![- ]?(?:fossa|op\b|operative|surg))"
    r"|\+\s?(c|gd|gad\w*|contrast)\b|(?<![a-z0-9])c\s?\+|\bgd\b|\bgad\b|gado\w*|gadolin"
    r"|contrast|kontrast|\bce\b|\bkm\b|gadovist|dotarem|magnevist|multihance|prohance|clariscan"
    r"|omnipaque|visipaque|iomeron|ultravist|isovue)"
)
NO_AGENT = frozenset({"", "NONE", "NO", "N/A", "NA", "-", "0", "NIL"})
SOFT_KERNEL_RE = r"(?i)(H[1-4]\d|HR[1-4]\d|BR[1-4]\d|J[1-4]\d|SOFT|STANDARD|STND|BRAIN|FC[0-2]\d|^UB$|^[BC]$)"

ICH_CT_RULE = SeriesRule(
    label="non-contrast axial head CT",
    modalities=("CT",),
    sop_classes=(CT_IMAGE_STORAGE,),
    body_part=r"head|brain|skull|cranium|neuro",
    description_exclude=(
        r"scout|topo|scano|locali[sz]er|surview|survey|\bloc\b",
        r"dose (report|info|record|summary|check)|^dose$|patient protocol",
        r"bone",
        r"\bcta\b|angio",
        r"perfusion|\bperf\b",
        r"\b(mip|minip|maxip)\b",
        r"\bvrt?\b|volume render|\b3d (recon|vr|vrt|volume|render)|\bssd\b",  # not "AIDR 3D" (Canon recon)
    ),
    image_type_exclude=("LOCALIZER", "SECONDARY", "SCREEN SAVE", "DOSE INFO", "MPR", "REFORMATTED",
                        "PROJECTION IMAGE", "VOLUME RENDER", "MIP"),
    # sharp/bone kernels: Siemens H6x-H9x/Hr6x+/Br6x/J70+, GE BONE/BONEPLUS/EDGE/LUNG, Philips D/E/YC/YD, Canon FC3x/FC8x
    kernel_exclude=(r"\bH[6-9]\d", r"\bHr[6-9]\d", r"\bBr6\d", r"\bJ[7-9]\d", r"bone|edge|lung|sharp", r"\bFC[38]\d",
                    r"^Y[CD]$", r"^[DE]$"),
    orientation=Orientation.AXIAL,
    slice_thickness_mm=(0.5, 10.0),
    preferred_thickness_mm=5.0,
    contrast=Contrast.ABSENT,
    min_images=8,
)

SIH_T1C_AXIAL_RULE = SeriesRule(
    label="post-contrast T1 brain MR, axial",
    modalities=("MR",),
    sop_classes=(MR_IMAGE_STORAGE,),
    body_part=r"head|brain|skull|neuro",
    description_include=(r"t1", r"mprage|spgr|bravo|vibe|tfe|fspgr"),
    description_exclude=(
        r"t2",
        r"^(?!.*t1).*flair",  # T2 FLAIR; GE's T1 FLAIR is a T1
        r"\bswi|\bswan\b",
        r"\bdwi\b|\badc\b|trace|diffusion|\bdti\b",
        r"perf|\bdsc\b|\bdce\b",
        r"\bpre\b|pre ?contrast|\bnativ",
        r"locali[sz]er|scout|survey|\bloc\b|3 ?plane",
        r"\bsub\b|subtract",
    ),
    image_type_exclude=("LOCALIZER", "SECONDARY", "MPR", "REFORMATTED", "PROJECTION IMAGE", "MIP", "SUB"),
    orientation=Orientation.AXIAL,
    slice_thickness_mm=(0.4, 7.0),
    preferred_thickness_mm=5.0,
    contrast=Contrast.PRESENT,
    min_images=5,
)

SIH_T1C_CORONAL_RULE = SIH_T1C_AXIAL_RULE.replace(label="post-contrast T1 brain MR, coronal",
                                                  orientation=Orientation.CORONAL)

# The rules each task's pipeline reads, by name: a manifest's "selection" has exactly these keys.
DEFAULT_RULES: dict[str, dict[str, SeriesRule]] = {
    "ich-ct": {"series": ICH_CT_RULE},
    "sih-mr": {"axial": SIH_T1C_AXIAL_RULE, "coronal": SIH_T1C_CORONAL_RULE},
}


def default_selection(task: str) -> dict[str, dict[str, object]]:
    """A manifest's "selection" object for a task's default rules (what `train` writes)."""
    return {name: rule.to_json() for name, rule in DEFAULT_RULES[task].items()}


def description_text(description: str) -> str:
    """A SeriesDescription as the rules read it: underscores as spaces (t1_mprage_tra_Gd -> t1 mprage tra Gd)."""
    return description.replace("_", " ")


def _first_match(patterns: Iterable[str], text: str) -> str | None:
    return next((p for p in patterns if re.search(p, text, re.IGNORECASE)), None)


def reject_reason(rule: SeriesRule, series: Sequence[InstanceRef]) -> str | None:
    """None when the series passes `rule`, else the first criterion it fails, in words."""
    first = series[0]
    if first.modality.upper() not in rule.modalities:
        return f"modality {first.modality or '(none)'} is not {'/'.join(sorted(rule.modalities))}"
    image_type = {v.strip().upper() for r in series for v in r.image_type}
    bad = sorted(image_type & set(rule.image_type_exclude))
    if bad:
        return f"ImageType contains {'/'.join(bad)}"
    missing = sorted(set(rule.image_type_include) - image_type)
    if missing:
        return f"ImageType lacks {'/'.join(missing)}"
    if rule.sop_classes and first.sop_class_uid not in rule.sop_classes:
        return f"SOP class {first.sop_class_uid} is not a single-frame image class this model reads"
    if rule.body_part and first.body_part and not re.search(rule.body_part, first.body_part, re.IGNORECASE):
        return f"body part {first.body_part} does not match {rule.body_part!r}"
    desc = description_text(first.series_description)
    if rule.description_include and _first_match(rule.description_include, desc) is None:
        return f"description {first.series_description!r} matches none of {list(rule.description_include)!r}"
    hit = _first_match(rule.description_exclude, desc)
    if hit is not None:
        return f"description {first.series_description!r} matches excluded pattern {hit!r}"
    if first.convolution_kernel and _first_match(rule.kernel_exclude, first.convolution_kernel) is not None:
        return f"kernel {first.convolution_kernel} is a bone/sharp kernel"
    if rule.orientation != Orientation.ANY:
        actual = orientation_of(first)
        if actual is None:
            return "no ImageOrientationPatient"
        if actual[0] != rule.orientation.value or actual[1] > rule.max_tilt_degrees:
            return f"orientation is {actual[0]} (tilt {actual[1]:.0f} deg), not {rule.orientation.value}"
    if rule.slice_thickness_mm and first.slice_thickness is not None:
        lo, hi = rule.slice_thickness_mm
        if not lo <= first.slice_thickness <= hi:
            return f"slice thickness {first.slice_thickness:g} mm outside {lo:g}-{hi:g} mm"
    if rule.contrast != Contrast.ANY:
        has = has_contrast(first)
        if rule.contrast == Contrast.PRESENT and not has:
            return "no contrast agent recorded (ContrastBolusAgent empty, description says nothing)"
        if rule.contrast == Contrast.ABSENT and has:
            return f"contrast given ({first.contrast_agent or first.series_description!r})"
    if len(series) < rule.min_images:
        return f"{len(series)} image(s), fewer than {rule.min_images}"
    return None


def has_contrast(ref: InstanceRef) -> bool:
    """ContrastBolusAgent when it names an agent; else the description (a negation wins)."""
    if ref.contrast_agent.strip().upper() not in NO_AGENT:
        return True
    desc = description_text(ref.series_description)
    if re.search(NO_CONTRAST_DESCRIPTION_RE, desc):
        return False
    return bool(re.search(CONTRAST_DESCRIPTION_RE, desc))


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


def rank(rule: SeriesRule, series: Sequence[InstanceRef]) -> tuple[float, int, int, int]:
    """Higher is better: closest to the preferred thickness, then soft kernel, most slices, lowest number."""
    first = series[0]
    closeness = 0.0
    if rule.preferred_thickness_mm is not None:
        t = first.slice_thickness
        closeness = -abs(t - rule.preferred_thickness_mm) if t is not None else -math.inf
    soft = 1 if re.search(SOFT_KERNEL_RE, first.convolution_kernel) else 0
    number = first.series_number if first.series_number is not None else 1 << 30
    return (round(closeness, 3), soft, len(series), -number)


def select_series(instances: Sequence[InstanceRef], rule: SeriesRule) -> list[InstanceRef]:
    """The best series passing `rule` (see `rank`), its slices sorted."""
    if not instances:
        raise SelectionError(f"no {rule.label} series: the study has no instances")
    candidates: list[list[InstanceRef]] = []
    reasons: list[str] = []
    for series in group_series(instances).values():
        reason = reject_reason(rule, series)
        if reason is None:
            candidates.append(series)
        else:
            reasons.append(f"{_label(series)}: {reason}")
    if not candidates:
        raise SelectionError(f"no {rule.label} series in the study; " + "; ".join(sorted(reasons)))
    best = max(candidates, key=lambda series: rank(rule, series))
    log.debug("series selected", extra={"rule": rule.label, "series_uid": best[0].series_uid, "n": len(best)})
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


def select_sih_images(
    instances: Sequence[InstanceRef],
    axial_rule: SeriesRule = SIH_T1C_AXIAL_RULE,
    coronal_rule: SeriesRule = SIH_T1C_CORONAL_RULE,
) -> SihImages:
    """One axial and two coronal post-contrast T1 images (see the fractions above).

    Axial slices sort inferior to superior (LPS +z is superior); coronal slices sort anterior to
    posterior (LPS +y is posterior), whatever order the scanner stored them in.
    """
    axial = select_series(instances, axial_rule)
    coronal = select_series(instances, coronal_rule)
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
