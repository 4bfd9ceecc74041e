"""Microbleed training and evaluation data: a folder of DICOM studies, `labels.csv` and the bleed masks.

- `labels.csv`: `StudyInstanceUID,svd_class` (`none|asvd|caa|cadasil`; other columns are ignored);
- bleed masks: DICOM SEG files anywhere under the folder (the generator writes `ground-truth/*-seg.dcm`), one
  segment per bleed over the SWI series, matched to a study by its Study Instance UID;
- optional `bleeds.csv` (`StudyInstanceUID,bleed,...,location`): each bleed's lobar/deep location (else
  read from a segment label such as "Microbleed 3 (lobar)"), which fits the location threshold.

The SWI series is chosen by the node's rules (`microbleeds.select_swi`) and read by the node's reader, and
the FLAIR white-matter extent is measured as the worker measures it (`wmh.measure_flair`), so a model trains
on what it will see.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dicom_node.errors import PixelDataError, SelectionError
from dicom_node.ml.annotations import annotation_segs
from dicom_node.ml.datasets import by_study, scan_dicom
from dicom_node.ml.microbleeds import (
    CLASSES,
    DEFAULT_RULES,
    SwiVolume,
    normalise,
    read_swi_volume,
    select_swi,
)
from dicom_node.ml.rules import SeriesRule
from dicom_node.ml.wmh import NO_FLAIR, FlairExtent, measure_flair

log = logging.getLogger(__name__)


@dataclass
class CmbStudy:
    study_uid: str
    volume: SwiVolume  # pixels dropped after normalisation (`norm` holds them)
    norm: np.ndarray  # (slices, rows, cols) in [0, 1]; float16 for training, float32 (as served) for evaluation
    bleeds: list[dict[int, np.ndarray]]  # ground truth: per bleed, slice index -> bool mask
    locations: list[str]  # per bleed: "lobar" | "deep" | "" (unknown)
    svd_class: int  # index into CLASSES
    which: str  # "swi" | "mip"
    flair: FlairExtent = field(default=NO_FLAIR)


def read_class_labels(path: Path) -> dict[str, int]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and "svd_class" not in rows[0]:
        raise SelectionError(f"{path}: needs the columns StudyInstanceUID,svd_class")
    out = {}
    for r in rows:
        if r["svd_class"] not in CLASSES:
            raise SelectionError(f"{path}: svd_class {r['svd_class']!r} is not one of {', '.join(CLASSES)}")
        out[r["StudyInstanceUID"]] = CLASSES.index(r["svd_class"])
    return out


def _locations(path: Path) -> dict[tuple[str, int], str]:
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        return {(r["StudyInstanceUID"], int(r["bleed"])): r.get("location", "") for r in csv.DictReader(fh)}


def load_cmb(data_dir: Path, percentiles: tuple[float, float] = (1.0, 99.0), progress: bool = True,
             rules: Mapping[str, SeriesRule] | None = None, dtype: type = np.float16) -> list[CmbStudy]:
    """Every labelled study with an SWI series (and its FLAIR extent, when `rules` hold a "flair" rule);
    studies without an SWI series are skipped (logged). `dtype` of the normalised series: float16 halves a
    training set's memory; evaluation keeps float32, what the worker computes, so evaluated equals served."""
    rules = DEFAULT_RULES if rules is None else rules
    from dicom_node.synth.swi_study import read_seg_bleeds

    data_dir = Path(data_dir)
    labels = read_class_labels(data_dir / "labels.csv")
    locations = _locations(data_dir / "bleeds.csv")
    refs = scan_dicom(data_dir)
    segs = {r.study_uid: r.path for r in annotation_segs(refs)}
    studies = by_study([r for r in refs if r.modality.upper() != "SEG"])
    out: list[CmbStudy] = []
    items = sorted(studies.items())
    for study_uid, study_refs in tqdm(items, desc="reading SWI studies", unit="study", disable=not progress):
        if study_uid not in labels:
            continue
        try:
            slices, which = select_swi(study_refs, rules)
            volume = read_swi_volume(slices)
        except (SelectionError, PixelDataError) as exc:
            log.warning("study skipped", extra={"study_uid": study_uid, "reason": str(exc)})
            continue
        index = {r.sop_instance_uid: i for i, r in enumerate(slices)}
        bleeds: list[dict[int, np.ndarray]] = []
        where: list[str] = []
        if study_uid in segs:
            for number, by_sop in sorted(read_seg_bleeds(Path(segs[study_uid])).items()):
                voxels = {index[sop]: m for sop, m in by_sop.items() if sop in index}
                if voxels:
                    bleeds.append(voxels)
                    where.append(locations.get((study_uid, number), "") or _label_location(segs[study_uid], number))
        norm: np.ndarray = normalise(volume.pixels, *percentiles).astype(dtype)
        volume.pixels = np.zeros((0,), np.float32)
        out.append(CmbStudy(study_uid, volume, norm, bleeds, where, labels[study_uid], which,
                            measure_flair(study_refs, rules)))
    if not out:
        raise SelectionError(f"no labelled study with an SWI series under {data_dir}")
    log.info("CMB data loaded", extra={"studies": len(out), "bleeds": sum(len(s.bleeds) for s in out)})
    return out


def _label_location(seg_path: str, number: int) -> str:
    import pydicom

    ds = pydicom.dcmread(seg_path, stop_before_pixels=True)
    for item in ds.SegmentSequence:
        label = str(item.get("SegmentLabel", ""))
        if f" {number} " in f" {label} " or label.startswith(f"Microbleed {number} "):
            return "deep" if "deep" in label.lower() else "lobar" if "lobar" in label.lower() else ""
    return ""
