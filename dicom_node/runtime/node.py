"""The node process: one Database, the receiver, a scheduler running the assembler, and extra services.

Other parts (sender, reporter, local worker process, dashboard) join as objects with `start()`/`stop()`
via `add_service`. `run_forever()` serves until SIGTERM/SIGINT, then stops in order: stop accepting and
let in-flight stores finish, stop services (last added first), shut the scheduler, dispose the engine.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Protocol, cast

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select, update

from dicom_node.config import Config
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Association
from dicom_node.receiver.scp import ReceiverHandle, ReceiverObserver, start_receiver
from dicom_node.runtime import ownership
from dicom_node.studies.assembler import Assembler, OnComplete

log = logging.getLogger(__name__)


class Service(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


class Reconfigurable(Protocol):
    def reconfigure(self, config: Config) -> None: ...


class Node:
    def __init__(self, config: Config, db: Database | None = None, on_complete: OnComplete | None = None) -> None:
        self.config = config
        self.db = db or Database(config.database_url)
        self.assembler = Assembler(config, self.db, on_complete)
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.services: list[Service] = []
        self.receiver: ReceiverHandle | None = None
        self.receiver_observers: list[ReceiverObserver] = []  # audit trail, metrics
        self._started: list[Service] = []
        self._stop_requested = threading.Event()

    def add_service(self, service: Service) -> None:
        self.services.append(service)

    def start(self) -> None:
        self._close_stale_associations()
        self.assembler.start(self.scheduler)
        self.scheduler.start()
        for service in self.services:
            service.start()
            self._started.append(service)
        self.receiver = start_receiver(self.config, self.db, self._association_ended, observers=self.receiver_observers)
        # Studies left RECEIVING by a previous run complete through the quiet timer on the first check.

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.shutdown()
            self.receiver = None
        while self._started:
            service = self._started.pop()
            try:
                service.stop()
            except Exception:
                log.exception("service failed to stop", extra={"service": type(service).__name__})
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.db.dispose()
        log.info("node stopped")

    def apply_config(self, config: Config) -> None:
        """Use a changed configuration without a restart: the receiver's access check at the next
        association request, and every started service that can be reconfigured (sender, notifier and
        local worker restart their loops on it). Listening addresses, paths and the database stay."""
        self.config = config
        self.assembler.config = config
        if self.receiver is not None:
            self.receiver.update_config(config)
        for service in list(self._started):
            reconfigure = getattr(service, "reconfigure", None)
            if reconfigure is not None:
                cast(Reconfigurable, service).reconfigure(config)
        log.info("configuration applied", extra={"source": str(config.source)})

    def request_stop(self) -> None:
        self._stop_requested.set()

    def run_forever(self) -> int:
        """Start, serve until SIGTERM/SIGINT (or `request_stop()`), stop cleanly. Returns an exit code."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("stop requested", extra={"signal": signal.Signals(signum).name})
            self._stop_requested.set()

        for sig in previous:
            signal.signal(sig, on_signal)
        try:
            self.start()
            log.info("node serving", extra={"ae_title": self.config.node.ae_title, "port": self.port})
            while not self._stop_requested.wait(1.0):  # a timeout keeps signal handlers running promptly
                continue
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    @property
    def port(self) -> int | None:
        return self.receiver.port if self.receiver is not None else None

    def _association_ended(self, association_id: str, released: bool) -> None:
        if released:
            self.assembler.association_released(association_id)

    def _close_stale_associations(self) -> None:
        """Associations a killed predecessor left open can never be released: mark them aborted.

        Only those whose owner is certainly gone (`ownership.is_gone`: a dead process on this host, or an
        earlier process with this one's pid) and those recorded before associations had owners; another
        node's open associations, on this host or another one sharing the database, are left alone."""
        with self.db.write() as session:
            open_rows = session.execute(select(Association.id, Association.owner).where(Association.ended_at.is_(None)))
            stale = [i for i, owner in open_rows if owner is None or ownership.is_gone(owner)]
            for chunk in range(0, len(stale), 500):
                session.execute(
                    update(Association).where(Association.id.in_(stale[chunk:chunk + 500]))
                    .values(ended_at=utcnow(), released=False)
                )
        if stale:
            log.info("closed associations left open by a previous run", extra={"count": len(stale)})
