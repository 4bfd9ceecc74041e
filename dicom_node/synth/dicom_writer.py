"""pydicom datasets for generated images: CT Image, MR Image and Secondary Capture IODs.

Every object carries complete file meta (Explicit VR Little Endian) and the Patient, General Study,
Patient Study, General Series, Frame of Reference, General Equipment, General Image, Image Plane,
Image Pixel, modality-specific, VOI LUT and SOP Common modules. UIDs are derived deterministically
from names (`synth_uid`): the same seed always gives the same UIDs.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
)

from dicom_node import __version__

_NAMESPACE = uuid.UUID("0b6c2f9e-5a51-4c0e-9d0f-6d1c6a2e8f31")
MANUFACTURER = "dicom-node synth"


def synth_uid(*parts: object) -> str:
    """A deterministic `2.25.<uuid5>` UID for the given name parts."""
    return "2.25." + str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)).int)


def _ds_list(values: Sequence[float], digits: int = 6) -> list[str]:
    return [format(round(float(v), digits), "g") for v in values]


@dataclass(frozen=True)
class StudyInfo:
    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    age: str
    study_uid: str
    study_date: str
    study_time: str
    accession: str
    study_id: str
    description: str
    frame_of_reference_uid: str
    institution: str = "Synthetic Hospital"
    station: str = "SYNTH01"


@dataclass(frozen=True)
class SeriesInfo:
    uid: str
    number: int
    description: str
    modality: str
    body_part: str
    time: str


def base_dataset(study: StudyInfo, series: SeriesInfo, sop_class_uid: str, sop_uid: str,
                 instance_number: int) -> Dataset:
    """Patient, study, series, equipment, general image and SOP common attributes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "DCMNODE_SYNTH"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = study.study_date
    ds.InstanceCreationTime = series.time
    ds.StudyDate = study.study_date
    ds.SeriesDate = study.study_date
    ds.ContentDate = study.study_date
    ds.StudyTime = study.study_time
    ds.SeriesTime = series.time
    ds.ContentTime = series.time
    ds.AccessionNumber = study.accession
    ds.Modality = series.modality
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = study.institution
    ds.ReferringPhysicianName = ""
    ds.StationName = study.station
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.ManufacturerModelName = "Phantom"
    ds.SoftwareVersions = __version__
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.birth_date
    ds.PatientSex = study.sex
    ds.PatientAge = study.age
    ds.BodyPartExamined = series.body_part
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.number
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ""
    return ds


def add_plane(ds: Dataset, study: StudyInfo, position: Sequence[float], orientation: Sequence[float],
              spacing: tuple[float, float], thickness: float) -> None:
    """Frame of Reference and Image Plane modules."""
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.ImagePositionPatient = _ds_list(position)
    ds.ImageOrientationPatient = _ds_list(orientation)
    ds.PixelSpacing = _ds_list(spacing)
    ds.SliceThickness = format(thickness, "g")
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    ds.SliceLocation = format(round(float(np.dot(normal, np.asarray(position, float))), 4), "g")


def add_pixels(ds: Dataset, pixels: np.ndarray, signed: bool, bits_stored: int = 16) -> None:
    """Image Pixel module for a 16-bit monochrome image."""
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {pixels.shape}")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(v) for v in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    arr = np.ascontiguousarray(pixels, dtype="<i2" if signed else "<u2")
    ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OW"


