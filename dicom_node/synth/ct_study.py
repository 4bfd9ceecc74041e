"""A whole non-contrast head CT study as a scanner sends it: scout, soft and bone axial series, dose report."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dicom_node.synth.dicom_writer import StudyInfo, ct_image, sc_image, synth_uid, write
from dicom_node.synth.ground_truth import boxes_of, label_masks, write_ground_truth
from dicom_node.synth.hemorrhage import SUBTYPES
from dicom_node.synth.phantom_ct import SCOUT_MM, SLICE_MM, CTVolume, render_ct_head
from dicom_node.synth.study import CT_LABELS, SynthStudy, series_info, study_folder, study_info

log = logging.getLogger(__name__)

KIND = "ct-head"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
LATERAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
BRAIN_WINDOW = (40.0, 80.0)
BONE_WINDOW = (500.0, 2500.0)


def write_ct_head_study(out_dir: Path, seed: int, findings: Iterable[str] = (), n_slices: int = 40,
                        size: int = 512, distractors: bool = True, patient_index: int = 0,
                        ground_truth: bool = True) -> SynthStudy:
    """Generate and write one head CT study under `out_dir`; labels follow the rendered lesions.

    With `ground_truth`, a study with lesions also gets its masks as a DICOM SEG under
    `out_dir/ground-truth/` (see `ground_truth`); the boxes are returned either way."""
    findings = tuple(findings)
    rng = np.random.default_rng([seed, patient_index, 1])
    vol = render_ct_head(rng, findings, n_slices=n_slices, size=size)
    info = study_info(KIND, seed, patient_index, "CT HEAD WO CONTRAST")
    folder = study_folder(out_dir, KIND, seed, patient_index)
    ctdi = float(rng.uniform(45, 60))
    exposure = {"kvp": 120.0, "ma": float(rng.integers(250, 350)), "time_ms": 1000.0, "ctdivol": ctdi}
    exposure["mas"] = exposure["ma"]
    files: list[Path] = []
    series_uids: dict[str, str] = {}
    axial = series_info(info, KIND, seed, patient_index, "axial", 2, "Head 5mm", "CT", "HEAD", 2)
    series_uids["axial"] = axial.uid
    slice_labels: dict[str, dict[str, int]] = {}
    axial_datasets = []
    for i in range(n_slices):
        sop = synth_uid(KIND, seed, patient_index, "axial", i)
        ds = ct_image(info, axial, sop, i + 1, vol.soft[i], _position(vol, i), AXIAL, (vol.spacing, vol.spacing),
                      SLICE_MM, "H30s", ["ORIGINAL", "PRIMARY", "AXIAL"], BRAIN_WINDOW, exposure)
        files.append(write(ds, folder / f"{axial.number:03d}-head-5mm" / f"{i + 1:04d}.dcm"))
        axial_datasets.append(ds)
        row = {label: int(vol.labels[i, k]) for k, label in enumerate(SUBTYPES)}
        row["any"] = int(any(row.values()))
        slice_labels[sop] = {label: row[label] for label in CT_LABELS}
    if distractors:
        files += _distractors(folder, info, vol, seed, patient_index, exposure, series_uids)
    study_labels = {label: max((row[label] for row in slice_labels.values()), default=0) for label in CT_LABELS}
    log.debug("wrote CT study", extra={"study_uid": info.study_uid, "files": len(files),
                                       "labels": ",".join(k for k, v in study_labels.items() if v)})
    rendered = tuple(k for k in SUBTYPES if study_labels[k])
    if ground_truth:
        seg_file, boxes = write_ground_truth(out_dir, folder.name, KIND, seed, patient_index, axial_datasets,
                                             vol.masks)
    else:
        seg_file, boxes = None, boxes_of(info.study_uid, label_masks(vol.masks, list(slice_labels)))
    return SynthStudy(info.study_uid, folder, files, axial.uid, slice_labels, study_labels, KIND, series_uids,
                      seed, patient_index, rendered, seg_file, tuple(boxes))


def _position(vol: CTVolume, i: int) -> tuple[float, float, float]:
    return (vol.origin_xy[0], vol.origin_xy[1], float(vol.z[i]))


def _distractors(folder: Path, info: StudyInfo, vol: CTVolume, seed: int, index: int,
                 exposure: dict[str, float], series_uids: dict[str, str]) -> list[Path]:
    files = []
    scout = series_info(info, KIND, seed, index, "scout", 1, "Topogram 0.6 T20s", "CT", "HEAD", 0)
    series_uids["scout"] = scout.uid
    ds = ct_image(info, scout, synth_uid(KIND, seed, index, "scout", 0), 1, vol.scout, vol.scout_origin, LATERAL,
                  (SCOUT_MM, SCOUT_MM), 0.6, "T20s", ["ORIGINAL", "PRIMARY", "LOCALIZER"], (500.0, 3000.0),
                  {**exposure, "ma": 35.0, "mas": 35.0, "ctdivol": 0.1}, intercept=0.0)
    files.append(write(ds, folder / f"{scout.number:03d}-topogram" / "0001.dcm"))
    bone = series_info(info, KIND, seed, index, "bone", 3, "Head 5mm bone", "CT", "HEAD", 3)
    series_uids["bone"] = bone.uid
    for i in range(vol.bone.shape[0]):
        ds = ct_image(info, bone, synth_uid(KIND, seed, index, "bone", i), i + 1, vol.bone[i], _position(vol, i),
                      AXIAL, (vol.spacing, vol.spacing), SLICE_MM, "H70h", ["ORIGINAL", "PRIMARY", "AXIAL"],
                      BONE_WINDOW, exposure)
        files.append(write(ds, folder / f"{bone.number:03d}-head-5mm-bone" / f"{i + 1:04d}.dcm"))
    dose = series_info(info, KIND, seed, index, "dose", 501, "Dose Report", "CT", "HEAD", 4)
    series_uids["dose"] = dose.uid
    dlp = exposure["ctdivol"] * vol.bone.shape[0] * SLICE_MM / 10.0
    ds = sc_image(info, dose, synth_uid(KIND, seed, index, "dose", 0), 1, _dose_page(exposure, dlp),
                  ["DERIVED", "SECONDARY", "OTHER"])
    files.append(write(ds, folder / f"{dose.number:03d}-dose-report" / "0001.dcm"))
    return files


def _dose_page(exposure: dict[str, float], dlp: float) -> np.ndarray:
    img = Image.new("L", (384, 256), 0)
    draw = ImageDraw.Draw(img)
    lines = [
        "Dose Report",
        "",
        "Total mAs  {:.0f}      Total DLP  {:.1f} mGycm".format(exposure["mas"], dlp + 0.1),
        "",
        "Series  Type       Scan range   CTDIvol   DLP    Phantom",
        "                   (mm)         (mGy)   (mGycm)   (cm)",
        "1       Topogram   256          0.10      0.1    L",
        "2       Helical    {:<12.0f} {:<9.2f} {:<6.1f} 16".format(dlp / exposure["ctdivol"] * 10,
                                                                   exposure["ctdivol"], dlp),
        "",
        "dicom-node synth: generated phantom, not patient data",
    ]
    for k, text in enumerate(lines):
        draw.text((10, 10 + 20 * k), text, fill=255)
    return np.asarray(img, dtype=np.uint8)
