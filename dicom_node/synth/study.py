"""What a generated study is (`SynthStudy`) and the deterministic patient/study identity it is written with."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dicom_node.synth.dicom_writer import SeriesInfo, StudyInfo, synth_uid

if TYPE_CHECKING:
    from dicom_node.synth.ground_truth import Box

CT_LABELS: tuple[str, ...] = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")
MR_LABELS: tuple[str, ...] = ("sih",)


@dataclass(frozen=True)
class SynthStudy:
    """A study written to `folder`. `slice_labels` covers the CT primary axial series only (empty for MR)."""

    study_uid: str
    folder: Path
    files: list[Path]
    primary_series_uid: str
    slice_labels: dict[str, dict[str, int]]
    study_labels: dict[str, int]
    kind: str = "ct-head"
    series_uids: dict[str, str] = field(default_factory=dict)  # role ("axial", "bone", ...) -> UID
    seed: int = 0
    patient_index: int = 0
    findings: tuple[str, ...] = ()  # CT: hemorrhage subtypes rendered; MR: the SIH signs shown
    seg_file: Path | None = None  # CT with lesions: ground-truth masks as a DICOM SEG (not among `files`)
    boxes: tuple[Box, ...] = ()  # CT: per-slice, per-subtype bounding boxes of the masks
    seg_files: tuple[Path, ...] = ()  # MR with SIH: where its signs are, one SEG per post-contrast series


def study_folder(out_dir: Path, kind: str, seed: int, patient_index: int) -> Path:
    return Path(out_dir) / f"{kind}-s{seed}-p{patient_index:04d}"


def study_info(kind: str, seed: int, patient_index: int, description: str) -> StudyInfo:
    """Identity of a generated study: fake patient, date and UIDs, all functions of (kind, seed, index)."""
    rng = np.random.default_rng([seed, patient_index, 7])
    number = patient_index + 1
    day = dt.date(2024, 1, 1) + dt.timedelta(days=int(rng.integers(0, 700)))
    age = int(rng.integers(20, 88))
    seconds = int(rng.integers(7 * 3600, 20 * 3600))
    birth = dt.date(day.year - age, int(rng.integers(1, 13)), int(rng.integers(1, 29)))
    if (birth.month, birth.day) > (day.month, day.day):
        age -= 1
    return StudyInfo(
        patient_name=f"SYNTH^PATIENT^{number:04d}",
        patient_id=f"SYNTH{number:04d}",
        birth_date=birth.strftime("%Y%m%d"),
        sex=str(rng.choice(["F", "M"])),
        age=f"{age:03d}Y",
        study_uid=synth_uid(kind, seed, patient_index, "study"),
        study_date=day.strftime("%Y%m%d"),
        study_time=f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
        accession=f"S{seed % 10000:04d}{number:05d}"[:16],
        study_id=str(number),
        description=description,
        frame_of_reference_uid=synth_uid(kind, seed, patient_index, "frame-of-reference"),
    )


def series_info(study: StudyInfo, kind: str, seed: int, patient_index: int, role: str, number: int,
                description: str, modality: str, body_part: str, minutes: int) -> SeriesInfo:
    h, m, s = int(study.study_time[:2]), int(study.study_time[2:4]), int(study.study_time[4:6])
    total = (h * 3600 + m * 60 + s + minutes * 60) % 86400
    return SeriesInfo(
        uid=synth_uid(kind, seed, patient_index, "series", role),
        number=number,
        description=description,
        modality=modality,
        body_part=body_part,
        time=f"{total // 3600:02d}{total // 60 % 60:02d}{total % 60:02d}",
    )
