"""Helpers for receiver tests: a receiver config in a temp folder, small generated CT files, DCMTK calls.

Generated data only (no patient data): a tiny CT series with pydicom, uncompressed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from conftest import free_port, write_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicom_node.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
STORESCU = "/usr/bin/storescu"
ECHOSCU = "/usr/bin/echoscu"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


CALLERS = [
    {"ae_title": "STORESCU", "host": "127.0.0.0/8"},
    {"ae_title": "ECHOSCU", "host": "127.0.0.0/8"},
    {"ae_title": "TESTSCU"},
    {"ae_title": "FARAWAY", "host": "10.0.0.0/8"},
]


def make_config(tmp: Path, port: int | None = None, **sections: Any) -> Config:
    """A validated Config (through the real loader) with everything under `tmp`."""
    node = {"port": port or free_port(), "acse_timeout": 5, "dimse_timeout": 10, "network_timeout": 10}
    node.update(sections.pop("node", {}))
    storage = {"min_free_mb": 0, **sections.pop("storage", {})}
    path = write_config(tmp, node=node, callers=sections.pop("callers", CALLERS), storage=storage, **sections)
    return load_config(path)


def ct_dataset(
    study_uid: str, series_uid: str, index: int, rows: int = 32, columns: int = 32, seed: int = 0
) -> Dataset:
    """One small generated axial CT slice with file meta, ready to save or send."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = CTImageStorage
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = "SYNTH-0001"
    ds.PatientName = "Synthetic^Phantom"
    ds.StudyDate = "20240101"
    ds.AccessionNumber = "ACC1"
    ds.Modality = "CT"
    ds.BodyPartExamined = "HEAD"
    ds.SeriesDescription = "Head 5mm"
    ds.SeriesNumber = 2
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 5.0 * index]
    ds.SliceThickness = 5.0
    ds.PixelSpacing = [0.5, 0.5]
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    rng = np.random.default_rng(seed + index)
    ds.PixelData = rng.integers(0, 2000, size=(rows, columns), dtype=np.int16).tobytes()
    return ds


def ct_series(n: int, rows: int = 32, columns: int = 32, study_uid: str | None = None) -> list[Dataset]:
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    return [ct_dataset(study_uid, series_uid, i, rows, columns) for i in range(n)]


def write_series(folder: Path, datasets: list[Dataset]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(datasets):
        p = folder / f"{i:05d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def storescu(port: int, files: list[Path] | Path, *extra: str, calling: str = "STORESCU",
             called: str = "DICOMNODE", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run DCMTK's storescu (absolute path, TCP_NODELAY=1) against 127.0.0.1:port."""
    paths = [files] if isinstance(files, Path) else files
    cmd = [STORESCU, "-aet", calling, "-aec", called, *extra, "127.0.0.1", str(port), *map(str, paths)]
    return subprocess.run(cmd, check=False, env=DCMTK_ENV, capture_output=True, text=True, timeout=timeout)


def files_under(folder: Path) -> list[Path]:
    """Final instance files (not temporaries) under a store folder."""
    return sorted(p for p in folder.rglob("*.dcm") if not p.name.startswith("."))
