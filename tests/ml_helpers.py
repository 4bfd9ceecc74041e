"""Tiny generated DICOM for the ml tests (independent of dicom_node.synth): a head-CT-like phantom
with distractor series, and InstanceRef builders for header-only selection tests."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_node.ml.analysis import InstanceRef, instance_ref_from_file
from dicom_node.ml.manifest import Manifest, load_manifest
from dicom_node.ml.selection import orientation_of, reject_reason

DEMO_MODELS = Path(__file__).resolve().parents[1] / "models"
SHIPPED_VERSIONS = {"ich": "0.1.0-synthetic-demo", "sih": "0.4.0-synthetic-demo"}  # whose selection rules decide

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


@functools.cache
def shipped_manifest(name: str) -> Manifest:
    """The shipped demo model's manifest (its selection rules are what the node uses)."""
    return load_manifest(DEMO_MODELS / name / SHIPPED_VERSIONS[name])


def decide(refs: Sequence[InstanceRef]) -> str:
    """What the shipped rules decide for one series: "ich", "axial" / "coronal" (SIH), or the refusal reason.

    CT (and anything neither model reads) goes to the ICH rule; MR to the SIH rules, and when both refuse
    it, the reason of the rule for the series' own orientation.
    """
    if refs[0].modality.upper() != "MR":
        return reject_reason(shipped_manifest("ich").rules["series"], refs) or "ich"
    rules = shipped_manifest("sih").rules
    axial, coronal = (reject_reason(rules[name], refs) for name in ("axial", "coronal"))
    if axial is None:
        return "axial"
    if coronal is None:
        return "coronal"
    orientation = orientation_of(refs[0])
    return coronal if orientation is not None and orientation[0] == "coronal" else axial


def ref(series_uid: str = "1.2.3.1", n: int = 0, **kw: object) -> InstanceRef:
    """An InstanceRef with plausible axial non-contrast head CT defaults, overridable by keyword."""
    base: dict[str, object] = {
        "path": f"/nonexistent/{series_uid}/{n}.dcm", "study_uid": "1.2.3", "series_uid": series_uid,
        "sop_instance_uid": f"{series_uid}.{n}", "sop_class_uid": CT, "modality": "CT", "series_description": "HEAD 5mm",
        "body_part": "HEAD", "series_number": 2, "instance_number": n + 1, "image_type": ("ORIGINAL", "PRIMARY", "AXIAL"),
        "image_orientation": AXIAL, "image_position": (0.0, 0.0, 5.0 * n), "slice_thickness": 5.0, "contrast_agent": "",
        "rows": 512, "columns": 512, "convolution_kernel": "H30s",
    }
    base.update(kw)
    return InstanceRef(**base)  # type: ignore[arg-type]


def series(series_uid: str, count: int, **kw: object) -> list[InstanceRef]:
    return [ref(series_uid, i, **kw) for i in range(count)]


def _write(path: Path, meta: dict[str, object], pixels: np.ndarray) -> None:
    ds = Dataset()
    for k, v in meta.items():
        setattr(ds, k, v)
    ds.SOPInstanceUID = ds.SOPInstanceUID if "SOPInstanceUID" in ds else generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def head_hu(size: int, z: float, bleed: bool, rng: np.random.Generator) -> np.ndarray:
    """An ellipse of brain (30 HU) in a bright skull (1000 HU), air outside; a 65 HU blob when `bleed`."""
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    r = np.sqrt((xx / 0.42) ** 2 + (yy / 0.48) ** 2)
    hu = np.full((size, size), -1000.0)
    hu[r < 1.0] = 1000.0
    hu[r < 0.9] = 30.0 + rng.normal(0, 3, (size, size))[r < 0.9]
    if bleed:
        blob = (xx - 0.15) ** 2 + (yy + 0.1) ** 2 < (0.08 + 0.02 * np.sin(z)) ** 2
        hu[blob] = 65.0
    return hu


