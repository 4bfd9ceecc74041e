"""Where a finding is marked on its key image: one geometry for the SR region and the overlay circle.

A region is kept small and wholly inside the image, because OHIF draws the SR's text box to the right of
the region and does not keep it on screen: a large circle, or one at the edge, pushes the finding's name
and verdict out of view. Without a location (the study-level anchor) the mark sits left of centre.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydicom.dataset import Dataset

from dicom_node.ml.analysis import Finding

SUMMARY_LABEL = "any"  # see verdicts.reconcile

# Where the study-level anchor sits on its image (fractions of columns and rows): left of centre, so
# that OHIF's text box, drawn to the right of the region, stays on the image.
ANCHOR_AT = (0.12, 0.5)
MAX_RADIUS_FRACTION = 0.05  # a region never covers more than this fraction of the image's smaller side


def is_image(ds: Dataset) -> bool:
    return int(ds.get("Rows") or 0) > 0 and int(ds.get("Columns") or 0) > 0


def marker(finding: Finding | None, image: Dataset) -> tuple[tuple[float, float], float]:
    """Centre (column, row) and radius of the circle drawn on `image`, in SCOORD pixel coordinates.

    A finding's region is kept small and wholly inside the image; without a finding (the study-level
    anchor) the circle sits left of centre.
    """
    rows, cols = int(image.Rows), int(image.Columns)
    side = min(rows, cols)
    if finding is None or finding.region_center is None:
        return (cols * ANCHOR_AT[0], rows * ANCHOR_AT[1]), max(2.0, side / 40)
    radius = min(float(finding.region_radius or side / 32), side * MAX_RADIUS_FRACTION)
    radius = max(2.0, radius)
    row, col = (float(v) + 0.5 for v in finding.region_center)  # pixel centre -> SCOORD (0.0 = corner)
    col = min(max(col, radius), cols - radius)
    row = min(max(row, radius), rows - radius)
    return (col, row), radius


def located_findings(findings: Sequence[Finding], sources: Mapping[str, Dataset]) -> list[Finding]:
    """Present findings with a region on a key image we hold: each gets one SR region and one overlay.

    The summary label ("any") is left out when a present subtype is located: its mark would repeat the
    subtype's on the same image (two text boxes on top of each other in OHIF).
    """
    located = [f for f in findings if f.present and f.region_center is not None
               and is_image(sources.get(f.key_sop_instance_uid or "", Dataset()))]
    if any(f.label != SUMMARY_LABEL for f in located):
        located = [f for f in located if f.label != SUMMARY_LABEL]
    return located
