"""What every output object says about who made it: the node (EquipmentInfo) and the algorithm.

IHE Radiology AI Results (AIR): the algorithm is listed in the Contributing Equipment Sequence with
purpose of reference (Newcode1, 99IHE, "Processing Algorithm"). highdicom's `ContributingEquipment`
accepts only the DCM purposes, so the item is built with one of those and its purpose replaced.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes

from dicom_node import __version__
from dicom_node.identity import MANUFACTURER
from dicom_node.ml.analysis import ModelInfo
from dicom_node.outputs import codes, uids, wording
from dicom_node.outputs.headers import carry_deidentification


@dataclass(frozen=True)
class EquipmentInfo:
    """The node that writes the outputs (General Equipment module of every output object)."""

    institution_name: str | None = None
    institutional_department_name: str | None = None
    station_name: str | None = None
    software_version: str = __version__


def algorithm_equipment(model: ModelInfo, device: EquipmentInfo | None) -> Dataset:
    """The Contributing Equipment item naming the algorithm (IHE AIR "Processing Algorithm")."""
    item = hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=dcm_codes.DCM.ProcessingEquipment,
        manufacturer_model_name=wording.model_name_lo(model.display_name),
        software_versions=model.version[:64],
        institution_name=(device.institution_name[:64] if device and device.institution_name else None),
        contribution_description=f"AI algorithm {model.name} {model.version}"[:1024],
    )
    item.PurposeOfReferenceCodeSequence = [codes.PROCESSING_ALGORITHM]
    item.DeviceUID = uids.device_uid(model.name, model.manifest_sha256)
    return item


def finish_common(
    ds: Dataset, model: ModelInfo, device: EquipmentInfo | None, series_description: str, source: Dataset
) -> None:
    """Attributes shared by SR and overlays, set after the highdicom constructor has run."""
    carry_deidentification(source, ds)
    ds.ContributingEquipmentSequence = [*ds.get("ContributingEquipmentSequence", []),
                                        algorithm_equipment(model, device)]
    ds.CodingSchemeIdentificationSequence = codes.coding_scheme_identification()
    ds.SeriesDescription = series_description[:64]
    ds.ManufacturerModelName = wording.model_name_lo(model.display_name)
    ds.SoftwareVersions = [f"dicom-node {device.software_version if device else __version__}"[:64],
                           model.version[:64]]
    if device is not None:
        if device.institution_name:
            ds.InstitutionName = device.institution_name[:64]
        if device.institutional_department_name:
            ds.InstitutionalDepartmentName = device.institutional_department_name[:64]
        if device.station_name:
            ds.StationName = device.station_name[:16]


def series_number(model: ModelInfo, kind: str) -> int:
    """A stable series number for a model's output series: SR odd and overlays even in 9000-9999, SEG in
    8000-8999."""
    base = 9000 + 2 * (zlib.crc32(model.name.encode()) % 500)
    if kind == uids.SEG:
        return base - 1000
    return base + 1 if kind == uids.SR else base
