"""The sender: C-STORE SCU of pending deliveries, one association per destination per batch.

A service object (`start()`/`stop()`) for `serve`; `run_once()` does one pass and is what tests call.
Outputs have deterministic SOP Instance UIDs, so sending one twice (a crash between the C-STORE
response and the commit) is a no-op at the PACS.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.association import Association
from pynetdicom.status import code_to_category

from dicom_node.config import Config
from dicom_node.db.engine import Database, utcnow
from dicom_node.delivery import state
from dicom_node.delivery.association import make_ae, open_association
from dicom_node.delivery.state import DueDelivery
from dicom_node.errors import DeliveryError

log = logging.getLogger(__name__)

_OK = {"Success", "Warning"}
_MAX_CONTEXTS = 120  # of the 128 presentation contexts an association may propose


class Sender:
    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db
        self.outbox = config.storage.outbox
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- service -------------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.run_once()
            except Exception:  # a database hiccup must not end the sender
                log.exception("sender pass failed")
                sent = 0
            if not sent:
                self._stop.wait(self.config.delivery.poll_seconds)

    # -- one pass ------------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Send every due pending delivery; returns how many were sent successfully."""
        with self.db.read() as session:
            batch = state.due(session, utcnow())
        if not batch:
            return 0
        by_dest: dict[str, list[DueDelivery]] = defaultdict(list)
        for item in batch:
            by_dest[item.destination].append(item)
        sent = 0
        for dest_name, items in by_dest.items():
            if self._stop.is_set():
                break
            sent += self._send_to(dest_name, items)
        return sent

    def _send_to(self, dest_name: str, items: list[DueDelivery]) -> int:
        outcomes: dict[int, str] = {}  # delivery id → "" (sent) or the error
        try:
            dest = self.config.destination(dest_name)
        except KeyError:
            outcomes = {i.delivery_id: f"destination {dest_name!r} is not configured" for i in items}
            self._record(outcomes, items)
            return 0
        items = items[: _MAX_CONTEXTS * 4]
        classes = sorted({i.sop_class_uid for i in items})[:_MAX_CONTEXTS]
        contexts = [(c, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]) for c in classes]
        try:
            assoc = open_association(make_ae(self.config), dest, contexts)
        except (DeliveryError, OSError) as exc:
            self._record({i.delivery_id: str(exc) for i in items}, items)
            return 0
        try:
            for item in items:
                if item.sop_class_uid not in classes:
                    continue  # next batch
                outcomes[item.delivery_id] = self._store_one(assoc, item)
                if not assoc.is_established:
                    break
        finally:
            if assoc.is_established:
                assoc.release()
        for item in items:
            if item.delivery_id not in outcomes and item.sop_class_uid in classes:
                outcomes[item.delivery_id] = "association ended before this object was sent"
        self._record(outcomes, items)
        n_sent = sum(1 for e in outcomes.values() if not e)
        log.info(
            "delivery batch",
            extra={"destination": dest_name, "sent": n_sent, "failed": len(outcomes) - n_sent},
        )
        return n_sent

    def _store_one(self, assoc: Association, item: DueDelivery) -> str:
        path = Path(self.outbox) / item.path
        try:
            ds = pydicom.dcmread(path)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            return f"cannot read output file {item.path}: {exc}"
        try:
            status = assoc.send_c_store(ds)
        except (ValueError, RuntimeError) as exc:  # no accepted context for this object
            return f"not sent: {exc}"
        if not status or "Status" not in status:
            return "no C-STORE response (timeout or abort)"
        code = int(status.Status)
        category = code_to_category(code)
        if category in _OK:
            return ""
        return f"C-STORE status 0x{code:04X} ({category})"

    def _record(self, outcomes: dict[int, str], items: list[DueDelivery]) -> None:
        now = utcnow()
        studies = {i.study_id for i in items if outcomes.get(i.delivery_id) == ""}
        with self.db.write() as session:
            for delivery_id, error in outcomes.items():
                if error:
                    state.mark_attempt_failed(session, self.config.delivery, delivery_id, error, now)
                else:
                    state.mark_sent(session, delivery_id, now)
            session.flush()
            for study_id in studies:
                state.update_study_delivered(session, study_id)
