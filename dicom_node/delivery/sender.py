"""The sender: C-STORE SCU of pending deliveries, one association per destination per batch.

A service object (`start()`/`stop()`) for `serve`, with one thread per destination so that a destination
that is down or stalls (a peer that accepts the TCP connection and then says nothing holds a thread for
the ACSE/DIMSE timeouts) never holds back the others. `run_once()` does one pass over every destination,
each in its own thread, and is what tests call.

A permanent refusal (see `state.is_refusal`, a permanent A-ASSOCIATE-RJ, a refused presentation context)
fails the delivery at once with the reason; anything else is retried with backoff. Once every destination
has an output, its file leaves the outbox. Outputs have deterministic SOP Instance UIDs, so sending one
twice (a crash between the C-STORE response and the commit) is a no-op at the PACS.

Each batch is claimed first (`state.claim_due`, in the name of `owner`, this process by default) and its
claims renewed while it is sent, so several `serve` processes on one database share the deliveries and
never send one twice; outcomes are recorded only for claims this sender still holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.association import Association
from pynetdicom.status import code_to_category

from dicom_node.config import Config
from dicom_node.db.engine import Database, utcnow
from dicom_node.delivery import state
from dicom_node.delivery.association import make_ae, open_association
from dicom_node.delivery.state import DueDelivery
from dicom_node.errors import DeliveryError, DeliveryRefused
from dicom_node.runtime import ownership
from dicom_node.runtime.loops import ServiceLoops

log = logging.getLogger(__name__)

_OK = {"Success", "Warning"}
_MAX_CONTEXTS = 120  # of the 128 presentation contexts an association may propose


@dataclass(frozen=True)
class Outcome:
    """How one delivery attempt ended: sent (`error` empty), or why not, and whether retrying can help."""

    error: str = ""
    permanent: bool = False


SENT = Outcome()


_UNCONFIGURED = ""  # the loop key for deliveries to destinations no longer in the configuration


class Sender:
    def __init__(self, config: Config, db: Database, owner: str | None = None) -> None:
        self.config = config
        self.db = db
        self.owner = owner or ownership.process_id()  # `claimed_by` of the deliveries this sender holds
        self.lease_seconds = config.delivery.lease_seconds
        self.outbox = Path(config.storage.outbox)
        self._loops = ServiceLoops("sender", config.delivery.poll_seconds)

    # -- service -------------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            with self.db.write() as session:  # files a crash left behind after their last delivery
                state.remove_delivered_files(session, self.outbox)
        except Exception:
            log.exception("outbox sweep failed")
        names = [d.name for d in self.config.destinations]
        self._loops.start([*names, _UNCONFIGURED], self.run_destination)

    def stop(self, timeout: float = 30.0) -> None:
        self._loops.stop(timeout)

    # -- passes --------------------------------------------------------------------------------------
    def run_once(self) -> int:
        """One pass over every destination with due deliveries, all at once; returns how many were sent."""
        configured = {d.name for d in self.config.destinations}
        with self.db.read() as session:
            due = {item.destination for item in state.due(session, utcnow())}
        keys = sorted({name if name in configured else _UNCONFIGURED for name in due})
        if not keys:
            return 0
        with ThreadPoolExecutor(max_workers=len(keys), thread_name_prefix="sender") as pool:
            return sum(pool.map(self.run_destination, keys))

    def run_destination(self, name: str) -> int:
        """One pass for one destination (`""`: every destination that is not configured)."""
        return self._send_to(name or None)

    def _send_to(self, dest_name: str | None) -> int:
        configured = [d.name for d in self.config.destinations]
        if dest_name is not None and dest_name not in configured:
            dest_name = None
        exclude = configured if dest_name is None else []
        with self.db.read() as session:  # a cheap look first: claiming takes the write lock
            if not state.due(session, utcnow(), limit=1, destination=dest_name, exclude=exclude):
                return 0
        with self.db.write() as session:
            items = state.claim_due(
                session, self.owner, self.lease_seconds, utcnow(), limit=_MAX_CONTEXTS * 4,
                destination=dest_name, exclude=exclude,
            )
        if not items:
            return 0
        if dest_name is None:
            self._record({i.delivery_id: Outcome(f"destination {i.destination!r} is not configured") for i in items}, items)
            return 0
        return self._send_batch(dest_name, items)

    def _send_batch(self, dest_name: str, items: list[DueDelivery]) -> int:
        dest = self.config.destination(dest_name)
        classes = sorted({i.sop_class_uid for i in items})[:_MAX_CONTEXTS]
        later = [i.delivery_id for i in items if i.sop_class_uid not in classes]
        if later:  # the rest: next batch, by whoever claims them then
            with self.db.write() as session:
                state.unclaim(session, later, self.owner)
        items = [i for i in items if i.sop_class_uid in classes]
        contexts = [(c, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]) for c in classes]
        # the claims are held from here until the outcomes are recorded, however long one C-STORE waits for
        # its answer (up to the DIMSE timeout): a lapsed lease lets another serve send the object again
        held = _Heartbeat(self._renew, [i.delivery_id for i in items], self.lease_seconds / 3)
        outcomes: dict[int, Outcome] = {}
        assoc: Association | None = None
        try:
            try:
                assoc = open_association(make_ae(self.config), dest, contexts)
            except DeliveryRefused as exc:
                outcomes = {i.delivery_id: Outcome(str(exc), permanent=True) for i in items}
            except (DeliveryError, OSError) as exc:
                outcomes = {i.delivery_id: Outcome(str(exc)) for i in items}
            if assoc is not None:
                accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
                for item in items:
                    if self._loops.stopping:
                        break
                    if held.lost(item.delivery_id):
                        continue  # its lease ran out and another sender has it now: do not send it as well
                    outcomes[item.delivery_id] = self._store_one(assoc, item, accepted)
                    if not assoc.is_established:
                        break
            held.stop()
            for item in items:  # a claim taken over is the other sender's to record
                if not held.lost(item.delivery_id):
                    outcomes.setdefault(item.delivery_id, Outcome("association ended before this object was sent"))
            self._record(outcomes, items)
        finally:
            held.stop()
            if assoc is not None and assoc.is_established:
                assoc.release()
        n_sent = sum(1 for o in outcomes.values() if o == SENT)
        n_refused = sum(1 for o in outcomes.values() if o.permanent)
        log.info(
            "delivery batch",
            extra={
                "destination": dest_name,
                "sent": n_sent,
                "refused": n_refused,
                "failed": len(outcomes) - n_sent - n_refused,
            },
        )
        return n_sent

    def _store_one(self, assoc: Association, item: DueDelivery, accepted: set[str]) -> Outcome:
        if item.sop_class_uid not in accepted:
            name = UID(item.sop_class_uid).name
            return Outcome(f"destination refused the presentation context for {name} ({item.sop_class_uid})", True)
        try:
            ds = pydicom.dcmread(self.outbox / item.path)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            return Outcome(f"cannot read output file {item.path}: {exc}")
        try:
            status = assoc.send_c_store(ds)
        except (ValueError, RuntimeError) as exc:
            return Outcome(f"not sent: {exc}")
        if not status or "Status" not in status:
            return Outcome("no C-STORE response (timeout or abort)")
        code = int(status.Status)
        category = code_to_category(code)
        if category in _OK:
            return SENT
        if state.is_refusal(code):
            return Outcome(f"C-STORE refused: status 0x{code:04X} ({_status_text(code)})", permanent=True)
        return Outcome(f"C-STORE status 0x{code:04X} ({category})")

    def _renew(self, delivery_ids: list[int]) -> set[int]:
        """Keep the claims of a batch that runs long; returns those of `delivery_ids` lost meanwhile (not
        sent, and their outcome not recorded: `_record`)."""
        now = utcnow()
        try:
            with self.db.write() as session:
                held = state.renew_claims(session, delivery_ids, self.owner, now + timedelta(seconds=self.lease_seconds))
        except Exception:  # a transient database error: the next item tries again
            log.warning("delivery claims not renewed", exc_info=True)
            return set()
        lost = set(delivery_ids) - held
        if lost:
            log.warning("delivery claims taken over during a batch", extra={"deliveries": len(lost)})
        return lost

    def _record(self, outcomes: dict[int, Outcome], items: list[DueDelivery]) -> None:
        now = utcnow()
        sent = [i for i in items if outcomes.get(i.delivery_id) == SENT]
        output_ids = {i.output_id for i in sent}
        with self.db.write() as session:
            for delivery_id, outcome in outcomes.items():
                if outcome == SENT:
                    state.mark_sent(session, delivery_id, now, self.owner)
                else:
                    state.mark_attempt_failed(
                        session, self.config.delivery.retry, delivery_id, outcome.error, now, self.owner,
                        permanent=outcome.permanent,
                    )
            session.flush()
            for study_id in {i.study_id for i in sent}:
                state.update_study_delivered(session, study_id)
        if output_ids:
            with self.db.write() as session:
                state.remove_delivered_files(session, self.outbox, output_ids)


class _Heartbeat:
    """Renews a batch's claims every `every` seconds from a thread, from its creation until `stop`; `lost`
    says whether a claim was found taken over (its lease had run out anyway)."""

    def __init__(self, renew: Callable[[list[int]], set[int]], ids: list[int], every: float) -> None:
        self._renew, self._ids, self._every = renew, ids, max(0.05, every)
        self._lost: set[int] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delivery-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._every):
            lost = self._renew(self._ids)
            with self._lock:
                self._lost |= lost

    def lost(self, delivery_id: int) -> bool:
        with self._lock:
            return delivery_id in self._lost

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def _status_text(code: int) -> str:
    if code == 0x0122:
        return "SOP class not supported"
    if code == 0x0124:
        return "not authorised"
    return "dataset does not match SOP class"
