"""Training/evaluation data: a folder of DICOM files plus a labels CSV, turned into model inputs.

- ICH: `labels.csv` in RSNA 2019 format (`ID,Label`, rows `ID_<SOPInstanceUID>_<label>,0|1`).
- SIH: `labels.csv` with `StudyInstanceUID,sih` (0|1).
Series and images are chosen by the same selection rules as in the node, and preprocessed by the same
functions, so a model is trained on exactly what it will see.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

from dicom_node.analysis import InstanceRef, instance_ref_from_file
from dicom_node.errors import PixelDataError, SelectionError
from dicom_node.ml.manifest import ICH_LABELS, SIH_ROLES, InputSpec
from dicom_node.ml.preprocess import ct_input, mr_input, read_image
from dicom_node.ml.selection import ICH_CT_RULE, select_series, select_sih_images

log = logging.getLogger(__name__)

_SKIP_SUFFIXES = {".csv", ".json", ".png", ".txt", ".md", ".pt"}


def scan_dicom(data_dir: Path) -> list[InstanceRef]:
    """Headers of every readable DICOM file under `data_dir` (other files are skipped)."""
    refs = []
    for path in sorted(Path(data_dir).rglob("*")):
        if not path.is_file() or path.suffix.lower() in _SKIP_SUFFIXES:
            continue
        try:
            refs.append(instance_ref_from_file(str(path)))
        except (InvalidDicomError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # not DICOM, or unreadable: skip, as an export folder may hold anything
            log.debug("skipped non-DICOM file", extra={"path": str(path), "error": str(exc)})
    return refs


def by_study(refs: Iterable[InstanceRef]) -> dict[str, list[InstanceRef]]:
    studies: dict[str, list[InstanceRef]] = defaultdict(list)
    for ref in refs:
        studies[ref.study_uid].append(ref)
    return dict(studies)


def read_rsna_labels(path: Path) -> dict[str, dict[str, int]]:
    """RSNA ICH labels: {SOPInstanceUID: {label: 0|1}}."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            ident, label = row["ID"].rsplit("_", 1)
            sop = ident.removeprefix("ID_")
            out[sop][label] = int(float(row["Label"]))
    return dict(out)


def read_study_labels(path: Path, column: str = "sih") -> dict[str, int]:
    with open(path, newline="") as fh:
        return {row["StudyInstanceUID"]: int(float(row[column])) for row in csv.DictReader(fh)}


@dataclass
class IchData:
    inputs: np.ndarray  # (N, C, S, S) float16
    labels: np.ndarray  # (N, 6) float32, ICH_LABELS order
    study: np.ndarray  # (N,) index into study_uids
    study_uids: list[str]
    sop_uids: list[str]


@dataclass
class SihData:
    inputs: dict[str, np.ndarray]  # role -> (N, 1, S, S) float16
    labels: np.ndarray  # (N,) float32
    study_uids: list[str]


def load_ich(data_dir: Path, spec: InputSpec, labels_csv: Path | None = None) -> IchData:
    labels = read_rsna_labels(labels_csv or Path(data_dir) / "labels.csv")
    studies = by_study(scan_dicom(data_dir))
    # One float16 buffer for every labelled file (its pages are committed only as they are filled):
    # per-slice arrays stacked at the end need twice the memory, and fragment the heap on top.
    bound = sum(ref.sop_instance_uid in labels for refs in studies.values() for ref in refs)
    inputs = np.empty((bound, spec.in_channels, spec.size, spec.size), dtype=np.float16)
    ys, study_idx, sops = [], [], []
    n = 0
    study_uids: list[str] = []
    skipped = 0
    for study_uid, refs in tqdm(sorted(studies.items()), desc="preprocessing CT studies", unit="study"):
        try:
            slices = select_series(refs, ICH_CT_RULE)
            hu = [read_image(r.path) for r in slices]
        except (SelectionError, PixelDataError) as exc:
            skipped += 1
            log.warning("study skipped", extra={"study_uid": study_uid, "reason": str(exc)})
            continue
        for i, ref in enumerate(slices):
            if ref.sop_instance_uid not in labels:
                continue
            x, _ = ct_input(hu, i, spec.size, spec.windows, spec.context_slices)
            inputs[n] = x
            n += 1
            ys.append([labels[ref.sop_instance_uid].get(label, 0) for label in ICH_LABELS])
            study_idx.append(len(study_uids))
            sops.append(ref.sop_instance_uid)
        study_uids.append(study_uid)
    if n == 0:
        raise SelectionError(f"no labelled slices of a usable head CT series under {data_dir} ({skipped} studies skipped)")
    log.info("ICH data loaded", extra={"slices": n, "studies": len(study_uids), "skipped": skipped})
    return IchData(inputs[:n], np.asarray(ys, dtype=np.float32), np.asarray(study_idx), study_uids, sops)


def load_sih(data_dir: Path, spec: InputSpec, labels_csv: Path | None = None) -> SihData:
    labels = read_study_labels(labels_csv or Path(data_dir) / "labels.csv")
    studies = by_study(scan_dicom(data_dir))
    inputs: dict[str, list[np.ndarray]] = {r: [] for r in SIH_ROLES}
    ys, uids = [], []
    low, high = spec.percentiles
    for study_uid, refs in tqdm(sorted(studies.items()), desc="preprocessing MR studies", unit="study"):
        if study_uid not in labels:
            continue
        try:
            images = select_sih_images(refs).by_role()
            arrays = {role: mr_input(read_image(ref.path), spec.size, low, high)[0] for role, ref in images.items()}
        except (SelectionError, PixelDataError) as exc:
            log.warning("study skipped", extra={"study_uid": study_uid, "reason": str(exc)})
            continue
        for role in SIH_ROLES:
            inputs[role].append(arrays[role].astype(np.float16))
        ys.append(labels[study_uid])
        uids.append(study_uid)
    if not uids:
        raise SelectionError(f"no labelled study with usable post-contrast T1 images under {data_dir}")
    return SihData({r: np.stack(v) for r, v in inputs.items()}, np.asarray(ys, dtype=np.float32), uids)
