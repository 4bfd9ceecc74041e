"""White-matter hyperintensity extent on FLAIR: one number per study for the microbleed classifier.

Confluent white-matter change on FLAIR is what sets CADASIL apart from arteriolosclerosis and amyloid
angiopathy when the bleeds alone are mixed (issue 11; seed paper 003 reads SWI only and confuses the same
classes). The study's FLAIR series is chosen by the rule `FLAIR_RULE` (manifest `selection.flair`), read with
the node's series reader, and measured:

1. intensities scaled to the series' 1st-99th percentiles of its non-zero voxels (as the SWI);
2. **tissue**: voxels at least `MIN_DEPTH_MM` below the head's surface (scalp fat and skin, bright on
   FLAIR, are shallower) and brighter than `CSF_MAX` of the scaled range (dark fluid is not tissue);
3. **hyperintense**: tissue brighter than `HYPER_RATIO` x the tissue median, kept where a 3x3 opening
   keeps it (a confluent lesion survives, noise and single bright pixels do not);
4. extent = hyperintense / tissue voxels.

Depth below the head's surface is the SWI's own measure (`microbleeds.head_depth`). A study without a
FLAIR series, or whose FLAIR cannot be read or measured (no pixel spacing, too little tissue), is classified
from its bleeds alone (`FlairExtent.present` False); the reason is kept for the report.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dicom_node.errors import PixelDataError, SelectionError
from dicom_node.ml.analysis import InstanceRef
from dicom_node.ml.rules import Orientation, SeriesRule
from dicom_node.ml.selection import MR_IMAGE_STORAGE, select_series

if TYPE_CHECKING:
    from dicom_node.ml.microbleeds import SwiVolume

log = logging.getLogger(__name__)

MIN_DEPTH_MM = 12.0
CSF_MAX = 0.15
HYPER_RATIO = 1.4
MIN_TISSUE_VOXELS = 100

FLAIR_RULE = SeriesRule(
    label="FLAIR series",
    modalities=("MR",),
    sop_classes=(MR_IMAGE_STORAGE,),
    body_part=r"head|brain|skull|neuro",
    description_include=(r"flair", r"dark.?fluid", r"\btirm\b", r"\bt2.?fl(air)?\b"),
    description_exclude=(r"locali[sz]er|scout|survey", r"\bsub(traction)?\b", r"\bmip\b"),
    image_type_exclude=("LOCALIZER", "PROJECTION IMAGE", "MIP", "SUBTRACTION"),
    orientation=Orientation.ANY,
    slice_thickness_mm=(0.5, 8.0),
    min_images=4,
)


@dataclass(frozen=True)
class FlairExtent:
    """The FLAIR measurement of one study, or why there is none."""

    present: bool
    extent: float = 0.0  # hyperintense share of the tissue (0-1); 0 when not present
    series: Sequence[InstanceRef] = ()
    reason: str = ""

    def bag_features(self) -> list[float]:
        """(extent in tenths, at most 5; present) as the classifier reads them: on the scale of its other bag
        features (log count, deep share), so the step from a few percent to a confluent fifth is learnt."""
        return [min(5.0, 10.0 * self.extent) if self.present else 0.0, 1.0 if self.present else 0.0]

    def describe(self) -> str:
        if not self.present:
            return self.reason
        first = self.series[0]
        return (f"FLAIR series {first.series_number} {first.series_description!r}: white-matter hyperintensity "
                f"{self.extent:.1%} of brain tissue")


NO_FLAIR = FlairExtent(False)  # the classifier does not read FLAIR: nothing to report


def wmh_extent(volume: SwiVolume) -> float | None:
    """Hyperintense share of the brain tissue in a FLAIR volume; None when it holds too little tissue to say."""
    from scipy import ndimage

    from dicom_node.ml.microbleeds import head_depth, normalise

    norm = normalise(volume.pixels)
    tissue = (head_depth(norm, volume) >= MIN_DEPTH_MM) & (norm > CSF_MAX)
    if tissue.sum() < MIN_TISSUE_VOXELS:
        return None
    median = float(np.median(norm[tissue]))
    hyper = tissue & (norm >= HYPER_RATIO * median)
    hyper = np.stack([ndimage.binary_opening(h, structure=np.ones((3, 3), bool)) for h in hyper])
    return float(hyper.sum() / tissue.sum())


def measure_flair(instances: Sequence[InstanceRef], rules: Mapping[str, SeriesRule]) -> FlairExtent:
    """The study's FLAIR extent under the rule `rules["flair"]`; not present (with the reason) when the rules
    hold no FLAIR rule, the study has no FLAIR series, or its pixels cannot be read."""
    from dicom_node.ml.microbleeds import read_swi_volume

    rule = rules.get("flair")
    if rule is None:
        return NO_FLAIR
    try:
        series = select_series(instances, rule)
        volume = read_swi_volume(series)
    except SelectionError:
        return FlairExtent(False, reason="no FLAIR series: class from the microbleeds alone")
    except PixelDataError as exc:
        log.warning("FLAIR series not read", extra={"reason": str(exc)})
        return FlairExtent(False, reason="FLAIR series unreadable: class from the microbleeds alone")
    spacing = (volume.slice_spacing, volume.row_spacing, volume.col_spacing)
    extent = wmh_extent(volume) if min(spacing) > 0 else None
    if extent is None:  # a depth needs the spacing; a share needs tissue
        log.warning("FLAIR series not measured", extra={"spacing_mm": spacing})
        return FlairExtent(False, reason="FLAIR series not measurable: class from the microbleeds alone")
    return FlairExtent(True, round(extent, 4), series)
