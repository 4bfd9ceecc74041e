"""A minimal receiving PACS for the demo: a pynetdicom Storage SCP that keeps what it is sent.

It plays the part of the hospital PACS that gets our SR and overlays back. Files are written as received
(`<folder>/<StudyInstanceUID>/<SOPInstanceUID>.dcm`, UIDs sanitised) and listed by `received()`, with the
files an earlier run left in a study's folder once `load_archived` is asked for them, as a PACS keeps its
archive.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicom_node.receiver.store import sanitise_uid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    study_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    path: Path
    received_at: float  # time.monotonic(); -inf for a file an earlier run left in the folder


class DemoPacs:
    def __init__(self, ae_title: str, host: str, port: int, folder: Path) -> None:
        self.ae_title = ae_title
        self.host = host
        self.port = port
        self.folder = Path(folder)
        self._received: dict[str, Received] = {}
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        self._server = ae.start_server(
            (self.host, self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        log.info("demo PACS listening", extra={"ae_title": self.ae_title, "port": self.port})

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def load_archived(self, study_uid: str) -> None:
        """List the files an earlier run stored for `study_uid` (header only), received before this run."""
        for path in sorted((self.folder / sanitise_uid(study_uid)).glob("*.dcm")):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True,
                                     specific_tags=["StudyInstanceUID", "SOPClassUID", "SOPInstanceUID"])
                item = Received(str(ds.StudyInstanceUID), str(ds.SOPClassUID), str(ds.SOPInstanceUID), path, -math.inf)
            except (InvalidDicomError, OSError, AttributeError, ValueError):
                continue  # not a file this PACS wrote: left alone
            with self._lock:
                self._received.setdefault(item.sop_instance_uid, item)

    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received.values())

    def _on_store(self, event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        study_uid = str(ds.StudyInstanceUID)
        sop_uid = str(ds.SOPInstanceUID)
        folder = self.folder / sanitise_uid(study_uid)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{sanitise_uid(sop_uid)}.dcm"
        ds.save_as(path, enforce_file_format=True)
        with self._lock:
            self._received[sop_uid] = Received(study_uid, str(ds.SOPClassUID), sop_uid, path, time.monotonic())
        return 0x0000
