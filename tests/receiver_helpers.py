"""Helpers for receiver tests: free ports, polling, a config in a temp folder, small generated CT files.

Generated data only (no patient data): a tiny CT series with pydicom, uncompressed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from dicom_node.config import Config, parse_config

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
STORESCU = "/usr/bin/storescu"
ECHOSCU = "/usr/bin/echoscu"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, msg: str = "condition", interval: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy; fail the test with `msg` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {msg}")
        time.sleep(interval)


def config_dict(tmp: Path, port: int, **sections: dict[str, Any]) -> dict[str, Any]:
    """A config (as TOML data) with everything under `tmp`; `sections` replace/extend whole tables."""
    (tmp / "models").mkdir(exist_ok=True)
    data: dict[str, Any] = {
        "node": {"ae_title": "DICOMNODE", "host": "127.0.0.1", "port": port, "acse_timeout": 5, "dimse_timeout": 10,
                 "network_timeout": 10},
        "callers": [
            {"ae_title": "STORESCU", "host": "127.0.0.0/8"},
            {"ae_title": "ECHOSCU", "host": "127.0.0.0/8"},
            {"ae_title": "TESTSCU"},
            {"ae_title": "FARAWAY", "host": "10.0.0.0/8"},
        ],
        "database": {"url": "sqlite:///var/node.db"},
        "storage": {"path": "var/store", "quarantine": "var/quarantine", "outbox": "var/outbox", "min_free_mb": 0},
        "assembly": {"quiet_seconds": 30, "complete_on_release": True, "check_interval_seconds": 0.2},
        "models": {"path": "models"},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(name), dict):
            data[name] = {**data[name], **value}
        else:
            data[name] = value
    return data


def make_config(tmp: Path, port: int | None = None, **sections: dict[str, Any]) -> Config:
    return parse_config(config_dict(tmp, port if port is not None else free_port(), **sections), tmp)


def toml_text(data: dict[str, Any]) -> str:
    """Minimal TOML writer for the config dicts above (tables, arrays of tables, scalars)."""

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines: list[str] = []
    for name, value in data.items():
        if isinstance(value, list):
            for item in value:
                lines.append(f"[[{name}]]")
                lines += [f"{k} = {scalar(v)}" for k, v in item.items()]
        else:
            lines.append(f"[{name}]")
            lines += [f"{k} = {scalar(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"


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
    return subprocess.run(cmd, env=DCMTK_ENV, capture_output=True, text=True, timeout=timeout)


def files_under(folder: Path) -> list[Path]:
    """Final instance files (not temporaries) under a store folder."""
    return sorted(p for p in folder.rglob("*.dcm") if not p.name.startswith("."))
