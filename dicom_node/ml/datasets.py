"""Training/evaluation data: a folder of DICOM files plus a labels CSV, turned into model inputs.

- ICH: `labels.csv` in RSNA 2019 format (`ID,Label`, rows `ID_<SOPInstanceUID>_<label>,0|1`), or study-level
  (`StudyInstanceUID,any,epidural,…`, as `reports export-labels` writes): every slice takes its study's labels.
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

from dicom_node.errors import PixelDataError, SelectionError
from dicom_node.ml.analysis import InstanceRef, instance_ref_from_file
from dicom_node.ml.manifest import ICH_LABELS, SIH_ROLES, InputSpec
from dicom_node.ml.preprocess import ct_inputs, mr_input, read_image, resize_pad
from dicom_node.ml.selection import ICH_CT_RULE, select_series, select_sih_images
from dicom_node.outputs.codes import SIH_SIGNS, sign_label

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


def read_ich_labels(path: Path, studies: dict[str, list[InstanceRef]]) -> dict[str, dict[str, int]]:
    """ICH labels by SOP Instance UID: RSNA slice labels, or study-level labels (`StudyInstanceUID,any,…`,
    e.g. from `dicom-node reports export-labels`) given to every instance of their study (weak labels:
    slices without the finding in a positive study count as positive)."""
    with open(path, newline="") as fh:
        header = next(csv.reader(fh), [])
    if "StudyInstanceUID" not in header:
        return read_rsna_labels(path)
    out: dict[str, dict[str, int]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            values = {k: int(float(row[k])) for k in ICH_LABELS if row.get(k) not in (None, "")}
            for ref in studies.get(row["StudyInstanceUID"], []):
                out[ref.sop_instance_uid] = values
    return out


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
    # strong annotations: (N, 5, S/2, S/2) uint8 (255 = covered), subtype order of ICH_LABELS[1:]; None: weak
    masks: np.ndarray | None = None
    annotation: str = "none"  # "seg" (DICOM SEG files under the data folder), "boxes" (boxes.csv) or "none"


MASK_LABELS = ICH_LABELS[1:]


def find_annotations(data_dir: Path, refs: Iterable[InstanceRef], wanted: str
                     ) -> tuple[str, dict[str, dict[str, np.ndarray]], dict[str, dict[str, list[tuple[int, int, int, int]]]]]:
    """("seg" | "boxes" | "none", SEG masks by SOP {sop: {label: mask}}, boxes by SOP) for `wanted`
    ("auto": SEG files when there are any, else boxes.csv when present, else none)."""
    from dicom_node.ml.annotations import BOXES_CSV, annotation_segs, box_masks, seg_masks

    refs = list(refs)
    all_segs = [r for r in refs if r.modality.upper() == "SEG"]
    segs = [r.path for r in annotation_segs(all_segs)] if wanted != "none" else []
    boxes = Path(data_dir) / BOXES_CSV
    kind = wanted
    if wanted == "auto":
        kind = "seg" if segs else "boxes" if boxes.is_file() else "none"
    if kind == "seg":
        if not segs:
            results = f" ({len(all_segs)} AI result SEGs left out)" if all_segs else ""
            raise SelectionError(f"--annotations seg: no annotation DICOM SEG file under {data_dir}{results}")
        by_sop: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
        for path in tqdm(segs, desc="reading SEG annotations", unit="file"):
            for label, masks in seg_masks(path)[1].items():
                for sop, m in masks.items():
                    by_sop[sop][label] = m
        return kind, dict(by_sop), {}
    if kind == "boxes":
        if not boxes.is_file():
            raise SelectionError(f"--annotations boxes: no {BOXES_CSV} in {data_dir}")
        return kind, {}, box_masks(boxes)
    return "none", {}, {}


def slice_masks(shape: tuple[int, int], size: int, segs: dict[str, np.ndarray] | None,
                 boxes: dict[str, list[tuple[int, int, int, int]]] | None) -> np.ndarray:
    """One slice's annotation in model space at half resolution, (5, S/2, S/2) uint8."""
    from dicom_node.ml.annotations import fill_boxes

    half = size // 2
    if not segs and not boxes:
        return np.zeros((len(MASK_LABELS), half, half), np.uint8)
    src = np.zeros((len(MASK_LABELS), *shape), np.float32)
    for k, label in enumerate(MASK_LABELS):
        if segs and label in segs:
            src[k] = segs[label]
        elif boxes and label in boxes:
            src[k] = fill_boxes(boxes[label], shape)
    return half_resolution(src, size)


