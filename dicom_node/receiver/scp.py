"""The C-STORE / C-ECHO service class provider.

Handlers stay thin: check access, write the raw bytes durably, index them, answer. Success (0x0000) is
sent only after the file is fsynced and its rows are committed; a full disk or a database error answers
0xA700 and leaves no file without a row; bytes that do not parse answer 0xC210 and go to quarantine; a
dataset whose SOP Class is not its presentation context's answers 0xA900, one that would inflate beyond
the limit 0xA700, and one whose series or instance UID the node holds under another study 0xC212, each
with one log line saying why.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from dicom_node.config import Config
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Association
from dicom_node.errors import (
    ConflictingIdentifiersError,
    DatasetTooLargeError,
    StoreError,
    UnparseableDatasetError,
)
from dicom_node.receiver.access import audit, check_association, server_ssl_context
from dicom_node.receiver.ingest import parse_instance, record_instance
from dicom_node.receiver.reconcile import reconcile_store
from dicom_node.receiver.store import InstanceStore, instance_relpath
from dicom_node.runtime import ownership

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_SOP_CLASS_MISMATCH = 0xA900  # "Data Set does not match SOP Class"
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_CONFLICTING_IDENTIFIERS = 0xC212  # dicom-node: series or instance UID held under another study

TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
]

AssociationEndCallback = Callable[[str, bool], None]  # (association_id, released)


class ReceiverObserver(Protocol):
    """Told of every association request and every C-STORE answer (audit trail, metrics); must not raise."""

    def association(self, accepted: bool, calling_ae: str, called_ae: str, peer: str, reason: str) -> None: ...

    def stored(self, status: int, seconds: float) -> None: ...


@dataclass
class _Receiver:
    """State shared by the handlers of one running receiver."""

    config: Config
    db: Database
    store: InstanceStore
    on_association_end: AssociationEndCallback | None
    observers: Sequence[ReceiverObserver] = ()
    _assoc_ids: dict[int, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _tell(self, method: str, *args: object) -> None:
        for observer in self.observers:
            try:
                getattr(observer, method)(*args)
            except Exception:  # an observer's failure never changes an answer to a peer
                log.exception("receiver observer failed", extra={"observer": type(observer).__name__})

    def association_id(self, event: Event) -> str | None:
        with self._lock:
            return self._assoc_ids.get(id(event.assoc))

    # -- association life cycle ------------------------------------------------------------------

    def on_conn_open(self, event: Event) -> None:
        ae = event.assoc.ae
        in_use = len(ae.active_associations)
        if in_use >= ae.maximum_associations:
            log.warning("all association slots in use: new connections are refused until one ends",
                        extra={"slots": ae.maximum_associations, "peer": str(event.assoc.requestor.address)})
        sock = event.assoc.dul.socket
        raw = getattr(sock, "socket", None) if sock is not None else None
        if raw is not None:
            try:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:
                log.debug("cannot set TCP_NODELAY", extra={"error": str(exc)})

    def on_requested(self, event: Event) -> None:
        assoc = event.assoc
        rq = assoc.requestor.primitive
        if rq is None:  # pynetdicom stores the A-ASSOCIATE-RQ before it triggers EVT_REQUESTED
            raise RuntimeError("EVT_REQUESTED without the requestor's A-ASSOCIATE primitive")
        calling, called = str(rq.calling_ae_title), str(rq.called_ae_title)
        address = str(assoc.requestor.address)
        rejection = check_association(self.config, calling, called, address, self.store.has_room)
        if rejection is None:
            return
        audit(False, calling, called, address, rejection.reason)
        self._tell("association", False, calling, called, address, rejection.reason)
        assoc.acse.send_reject(*rejection.rsd)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def on_accepted(self, event: Event) -> None:
        assoc = event.assoc
        calling, address = assoc.requestor.ae_title.strip(), str(assoc.requestor.address)
        audit(True, calling, self.config.node.ae_title, address)
        self._tell("association", True, calling, self.config.node.ae_title, address, "")
        assoc_id = uuid.uuid4().hex
        try:
            with self.db.write() as session:
                session.add(Association(id=assoc_id, owner=ownership.process_id(), calling_ae=calling[:16],
                                        peer_address=address[:64], started_at=utcnow()))
        except SQLAlchemyError as exc:
            log.error("cannot record association", extra={"calling_ae": calling, "error": str(exc)})
            return
        with self._lock:
            self._assoc_ids[id(assoc)] = assoc_id

    def on_released(self, event: Event) -> None:
        self._end(event, released=True)

    def on_aborted(self, event: Event) -> None:
        self._end(event, released=False)

    def on_conn_close(self, event: Event) -> None:
        self._end(event, released=bool(event.assoc.is_released))

    def _end(self, event: Event, released: bool) -> None:
        with self._lock:
            assoc_id = self._assoc_ids.pop(id(event.assoc), None)
        if assoc_id is None:
            return
        try:
            with self.db.write() as session:
                session.execute(
                    update(Association)
                    .where(Association.id == assoc_id)
                    .values(ended_at=utcnow(), released=released)
                )
        except SQLAlchemyError as exc:
            log.error("cannot record association end", extra={"association_id": assoc_id, "error": str(exc)})
        log.info("association ended", extra={"association_id": assoc_id, "released": released})
        if self.on_association_end is not None:
            try:
                self.on_association_end(assoc_id, released)
            except Exception:
                log.exception("association-end callback failed", extra={"association_id": assoc_id})

    # -- DIMSE --------------------------------------------------------------------------------------

    def on_echo(self, event: Event) -> int:
        return STATUS_SUCCESS

    def on_store(self, event: Event) -> int:
        started = time.monotonic()
        status = self._store(event)
        self._tell("stored", status, time.monotonic() - started)
        return status

    def _store(self, event: Event) -> int:
        calling = event.assoc.requestor.ae_title.strip()
        if not self.store.has_room():
            log.error("store refused: free disk under storage.min_free_mb", extra={"calling_ae": calling})
            return STATUS_OUT_OF_RESOURCES
        data = event.encoded_dataset()
        try:
            parsed = parse_instance(data)
        except DatasetTooLargeError as exc:
            log.warning("store refused: %s", exc, extra={"calling_ae": calling})
            return STATUS_OUT_OF_RESOURCES
        except UnparseableDatasetError as exc:
            try:
                self.store.quarantine(data, str(exc), calling)
            except StoreError as qexc:
                log.error("cannot quarantine unparseable dataset", extra={"error": str(qexc)})
                return STATUS_OUT_OF_RESOURCES
            return STATUS_CANNOT_UNDERSTAND

        context_class = str(event.context.abstract_syntax)
        if parsed.fields["sop_class_uid"] != context_class:
            log.warning("store refused: dataset's SOP Class does not match the presentation context",
                        extra={"calling_ae": calling, "sop_class_uid": parsed.fields["sop_class_uid"],
                               "context": context_class})
            return STATUS_SOP_CLASS_MISMATCH
        relpath = instance_relpath(parsed.study_uid, parsed.series_uid, parsed.sop_instance_uid)
        existed = self.store.exists(relpath)
        try:
            self.store.write(relpath, data)
        except StoreError as exc:
            log.error("store failed", extra={"sop_instance_uid": parsed.sop_instance_uid, "error": str(exc)})
            return STATUS_OUT_OF_RESOURCES
        try:
            recorded = record_instance(
                self.db, parsed, relpath, len(data), calling, self.association_id(event)
            )
        except ConflictingIdentifiersError as exc:
            if not existed:
                self.store.remove(relpath)
            log.warning("store refused: %s", exc, extra={"calling_ae": calling, "study_uid": parsed.study_uid})
            return STATUS_CONFLICTING_IDENTIFIERS
        except (SQLAlchemyError, OSError) as exc:
            if not existed:  # a duplicate's file is complete and still has its committed row
                self.store.remove(relpath)
            log.error(
                "index failed, instance not stored",
                extra={"sop_instance_uid": parsed.sop_instance_uid, "error": str(exc)},
            )
            return STATUS_OUT_OF_RESOURCES
        if recorded.replaced_path is not None:
            self.store.remove(recorded.replaced_path)
        return STATUS_SUCCESS


class ReceiverHandle:
    """A running receiver; `shutdown()` stops accepting and lets in-flight associations finish."""

    def __init__(self, ae: AE, server: ThreadedAssociationServer, receiver: _Receiver | None = None) -> None:
        self._ae = ae
        self._server = server
        self._receiver = receiver
        host, port = server.server_address[:2]
        self.host: str = str(host)
        self.port: int = int(port)

    def update_config(self, config: Config) -> None:
        """Apply a changed configuration to the next association requests (callers); the listening
        address, AE title and TLS stay as they were started."""
        if self._receiver is not None:
            self._receiver.config = config

    def active_associations(self) -> int:
        return len(self._server.active_associations)

    def shutdown(self, grace_seconds: float = 10.0) -> None:
        self._server.shutdown()
        deadline = time.monotonic() + grace_seconds
        while self._server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in self._server.active_associations:
            log.warning("aborting association still open at shutdown", extra={"peer": assoc.requestor.address})
            assoc.abort()
        log.info("receiver stopped", extra={"port": self.port})


def build_ae(config: Config) -> AE:
    node = config.node
    ae = AE(ae_title=node.ae_title)
    ae.maximum_associations = node.max_associations
    ae.maximum_pdu_size = node.max_pdu
    ae.acse_timeout = node.acse_timeout
    ae.dimse_timeout = node.dimse_timeout
    ae.network_timeout = node.network_timeout
    ae.require_called_aet = False  # checked in EVT_REQUESTED, with an audit line
    ae.require_calling_aet = []
    ae.add_supported_context(Verification, TRANSFER_SYNTAXES)
    for cx in AllStoragePresentationContexts:
        if cx.abstract_syntax is None:
            raise RuntimeError("pynetdicom storage presentation context without an abstract syntax")
        ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES)
    return ae


def start_receiver(
    config: Config,
    db: Database,
    on_association_end: AssociationEndCallback | None = None,
    store: InstanceStore | None = None,
    observers: Sequence[ReceiverObserver] = (),
) -> ReceiverHandle:
    """Start listening on `config.node.host:port` in background threads and return at once."""
    store = store or InstanceStore(config.storage)
    store.sweep_temporaries()  # nothing receives yet: any temporary there was left by a killed run
    reconcile_store(store, db)  # and any complete file without a row was never acknowledged
    receiver = _Receiver(config, db, store, on_association_end, observers)
    ae = build_ae(config)
    handlers: list[EventHandlerType] = [
        (evt.EVT_CONN_OPEN, receiver.on_conn_open),
        (evt.EVT_REQUESTED, receiver.on_requested),
        (evt.EVT_ACCEPTED, receiver.on_accepted),
        (evt.EVT_RELEASED, receiver.on_released),
        (evt.EVT_ABORTED, receiver.on_aborted),
        (evt.EVT_CONN_CLOSE, receiver.on_conn_close),
        (evt.EVT_C_ECHO, receiver.on_echo),
        (evt.EVT_C_STORE, receiver.on_store),
    ]
    server = ae.start_server(
        (config.node.host, config.node.port),
        block=False,
        evt_handlers=handlers,
        ssl_context=server_ssl_context(config.node.tls),
    )
    assert server is not None  # block=False always returns the server
    handle = ReceiverHandle(ae, server, receiver)
    log.info(
        "receiver listening",
        extra={"ae_title": config.node.ae_title, "host": handle.host, "port": handle.port, "tls": config.node.tls.enabled},
    )
    return handle
