"""Generated source images and analyses for the outputs tests (no patient data)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from dicom_node.ml.analysis import AnalysisStatus, Finding, InstanceRef, KeyImage, ModelInfo, StudyAnalysis

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"

ICH_MODEL = ModelInfo(
    name="ich", version="0.1.0-synthetic-demo", task="ich-ct", display_name="dicom-node ICH classifier",
    manifest_sha256="a" * 64, synthetic_demo=True)
SIH_MODEL = ModelInfo(
    name="sih", version="0.1.0-synthetic-demo", task="sih-mr", display_name="dicom-node SIH classifier",
    manifest_sha256="b" * 64, synthetic_demo=True)
ICH_LABELS = ("any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")


def make_image(modality: str, study_uid: str, series_uid: str, number: int, size: int = 128,
               blob: tuple[int, int] | None = None) -> Dataset:
    """A small axial CT (HU with rescale) or MR slice: a bright disc 'brain' and an optional hyperdense blob."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Synthetic^Phantom"
    ds.PatientID = "SYN0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = "ACC0001"
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.Manufacturer = "dicom-node synth"
    ds.SeriesNumber = 2
    ds.InstanceNumber = number
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid, "frame-of-reference"])
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "HEAD"
    ds.PositionReferenceIndicator = ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-100, -100, 5.0 * number]
    ds.PixelSpacing = [200 / size, 200 / size]
    ds.SliceThickness = 5
    ds.PatientOrientation = ""
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    yy, xx = np.mgrid[:size, :size]
    brain = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.4 * size) ** 2
    if modality == "CT":
        hu = np.where(brain, 35, -1000).astype(np.int16)
        if blob is not None:
            hu[(yy - blob[0]) ** 2 + (xx - blob[1]) ** 2 < (size / 16) ** 2] = 70
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.KVP = 120
        ds.AcquisitionNumber = 1
        ds.PixelData = (hu + 1024).astype(np.int16).tobytes()
    else:
        sig = np.where(brain, 600, 0).astype(np.uint16)
        if blob is not None:
            sig[(yy - blob[0]) ** 2 + (xx - blob[1]) ** 2 < (size / 16) ** 2] = 1200
        ds.PixelRepresentation = 0
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.EchoTime = 10
        ds.RepetitionTime = 500
        ds.EchoTrainLength = 1
        ds.ContrastBolusAgent = "GADOLINIUM"
        ds.PixelData = sig.tobytes()
    return ds


def make_series(modality: str, n: int = 4, size: int = 128, blob: tuple[int, int] | None = None,
                blob_slice: int = 1) -> list[Dataset]:
    study_uid, series_uid = generate_uid(), generate_uid()
    return [make_image(modality, study_uid, series_uid, i + 1, size, blob if i == blob_slice else None)
            for i in range(n)]


def gaussian(size: int, center: tuple[float, float], sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.exp(-((yy - center[0]) ** 2 + (xx - center[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def ich_analysis(series: list[Dataset], positive: bool, center: tuple[float, float] = (40.0, 80.0)) -> StudyAnalysis:
    key = series[1]
    findings = []
    for label in ICH_LABELS:
        present = positive and label in ("any", "subdural")
        findings.append(Finding(
            label=label, probability=0.93 if present else 0.04, threshold=0.5, present=present,
            critical=present, key_sop_instance_uid=key.SOPInstanceUID if present else None,
            key_series_uid=key.SeriesInstanceUID if present else None,
            region_center=center if present else None, region_radius=10.0 if present else None))
    key_images = []
    if positive:
        key_images = [KeyImage(key.SOPInstanceUID, ["any", "subdural"], gaussian(int(key.Rows), center, 8.0))]
    return StudyAnalysis(
        model=ICH_MODEL, status=AnalysisStatus.ANALYSED, reason="", study_uid=key.StudyInstanceUID,
        evaluated_series_uids=[key.SeriesInstanceUID],
        evaluated_sop_instance_uids=[ds.SOPInstanceUID for ds in series], findings=findings, key_images=key_images)


def sih_analysis(series: list[Dataset], center: tuple[float, float] = (64.0, 64.0)) -> StudyAnalysis:
    key = series[1]
    finding = Finding(label="sih", probability=0.81, threshold=0.5, present=True, critical=False,
                      key_sop_instance_uid=key.SOPInstanceUID, key_series_uid=key.SeriesInstanceUID,
                      region_center=center, region_radius=12.0)
    return StudyAnalysis(
        model=SIH_MODEL, status=AnalysisStatus.ANALYSED, study_uid=key.StudyInstanceUID,
        evaluated_series_uids=[key.SeriesInstanceUID],
        evaluated_sop_instance_uids=[ds.SOPInstanceUID for ds in series[:3]], findings=[finding],
        key_images=[KeyImage(key.SOPInstanceUID, ["sih"], gaussian(int(key.Rows), center, 10.0))])


def not_analysed(series: list[Dataset], reason: str = "no non-contrast axial head CT series") -> StudyAnalysis:
    return StudyAnalysis(model=ICH_MODEL, status=AnalysisStatus.NOT_ANALYSED, reason=reason,
                         study_uid=series[0].StudyInstanceUID)


def sources_of(series: list[Dataset]) -> dict[str, Dataset]:
    return {ds.SOPInstanceUID: ds for ds in series}


def roundtrip(ds: Dataset, path) -> Dataset:
    """Write as a DICOM file (with preamble and file meta) and read it back."""
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return pydicom.dcmread(path)


def sr_texts(sr: Dataset) -> list[str]:
    """Every TEXT content item's value in an SR, in document order."""
    texts: list[str] = []

    def walk(items: list[Dataset]) -> None:
        for item in items:
            if item.get("ValueType") == "TEXT":
                texts.append(str(item.TextValue))
            walk(list(item.get("ContentSequence", [])))

    walk(list(sr.ContentSequence))
    return texts


def written_seg(result: StudyAnalysis, refs: Sequence[InstanceRef], path: Path, series_uid: str) -> Path:
    """The SEG `build_outputs` makes of a real analysis, saved at `path`: valid per dciodvfy and
    referencing the series `series_uid`."""
    from dicom_node.outputs import build_outputs
    from dicom_node.outputs.validate import dciodvfy_errors

    sources = {r.sop_instance_uid: pydicom.dcmread(r.path) for r in refs}
    seg = next(o for o in build_outputs(result, sources, 1) if str(o.dataset.SOPClassUID) == SEG_CLASS)
    seg.dataset.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    assert pydicom.dcmread(path).ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    return path
