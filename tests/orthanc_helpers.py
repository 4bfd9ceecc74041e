"""A throw-away Orthanc (the PACS in integration tests) and DCMTK storescp, on free ports.

    with OrthancServer(tmp_path / "orthanc", modalities={"NODE": ("DICOMNODE", "127.0.0.1", 11112)}) as pacs:
        pacs.dicom_port, pacs.aet            # where our sender stores
        pacs.get("/instances")               # REST API (JSON)
        pacs.post("/modalities/NODE/store", ["<orthanc study id>"])  # route a study to our node

Orthanc runs with its own JSON config: no remote access, no authentication, storage and index in the
given folder, no plugins unless `dicomweb=True`, which loads the Debian `orthanc-dicomweb` plugin with its
API under `/dicom-web/` (what the real-viewer test serves OHIF from). `TCP_NODELAY=1` is irrelevant to
Orthanc but set for uniformity.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from conftest import free_port, stop_process

ORTHANC = Path("/usr/sbin/Orthanc")
STORESCP = Path("/usr/bin/storescp")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


class OrthancServer:
    def __init__(
        self,
        folder: Path,
        aet: str = "ORTHANC",
        modalities: dict[str, tuple[str, str, int]] | None = None,
        start_timeout: float = 30.0,
        dicomweb: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.aet = aet
        self.modalities = modalities or {}
        self.start_timeout = start_timeout
        self.dicomweb = dicomweb
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return ORTHANC.exists()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "Name": "dicom-node-test",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "StorageCompression": False,
            "Plugins": [],
            "DicomModalities": {name: list(spec) for name, spec in self.modalities.items()},
            "DicomScuTimeout": 10,
            "StableAge": 1,
        }
        if self.dicomweb:
            config["Plugins"] = [str(DICOMWEB_PLUGIN)]
            config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": True}
        return config

    def start(self) -> OrthancServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        cfg = self.folder / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=2))
        log = (self.folder / "orthanc.log").open("wb")
        self.process = subprocess.Popen(
            [str(ORTHANC), str(cfg)], stdout=log, stderr=subprocess.STDOUT, env=_env()
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start: {self.log_tail()}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {self.start_timeout}s: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        path = self.folder / "orthanc.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def stop(self) -> None:
        stop_process(self.process, grace=15)
        self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- REST ----------------------------------------------------------------------------------------
    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, body: Any) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
        return json.loads(raw) if raw.strip() else None

    def upload(self, path: Path) -> dict[str, Any]:
        """Store a DICOM file through the REST API (POST /instances)."""
        return self.post("/instances", Path(path).read_bytes())

    def sop_instance_uids(self) -> set[str]:
        uids = set()
        for instance_id in self.get("/instances"):
            tags = self.get(f"/instances/{instance_id}/simplified-tags")
            uids.add(tags["SOPInstanceUID"])
        return uids


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


class StoreSCP:
    """DCMTK `storescp` writing what it receives into `folder` (call by absolute path, TCP_NODELAY=1)."""

    def __init__(self, folder: Path, aet: str = "DEMO-PACS", port: int | None = None) -> None:
        self.folder = Path(folder)
        self.aet = aet
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return STORESCP.exists() and shutil.which(str(STORESCP)) is not None

    def start(self) -> StoreSCP:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(STORESCP), "--aetitle", self.aet, "--output-directory", str(self.folder), str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_env(),
        )
        wait_listening(self.port)
        return self

    def received(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def stop(self) -> None:
        stop_process(self.process, grace=10)
        self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
