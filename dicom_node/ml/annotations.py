"""Strong annotations for ICH training: lesion masks per slice from DICOM SEG files or a boxes CSV.

    annotation_segs(refs)    # the SEG files among refs that may be ground truth (not this node's results)
    seg_masks(path)          # one SEG -> (StudyInstanceUID, {label: {source SOPInstanceUID: bool mask}})
    box_masks(path)          # boxes.csv -> {SOPInstanceUID: {label: [(row_min, col_min, row_max, col_max)]}}

A SEG's segments are matched to labels by their Segmented Property Type (the codes of `outputs.codes`),
so a site's own annotations exported as SEG from a viewer train the same way as the generator's. Boxes
(`StudyInstanceUID,SOPInstanceUID,label,row_min,col_min,row_max,col_max[,pixels]`, source pixels,
inclusive) are filled rectangles: coarser, but enough to teach where a finding is.

The node's own AI SEGs use the same codes. A study exported from the PACS holds them beside the site's
annotations, so `annotation_segs` leaves them out: a model must never be trained or scored on its own
output. An AI result is known by its equipment names (`identity.written_by_analysis`) or, whoever made it,
by IHE AIR's Contributing Equipment item with the purpose "Processing Algorithm" (which the node's SEGs,
SRs and overlays carry too) on a SEG whose segments are all AUTOMATIC: that one survives a de-identifier
that blanks the names, and it also keeps out another vendor's AI SEGs that follow IHE AIR. A SEG a person
corrected (SEMIAUTOMATIC or MANUAL segments) stays an annotation.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dicom_node.identity import written_by_analysis
from dicom_node.ml.analysis import InstanceRef

if TYPE_CHECKING:
    import pydicom

BOXES_CSV = "boxes.csv"
log = logging.getLogger(__name__)


def annotation_segs(refs: Iterable[InstanceRef]) -> list[InstanceRef]:
    """The SEG files among `refs` that may be ground truth: every SEG but the results this node's analysis
    wrote (`identity.written_by_analysis`); how many were left out is one log line."""
    import pydicom

    kept: list[InstanceRef] = []
    results = 0
    for ref in refs:
        if ref.modality.upper() != "SEG":
            continue
        header = pydicom.dcmread(ref.path, stop_before_pixels=True,
                                 specific_tags=["Manufacturer", "ManufacturerModelName", "ContributingEquipmentSequence",
                                               "SegmentSequence"])
        if _ai_result(header):
            results += 1
        else:
            kept.append(ref)
    if results:
        log.warning("AI result SEGs left out of the annotations: a model is not trained or scored on its own "
                    "output", extra={"seg_files": results})
    return kept


def _ai_result(header: pydicom.Dataset) -> bool:
    """Whether a SEG header says an algorithm made it: the node's analysis, or an IHE AIR result whose
    segments are all AUTOMATIC (a person's correction of an AI SEG keeps the algorithm's Contributing
    Equipment item but its segments become SEMIAUTOMATIC or MANUAL: an annotation)."""
    from dicom_node.outputs.codes import PROCESSING_ALGORITHM

    if written_by_analysis(str(header.get("Manufacturer", "")), str(header.get("ManufacturerModelName", ""))):
        return True
    code_of = (PROCESSING_ALGORITHM.value, PROCESSING_ALGORITHM.scheme_designator)
    by_algorithm = any(
        (str(code.get("CodeValue", "")), str(code.get("CodingSchemeDesignator", ""))) == code_of
        or str(code.get("CodeMeaning", "")).strip().lower() == PROCESSING_ALGORITHM.meaning.lower()
        for item in header.get("ContributingEquipmentSequence", [])
        for code in item.get("PurposeOfReferenceCodeSequence", []))
    segments = header.get("SegmentSequence", [])
    return by_algorithm and bool(segments) and all(
        str(segment.get("SegmentAlgorithmType", "")).upper() == "AUTOMATIC" for segment in segments)


def seg_masks(path: str | Path) -> tuple[str, dict[str, dict[str, np.ndarray]]]:
    import highdicom as hd

    from dicom_node.outputs.codes import FINDINGS

    seg = hd.seg.segread(str(path))
    by_code = {(c.code.value, c.code.scheme_designator): label for label, c in FINDINGS.items()}
    sources = [str(uid) for _, _, uid in seg.get_source_image_uids()]
    out: dict[str, dict[str, np.ndarray]] = {}
    for number in seg.segment_numbers:
        prop = seg.get_segment_description(number).segmented_property_type
        label = by_code.get((prop.value, prop.scheme_designator))
        if label is None:
            continue
        for sop in sources:
            try:
                pixels = seg.get_pixels_by_source_instance(
                    source_sop_instance_uids=[sop], segment_numbers=[number], ignore_spatial_locations=True,
                    assert_missing_frames_are_empty=True)
            except (KeyError, ValueError):
                continue
            m = pixels[0, ..., 0] > 0
            if m.any():
                out.setdefault(label, {})[sop] = m
    return str(seg.StudyInstanceUID), out


def box_masks(path: str | Path) -> dict[str, dict[str, list[tuple[int, int, int, int]]]]:
    out: dict[str, dict[str, list[tuple[int, int, int, int]]]] = defaultdict(lambda: defaultdict(list))
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            out[r["SOPInstanceUID"]][r["label"]].append(
                (int(r["row_min"]), int(r["col_min"]), int(r["row_max"]), int(r["col_max"])))
    return {sop: dict(v) for sop, v in out.items()}


def fill_boxes(boxes: list[tuple[int, int, int, int]], shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    for r0, c0, r1, c1 in boxes:
        m[max(r0, 0) : r1 + 1, max(c0, 0) : c1 + 1] = True
    return m


def sih_annotations(paths: Iterable[str | Path]) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """From SIH annotation SEGs (the generator's, or a site's): the finding's masks by source SOP Instance
    UID (segment "Spontaneous intracranial hypotension"), and each sign's (`codes.SIH_SIGNS`; empty for a
    sign no SEG has a segment for)."""
    from dicom_node.outputs.codes import SIH_SIGNS, sign_label

    finding: dict[str, np.ndarray] = {}
    signs: dict[str, dict[str, np.ndarray]] = {s: {} for s in SIH_SIGNS}
    for path in paths:
        segments = seg_masks(path)[1]
        finding.update(segments.get("sih", {}))
        for s in SIH_SIGNS:
            signs[s].update(segments.get(sign_label(s), {}))
    return finding, signs
