"""Strong annotations for ICH training: lesion masks per slice from DICOM SEG files or a boxes CSV.

    seg_masks(path)          # one SEG -> (StudyInstanceUID, {label: {source SOPInstanceUID: bool mask}})
    box_masks(path)          # boxes.csv -> {SOPInstanceUID: {label: [(row_min, col_min, row_max, col_max)]}}

A SEG's segments are matched to labels by their Segmented Property Type (the codes of `outputs.codes`),
so a site's own annotations exported as SEG from a viewer train the same way as the generator's. Boxes
(`StudyInstanceUID,SOPInstanceUID,label,row_min,col_min,row_max,col_max[,pixels]`, source pixels,
inclusive) are filled rectangles: coarser, but enough to teach where a finding is.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

BOXES_CSV = "boxes.csv"


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
