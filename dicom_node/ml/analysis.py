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
    labels: tuple[str, ...] = ()  # what the model reports (a "not analysed" report names each as Undetermined)


@dataclass(frozen=True)
class Measurement:
    """A number the report states: `concept` names it (a key of `outputs.codes.MEASUREMENTS`, e.g.
    "diameter", "microbleed_count"), `unit` is its UCUM code ("mm", "{count}")."""

    concept: str
    value: float
    unit: str


@dataclass(frozen=True)
class Finding:
    label: str  # model label, e.g. "subdural"; the code lives in outputs.codes
    probability: float
    threshold: float
    present: bool | None  # None: not analysed (undetermined)
    critical: bool = False  # a present critical finding raises the study to STAT
    key_sop_instance_uid: str | None = None  # the image that shows it best
    key_series_uid: str | None = None
    # Where the finding is on the key image, (row, column) in source pixel coordinates: from the model's
    # masks (ICH, the SIH localiser, microbleed boxes), else the explanation map's peak inside the head.
    region_center: tuple[float, float] | None = None
    region_radius: float | None = None
    # A label reported once per lesion (microbleeds) numbers its findings 1..n; 0 for one finding per label.
    instance: int = 0
    detail: str = ""  # a short qualifier shown with the finding, e.g. "lobar"
    measurements: tuple[Measurement, ...] = ()  # of this lesion (e.g. its diameter), shown with its region
    # Signs of this finding the model localised (SIH: `codes.SIH_SIGNS`), each with its own SEG segment;
    # `detail` then names the one under the region
    signs: tuple[str, ...] = ()


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
    # Lesion masks of present findings: label -> SOP Instance UID -> bool (rows, columns) array in source
    # pixel coordinates. Like heat maps they travel in memory only (the SEG is built from them).
    masks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)  # study level, e.g. lesion counts

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
            **({"measurements": [asdict(m) for m in self.measurements]} if self.measurements else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudyAnalysis:
        findings = []
        for f in data.get("findings", []):
            f = dict(f)
            if f.get("region_center") is not None:
                f["region_center"] = tuple(f["region_center"])
            if f.get("measurements"):
                f["measurements"] = tuple(Measurement(**m) for m in f["measurements"])
            if f.get("signs"):
                f["signs"] = tuple(f["signs"])
            findings.append(Finding(**f))
        return cls(
            model=ModelInfo(**{**data["model"], "labels": tuple(data["model"].get("labels", ()))}),
            status=AnalysisStatus(data["status"]),
            reason=data.get("reason", ""),
            study_uid=data.get("study_uid", ""),
            evaluated_series_uids=list(data.get("evaluated_series_uids", [])),
            evaluated_sop_instance_uids=list(data.get("evaluated_sop_instance_uids", [])),
            findings=findings,
            key_images=[KeyImage(k["sop_instance_uid"], list(k["labels"])) for k in data.get("key_images", [])],
            measurements=[Measurement(**m) for m in data.get("measurements", [])],
        )


@dataclass(frozen=True)
class InstanceRef:
    """One stored instance as the pipelines see it: indexed header fields plus the file's absolute path.

    Built from `instances`/`series`/`studies` rows (by the worker) or straight from files (by
    `train`/`evaluate`, see `instance_ref_from_dataset`), so selection rules run on headers only.
    """

    path: str
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    series_description: str = ""
    body_part: str = ""
    series_number: int | None = None
    instance_number: int | None = None
    image_type: tuple[str, ...] = ()
    image_orientation: tuple[float, ...] | None = None  # 6 direction cosines
    image_position: tuple[float, ...] | None = None  # 3 values, mm
    slice_thickness: float | None = None
    contrast_agent: str = ""
    rows: int | None = None
    columns: int | None = None
    convolution_kernel: str = ""


def _floats(value: Any) -> tuple[float, ...] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = value.split("\\")
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None


def header_fields(ds: Any) -> dict[str, Any]:
    """The indexed header fields of a pydicom Dataset (read without pixel data), as stored in `instances`."""

    def s(keyword: str) -> str:
        v = ds.get(keyword, "")
        if v is None:
            return ""
        if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
            return "\\".join(str(x) for x in v)
        return str(v).strip()

    def i(keyword: str) -> int | None:
        v = ds.get(keyword)
        try:
            return int(v) if v not in (None, "") else None
        except (TypeError, ValueError):
            return None

    thickness = ds.get("SliceThickness")
    try:
        slice_thickness = float(thickness) if thickness not in (None, "") else None
    except (TypeError, ValueError):
        slice_thickness = None
    return {
        "study_uid": s("StudyInstanceUID"),
        "series_uid": s("SeriesInstanceUID"),
        "sop_instance_uid": s("SOPInstanceUID"),
        "sop_class_uid": s("SOPClassUID"),
        "modality": s("Modality"),
        "series_description": s("SeriesDescription")[:64],
        "body_part": s("BodyPartExamined")[:16],
        "series_number": i("SeriesNumber"),
        "instance_number": i("InstanceNumber"),
        "image_type": s("ImageType")[:128],
        "image_orientation": s("ImageOrientationPatient")[:128],
        "image_position": s("ImagePositionPatient")[:128],
        "slice_thickness": slice_thickness,
        "contrast_agent": s("ContrastBolusAgent")[:64],
        "rows": i("Rows"),
        "columns": i("Columns"),
        "convolution_kernel": s("ConvolutionKernel")[:64],
    }


def instance_ref(path: str, fields: dict[str, Any]) -> InstanceRef:
    """An InstanceRef from `header_fields()` output (or a row with the same names)."""
    image_type = fields.get("image_type") or ""
    return InstanceRef(
        path=path,
        study_uid=fields["study_uid"],
        series_uid=fields["series_uid"],
        sop_instance_uid=fields["sop_instance_uid"],
        sop_class_uid=fields["sop_class_uid"],
        modality=fields.get("modality") or "",
        series_description=fields.get("series_description") or "",
        body_part=fields.get("body_part") or "",
        series_number=fields.get("series_number"),
        instance_number=fields.get("instance_number"),
        image_type=tuple(p.strip().upper() for p in image_type.split("\\") if p.strip()),
        image_orientation=_floats(fields.get("image_orientation")),
        image_position=_floats(fields.get("image_position")),
        slice_thickness=fields.get("slice_thickness"),
        contrast_agent=fields.get("contrast_agent") or "",
        rows=fields.get("rows"),
        columns=fields.get("columns"),
        convolution_kernel=fields.get("convolution_kernel") or "",
    )


def instance_ref_from_file(path: str) -> InstanceRef:
    """Read a file's header (no pixel data) into an InstanceRef; for train/evaluate over a folder."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return instance_ref(str(path), header_fields(ds))