@dataclass
class SihData:
    inputs: dict[str, np.ndarray]  # role -> (N, 1, S, S) float16
    labels: np.ndarray  # (N,) float32
    study_uids: list[str]
    # with `signs_size`: the same images at the localiser's size, role -> (N, 1, S2, S2) float16, and where
    # the SIH signs are on them (SEG annotations), role -> (N, K, S2/2, S2/2) uint8 (255 = sign): one
    # channel per sign of `sign_names` (the SEGs name them) or, where the SEGs have one segment for them
    # all, one channel ("sih")
    sign_inputs: dict[str, np.ndarray] | None = None
    sign_masks: dict[str, np.ndarray] | None = None
    sign_names: tuple[str, ...] = ()


def load_ich(data_dir: Path, spec: InputSpec, labels_csv: Path | None = None, annotations: str = "none") -> IchData:
    """Preprocessed labelled slices; `annotations` ("auto", "seg", "boxes", "none") adds their masks."""
    refs_all = scan_dicom(data_dir)
    kind, seg_by_sop, boxes_by_sop = find_annotations(data_dir, refs_all, annotations)
    studies = by_study(r for r in refs_all if r.modality != "SEG")
    labels = read_ich_labels(labels_csv or Path(data_dir) / "labels.csv", studies)
    # One float16 buffer for every labelled file (its pages are committed only as they are filled):
    # per-slice arrays stacked at the end need twice the memory, and fragment the heap on top.
    bound = sum(ref.sop_instance_uid in labels for refs in studies.values() for ref in refs)
    inputs = np.empty((bound, spec.in_channels, spec.size, spec.size), dtype=np.float16)
    masks = np.zeros((bound if kind != "none" else 0, len(MASK_LABELS), spec.size // 2, spec.size // 2), np.uint8)
    ys, study_idx, sops = [], [], []
    n = 0
    study_uids: list[str] = []
    skipped = unannotated = 0
    for study_uid, refs in tqdm(sorted(studies.items()), desc="preprocessing CT studies", unit="study"):
        try:
            slices = select_series(refs, ICH_CT_RULE)
            hu = [read_image(r.path) for r in slices]
        except (SelectionError, PixelDataError) as exc:
            skipped += 1
            log.warning("study skipped", extra={"study_uid": study_uid, "reason": str(exc)})
            continue
        series_inputs, _ = ct_inputs(hu, spec.size, spec.windows, spec.context_slices)
        first = n
        for i, ref in enumerate(slices):
            if ref.sop_instance_uid not in labels:
                continue
            inputs[n] = series_inputs[i]
            if kind != "none":
                masks[n] = slice_masks(hu[i].shape, spec.size, seg_by_sop.get(ref.sop_instance_uid),
                                        boxes_by_sop.get(ref.sop_instance_uid))
            n += 1
            ys.append([labels[ref.sop_instance_uid].get(label, 0) for label in ICH_LABELS])
            study_idx.append(len(study_uids))
            sops.append(ref.sop_instance_uid)
        if kind != "none" and any(y[0] for y in ys[first:]) and not masks[first:n].any():
            # blood and no outline of it: its empty masks would teach "no lesion here" (as for SIH, left out)
            unannotated += 1
            n = first
            del ys[first:], study_idx[first:], sops[first:]
            continue
        study_uids.append(study_uid)
    if unannotated:
        log.warning("positive studies without annotation left out: train with --annotations none to use them",
                    extra={"studies": unannotated, "annotation": kind})
    if n == 0:
        raise SelectionError(f"no labelled slices of a usable head CT series under {data_dir} ({skipped} studies skipped)")
    log.info("ICH data loaded", extra={"slices": n, "studies": len(study_uids), "skipped": skipped,
                                       "annotation": kind})
    return IchData(inputs[:n], np.asarray(ys, dtype=np.float32), np.asarray(study_idx), study_uids, sops,
                   masks[:n] if kind != "none" else None, kind)


def load_sih(data_dir: Path, spec: InputSpec, labels_csv: Path | None = None, signs_size: int = 0) -> SihData:
    """The three selected post-contrast T1 images of each labelled study, preprocessed; with `signs_size`,
    also at that size with the SIH signs' masks from the DICOM SEG files under `data_dir`: one channel per
    sign (`codes.SIH_SIGNS`) when any SEG there has a segment per sign, else one channel for the segment
    "Spontaneous intracranial hypotension". A positive study without those masks is skipped: it would
    teach that its signs are nowhere."""
    labels = read_study_labels(labels_csv or Path(data_dir) / "labels.csv")
    refs_all = scan_dicom(data_dir)
    segs: dict[str, dict[str, np.ndarray]] = {}
    names: tuple[str, ...] = ()
    if signs_size:
        _, segs, _ = find_annotations(data_dir, refs_all, "seg")
        per_sign = any(sign_label(s) in by_label for by_label in segs.values() for s in SIH_SIGNS)
        names = SIH_SIGNS if per_sign else ("sih",)
    channels = [sign_label(n) if n != "sih" else n for n in names]
    studies = by_study(refs_all)
    inputs: dict[str, list[np.ndarray]] = {r: [] for r in SIH_ROLES}
    sign_inputs: dict[str, list[np.ndarray]] = {r: [] for r in SIH_ROLES}
    sign_masks: dict[str, list[np.ndarray]] = {r: [] for r in SIH_ROLES}
    ys, uids = [], []
    low, high = spec.percentiles
    for study_uid, refs in tqdm(sorted(studies.items()), desc="preprocessing MR studies", unit="study"):
        if study_uid not in labels:
            continue
        try:
            images = select_sih_images(refs).by_role()
            pixels = {role: read_image(ref.path) for role, ref in images.items()}
        except (SelectionError, PixelDataError) as exc:
            log.warning("study skipped", extra={"study_uid": study_uid, "reason": str(exc)})
            continue
        if signs_size:
            found = {role: segs.get(ref.sop_instance_uid, {}) for role, ref in images.items()}
            if labels[study_uid] and not any(c in f for f in found.values() for c in channels):
                log.warning("study skipped", extra={"study_uid": study_uid, "reason": "SIH without sign masks"})
                continue
            for role, image in pixels.items():
                sign_inputs[role].append(mr_input(image, signs_size, low, high)[0].astype(np.float16))
                src = np.zeros((len(channels), *image.shape), np.float32)
                for k, c in enumerate(channels):
                    if c in found[role]:
                        src[k] = found[role][c]
                sign_masks[role].append(half_resolution(src, signs_size))
        for role in SIH_ROLES:
            inputs[role].append(mr_input(pixels[role], spec.size, low, high)[0].astype(np.float16))
        ys.append(labels[study_uid])
        uids.append(study_uid)
    if not uids:
        raise SelectionError(f"no labelled study with usable post-contrast T1 images under {data_dir}")
    data = SihData({r: np.stack(v) for r, v in inputs.items()}, np.asarray(ys, dtype=np.float32), uids)
    if signs_size:
        data.sign_inputs = {r: np.stack(v) for r, v in sign_inputs.items()}
        data.sign_masks = {r: np.stack(v) for r, v in sign_masks.items()}
        data.sign_names = names
    return data


def half_resolution(masks: np.ndarray, size: int) -> np.ndarray:
    """Source-image masks (C, rows, cols) placed as the model's input (`resize_pad`) and pooled to half its
    resolution, where the networks draw their masks: (C, size/2, size/2) uint8, the covered share x 255."""
    square, _ = resize_pad(masks, size)
    half = size // 2
    return np.round(square.reshape(len(masks), half, 2, half, 2).mean(axis=(2, 4)) * 255).astype(np.uint8)