def write_ct_study(out: Path, seed: int, bleed: bool, n: int = 10, size: int = 64,
                   distractors: bool = True) -> list[InstanceRef]:
    """A small head CT study: the soft-kernel axial series (+ scout, bone-kernel series, dose SC)."""
    rng = np.random.default_rng(seed)
    study_uid = generate_uid()
    common = {"StudyInstanceUID": study_uid, "PatientID": f"PHANTOM{seed}", "PatientName": "Phantom^Test",
                  "Modality": "CT", "BodyPartExamined": "HEAD", "StudyDate": "20240101"}
    files = []

    def ct_series(number: int, desc: str, kernel: str, image_type: str, orient: tuple[float, ...], count: int) -> None:
        suid = generate_uid()
        for i in range(count):
            hu = head_hu(size, float(i), bleed and count // 3 <= i < 2 * count // 3, rng)
            stored = np.round(hu + 1024).astype(np.int16)
            meta = dict(common, SOPClassUID=CT, SeriesInstanceUID=suid, SeriesNumber=number, InstanceNumber=i + 1,
                        SeriesDescription=desc, ConvolutionKernel=kernel, ImageType=image_type,
                        ImageOrientationPatient=list(orient), ImagePositionPatient=[0.0, 0.0, 5.0 * i],
                        SliceThickness=5.0, PixelSpacing=[0.5, 0.5], RescaleSlope=1, RescaleIntercept=-1024,
                        WindowCenter=40, WindowWidth=80)
            path = out / suid / f"{i:03d}.dcm"
            _write(path, meta, stored)
            files.append(path)

    ct_series(2, "HEAD 5mm", "H30s", r"ORIGINAL\PRIMARY\AXIAL", AXIAL, n)
    if distractors:
        ct_series(1, "Topogram 0.6", "T20f", r"ORIGINAL\PRIMARY\LOCALIZER", (0.0, 1.0, 0.0, 0.0, 0.0, -1.0), 1)
        ct_series(3, "HEAD 5mm BONE", "H70h", r"ORIGINAL\PRIMARY\AXIAL", AXIAL, n)
        suid = generate_uid()
        meta = dict(common, SOPClassUID=SC, SeriesInstanceUID=suid, SeriesNumber=501, InstanceNumber=1,
                    SeriesDescription="Dose Report", ImageType=r"DERIVED\SECONDARY\OTHER")
        _write(out / suid / "dose.dcm", meta, np.zeros((size, size), dtype=np.uint16))
        files.append(out / suid / "dose.dcm")
    return [instance_ref_from_file(str(p)) for p in files]


def write_rsna_labels(path: Path, refs: list[InstanceRef], positive_sops: set[str]) -> None:
    """RSNA-format labels for the soft-kernel series: positive slices get intraparenchymal + any."""
    from dicom_node.ml.manifest import ICH_LABELS

    rows = ["ID,Label"]
    for r in refs:
        if r.series_description != "HEAD 5mm":
            continue
        for label in ICH_LABELS:
            pos = r.sop_instance_uid in positive_sops and label in ("any", "intraparenchymal")
            rows.append(f"ID_{r.sop_instance_uid}_{label},{int(pos)}")
    with open(path, "a") as fh:
        fh.write("\n".join(rows if not path.exists() or path.stat().st_size == 0 else rows[1:]) + "\n")


def write_ich_dataset(out: Path, n_studies: int, seed: int, n: int = 10, size: int = 64) -> None:
    """n_studies small CT studies, every other one with a bleed on its middle third, plus labels.csv."""
    labels = out / "labels.csv"
    for k in range(n_studies):
        bleed = k % 2 == 0
        refs = write_ct_study(out / f"study{k}", seed * 1000 + k, bleed, n=n, size=size, distractors=k == 0)
        soft = sorted((r for r in refs if r.series_description == "HEAD 5mm"), key=lambda r: r.instance_number or 0)
        positive = {r.sop_instance_uid for i, r in enumerate(soft) if bleed and n // 3 <= i < 2 * n // 3}
        write_rsna_labels(labels, refs, positive)
