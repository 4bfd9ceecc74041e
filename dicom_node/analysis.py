"""What a model run says about a study: the contract between the worker, the reporter and the database.

A `StudyAnalysis` is produced by a pipeline (`dicom_node.ml`), stored as JSON in `results.payload`, and
turned into an SR and overlays by `dicom_node.outputs`. Heat maps travel separately (numpy arrays, not
stored in the database) as `KeyImage.heatmap`.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


class AnalysisStatus(str, enum.Enum):
    ANALYSED = "analysed"
    NOT_ANALYSED = "not_analysed"  # no suitable series/images: the SR says so and why
    FAILED = "failed"  # analysis was attempted and failed after every retry: the SR says so and why


@dataclass(frozen=True)
class ModelInfo:
    name: str  # e.g. "ich"
    version: str  # e.g. "0.1.0-synthetic-demo"
    task: str  # e.g. "ich-ct", "sih-mr"
    display_name: str  # e.g. "dicom-node ICH classifier"
    manifest_sha256: str  # sha256 of manifest.json: changes whenever weights or thresholds change
    synthetic_demo: bool  # demo weights trained on generated phantoms: never clinically valid
    intended_use: str = ""


@dataclass(frozen=True)
class Finding:
    label: str  # model label, e.g. "subdural"; the code lives in outputs.codes
    probability: float
    threshold: float
    present: bool | None  # None: not analysed (undetermined)
    critical: bool = False  # a present critical finding raises the study to STAT
    key_sop_instance_uid: str | None = None  # the image that shows it best
    key_series_uid: str | None = None
    # Peak of the explanation map on the key image, (row, column) in source pixel coordinates.
    region_center: tuple[float, float] | None = None
    region_radius: float | None = None


@dataclass
class KeyImage:
    """A source image and the explanation map to draw on it (for the overlay secondary capture)."""

    sop_instance_uid: str
    labels: list[str]
    heatmap: np.ndarray | None = None  # float32 in [0, 1], the source image's rows x columns


@dataclass
class StudyAnalysis:
    model: ModelInfo
    status: AnalysisStatus
    reason: str = ""  # why not analysed / failed; a summary when analysed
    study_uid: str = ""
    evaluated_series_uids: list[str] = field(default_factory=list)
    evaluated_sop_instance_uids: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    key_images: list[KeyImage] = field(default_factory=list)

    @property
    def critical(self) -> bool:
        return any(f.present and f.critical for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": asdict(self.model),
            "status": self.status.value,
            "reason": self.reason,
            "study_uid": self.study_uid,
            "evaluated_series_uids": list(self.evaluated_series_uids),
            "evaluated_sop_instance_uids": list(self.evaluated_sop_instance_uids),
            "findings": [asdict(f) for f in self.findings],
            "key_images": [{"sop_instance_uid": k.sop_instance_uid, "labels": list(k.labels)} for k in self.key_images],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudyAnalysis:
        findings = []
        for f in data.get("findings", []):
            f = dict(f)
            if f.get("region_center") is not None:
                f["region_center"] = tuple(f["region_center"])
            findings.append(Finding(**f))
        return cls(
            model=ModelInfo(**data["model"]),
            status=AnalysisStatus(data["status"]),
            reason=data.get("reason", ""),
            study_uid=data.get("study_uid", ""),
            evaluated_series_uids=list(data.get("evaluated_series_uids", [])),
            evaluated_sop_instance_uids=list(data.get("evaluated_sop_instance_uids", [])),
            findings=findings,
            key_images=[KeyImage(k["sop_instance_uid"], list(k["labels"])) for k in data.get("key_images", [])],
        )