def ct_image(study: StudyInfo, series: SeriesInfo, sop_uid: str, instance_number: int, hu: np.ndarray,
             position: Sequence[float], orientation: Sequence[float], spacing: tuple[float, float],
             thickness: float, kernel: str, image_type: Sequence[str], window: tuple[float, float],
             exposure: dict[str, float], intercept: float = -1024.0) -> Dataset:
    """A CT Image Storage dataset; stored value = HU - intercept (int16, PixelRepresentation 1)."""
    ds = base_dataset(study, series, CTImageStorage, sop_uid, instance_number)
    ds.ImageType = list(image_type)
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = study.study_date
    ds.AcquisitionTime = series.time
    add_plane(ds, study, position, orientation, spacing, thickness)
    ds.ScanOptions = "SURVIEW" if "LOCALIZER" in image_type else "HELICAL_CT"
    ds.KVP = format(exposure.get("kvp", 120.0), "g")
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = format(round(spacing[1] * hu.shape[1], 3), "g")
    ds.DistanceSourceToDetector = "1085.6"
    ds.DistanceSourceToPatient = "595"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "145"
    ds.RotationDirection = "CW"
    ds.ExposureTime = str(int(exposure.get("time_ms", 1000)))
    ds.XRayTubeCurrent = str(int(exposure.get("ma", 300)))
    ds.Exposure = str(int(exposure.get("mas", 300)))
    ds.FilterType = "0"
    ds.GeneratorPower = "36"
    ds.FocalSpots = "1.2"
    ds.ConvolutionKernel = kernel
    ds.CTDIvol = round(float(exposure.get("ctdivol", 55.0)), 2)
    phantom = Dataset()
    phantom.CodeValue = "113690"
    phantom.CodingSchemeDesignator = "DCM"
    phantom.CodeMeaning = "IEC Head Dosimetry Phantom"
    ds.CTDIPhantomTypeCodeSequence = [phantom]
    ds.RescaleIntercept = format(intercept, "g")
    ds.RescaleSlope = "1"
    if "LOCALIZER" not in image_type:
        ds.RescaleType = "HU"
    ds.WindowCenter = format(window[0], "g")
    ds.WindowWidth = format(window[1], "g")
    ds.WindowCenterWidthExplanation = "BRAIN" if window[1] < 200 else "BONE"
    stored = np.clip(np.rint(hu.astype(np.float32) - intercept), -32768, 32767).astype(np.int16)
    add_pixels(ds, stored, signed=True)
    return ds


def mr_image(study: StudyInfo, series: SeriesInfo, sop_uid: str, instance_number: int, pixels: np.ndarray,
             position: Sequence[float], orientation: Sequence[float], spacing: tuple[float, float],
             thickness: float, gap: float, sequence: dict[str, object], contrast_agent: str | None) -> Dataset:
    """An MR Image Storage dataset with unsigned 16-bit pixels (12 bits used)."""
    ds = base_dataset(study, series, MRImageStorage, sop_uid, instance_number)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = study.study_date
    ds.AcquisitionTime = series.time
    add_plane(ds, study, position, orientation, spacing, thickness)
    ds.SpacingBetweenSlices = format(thickness + gap, "g")
    ds.ScanningSequence = sequence["scanning_sequence"]
    ds.SequenceVariant = sequence["sequence_variant"]
    ds.ScanOptions = sequence.get("scan_options", "")
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = sequence["name"]
    ds.RepetitionTime = format(sequence["tr"], "g")
    ds.EchoTime = format(sequence["te"], "g")
    ds.EchoTrainLength = str(sequence.get("etl", 1))
    ds.InversionTime = format(sequence["ti"], "g") if "ti" in sequence else None
    if ds.InversionTime is None:
        del ds.InversionTime
    ds.MagneticFieldStrength = "1.5"
    ds.ImagingFrequency = "63.68"
    ds.ImagedNucleus = "1H"
    ds.NumberOfAverages = "1"
    ds.FlipAngle = format(sequence.get("flip", 90), "g")
    ds.ReceiveCoilName = "Head_32"
    ds.TransmitCoilName = "Body"
    ds.PercentPhaseFieldOfView = "100"
    ds.PixelBandwidth = "200"
    ds.AcquisitionMatrix = [0, int(pixels.shape[1]), int(pixels.shape[0]), 0]
    ds.InPlanePhaseEncodingDirection = "ROW"
    if contrast_agent:
        ds.ContrastBolusAgent = contrast_agent
        ds.ContrastBolusRoute = "IV"
        ds.ContrastBolusVolume = "7.5"
        ds.ContrastBolusIngredient = "GADOLINIUM"
    window_center = float(np.percentile(pixels, 99.0)) / 2 + 1
    ds.WindowCenter = format(round(window_center), "g")
    ds.WindowWidth = format(round(window_center * 2), "g")
    add_pixels(ds, np.clip(pixels, 0, 4095).astype(np.uint16), signed=False, bits_stored=12)
    return ds


def sc_image(study: StudyInfo, series: SeriesInfo, sop_uid: str, instance_number: int, gray: np.ndarray,
             image_type: Sequence[str]) -> Dataset:
    """A Secondary Capture Image Storage dataset with an 8-bit MONOCHROME2 image."""
    ds = base_dataset(study, series, SecondaryCaptureImageStorage, sop_uid, instance_number)
    ds.ImageType = list(image_type)
    ds.ConversionType = "WSD"
    ds.DateOfSecondaryCapture = study.study_date
    ds.TimeOfSecondaryCapture = series.time
    ds.SecondaryCaptureDeviceManufacturer = MANUFACTURER
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(v) for v in gray.shape)
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(gray, dtype=np.uint8).tobytes()
    ds["PixelData"].VR = "OB"
    ds.BurnedInAnnotation = "YES"
    return ds


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
