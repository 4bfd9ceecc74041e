"""Strong annotations of generated studies: lesion masks as DICOM SEG, plus per-slice boxes for CT.

    write_ground_truth(out_dir, study, axial_datasets, masks)   # CT -> (SEG path or None, boxes)
    write_mask_seg(path, kind, seed, index, sources, masks)     # any series' masks -> SEG path
    read_ground_truth(seg_path)                                  # -> {label: {SOPInstanceUID: mask}}
    write_boxes_csv(path, studies) / read_boxes_csv(path)

The SEG (one segment per hemorrhage subtype present, frames only on the slices that show it, referencing
the primary axial series) is built by `outputs.seg.build_seg`, the same validated builder as the node's
own SEG output, with the generator as its algorithm. A brain MR with SIH gets one SEG per post-contrast
series (`<folder>-t1_ax_post-seg.dcm`, `<folder>-t1_cor_post-seg.dcm`), one segment "sih": where its
signs are (`phantom_mr.SIGN_TISSUES`). They live in `<out>/ground-truth/`, outside the
study's folder, so sending a study's files never sends its answer. A box is the bounding rectangle of one
subtype's mask on one slice, in source pixels (inclusive): `boxes.csv` has
`StudyInstanceUID,SOPInstanceUID,label,row_min,col_min,row_max,col_max,pixels`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from dicom_node import __version__
from dicom_node.identity import GROUND_TRUTH_ALGORITHM
from dicom_node.synth.dicom_writer import synth_uid, write
from dicom_node.synth.hemorrhage import SUBTYPES

GENERATOR = GROUND_TRUTH_ALGORITHM
SEG_SERIES_NUMBER = 900
SEG_DESCRIPTION = "Ground truth lesion masks (generated)"
GROUND_TRUTH_DIR = "ground-truth"
BOX_FIELDS = ("StudyInstanceUID", "SOPInstanceUID", "label", "row_min", "col_min", "row_max", "col_max", "pixels")


@dataclass(frozen=True)
class Box:
    study_uid: str
    sop_instance_uid: str
    label: str
    row_min: int
    col_min: int
    row_max: int
    col_max: int
    pixels: int

    def contains(self, row: float, col: float, margin: float = 0.0) -> bool:
        return (self.row_min - margin <= row <= self.row_max + margin
                and self.col_min - margin <= col <= self.col_max + margin)


def label_masks(masks: np.ndarray, sop_uids: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """Bit-field masks (slices, rows, cols) -> {subtype: {SOPInstanceUID: bool mask}} (non-empty only)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for k, label in enumerate(SUBTYPES):
        for i, sop in enumerate(sop_uids):
            m = (masks[i] & np.uint8(1 << k)) > 0
            if m.any():
                out.setdefault(label, {})[sop] = m
    return out


def boxes_of(study_uid: str, by_label: dict[str, dict[str, np.ndarray]]) -> list[Box]:
    boxes = []
    for label in SUBTYPES:
        for sop, m in by_label.get(label, {}).items():
            rows, cols = np.nonzero(m)
            boxes.append(Box(study_uid, sop, label, int(rows.min()), int(cols.min()), int(rows.max()),
                             int(cols.max()), int(m.sum())))
    return boxes


def seg_path(out_dir: Path, folder_name: str, role: str = "") -> Path:
    return Path(out_dir) / GROUND_TRUTH_DIR / (f"{folder_name}-{role}-seg.dcm" if role else f"{folder_name}-seg.dcm")


def write_ground_truth(out_dir: Path, folder_name: str, kind: str, seed: int, patient_index: int,
                       axial: Sequence[Dataset], masks: np.ndarray) -> tuple[Path | None, list[Box]]:
    """Write the study's SEG (None for a study without lesions) and return its boxes."""
    sops = [str(ds.SOPInstanceUID) for ds in axial]
    by_label = label_masks(masks, sops)
    if not by_label:
        return None, []
    path = write_mask_seg(seg_path(out_dir, folder_name), kind, seed, patient_index, axial, by_label)
    return path, boxes_of(str(axial[0].StudyInstanceUID), by_label)


def write_mask_seg(path: Path, kind: str, seed: int, patient_index: int, sources: Sequence[Dataset],
                   by_label: dict[str, dict[str, np.ndarray]], role: str = "") -> Path:
    """The generator's masks over `sources` (one series) as a SEG at `path`; `role` tells apart the
    SEGs of one study's series (MR: one per post-contrast series)."""
    from dicom_node.outputs.seg import SegAlgorithm, SegmentMask, build_seg

    tag = f"ground-truth-seg-{role}" if role else "ground-truth-seg"
    seg = build_seg(
        sources, [SegmentMask(label, m) for label, m in by_label.items()],
        series_uid=synth_uid(kind, seed, patient_index, "series", tag),
        sop_uid=synth_uid(kind, seed, patient_index, tag, 0),
        series_number=SEG_SERIES_NUMBER, instance_number=1,
        algorithm=SegAlgorithm(GENERATOR, __version__, None), series_description=SEG_DESCRIPTION)
    return write(seg.dataset, path)


def read_ground_truth(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """A SEG (ours or the generator's) back as {label: {source SOPInstanceUID: bool mask}}."""
    from dicom_node.ml.annotations import seg_masks

    return seg_masks(path)[1]


def write_boxes_csv(path: Path, boxes: Iterable[Box]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(BOX_FIELDS)
        for b in boxes:
            w.writerow([b.study_uid, b.sop_instance_uid, b.label, b.row_min, b.col_min, b.row_max, b.col_max,
                        b.pixels])


def read_boxes_csv(path: Path) -> list[Box]:
    with open(path, newline="") as fh:
        return [Box(r["StudyInstanceUID"], r["SOPInstanceUID"], r["label"], int(r["row_min"]), int(r["col_min"]),
                    int(r["row_max"]), int(r["col_max"]), int(r["pixels"])) for r in csv.DictReader(fh)]
