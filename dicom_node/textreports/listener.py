"""The report listener: HL7 v2 ORU^R01 over MLLP (`[reports] host`, `hl7_port`), a service of `serve`.

Each connection may carry any number of messages, framed <VT> message <FS><CR>. Per message:

- parsed and stored (`store.store`) and committed, then answered AA; a repeat of a stored message (same
  sender and MSH-10) is answered AA again without a second row;
- a message that cannot be accepted is kept in `report_rejections` with the reason and its raw text and
  answered AR (no usable MSH, not ORU^R01) or AE (no OBR, nothing to match on, no text), with the reason
  in MSA-3 and ERR;
- a database failure is answered AE ("try again"), nothing kept.

A connection is closed after `idle_timeout` seconds without data, or when a frame exceeds `MAX_MESSAGE`
bytes. At most `max_connections` connections are served at once; more are closed at once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading

from sqlalchemy.exc import SQLAlchemyError

from dicom_node.db.engine import Database, utcnow
from dicom_node.notify.hl7 import END, START
from dicom_node.runtime.safe_text import clean
from dicom_node.textreports import store
from dicom_node.textreports.hl7in import Malformed, ack, header, parse_oru

log = logging.getLogger(__name__)

MAX_MESSAGE = 16 * 1024 * 1024


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def handle_message(db: Database, raw: str, peer: str, facility: str = "DICOMNODE") -> str:
    """Store one HL7 message (or its refusal) and return the ACK to send."""
    now = utcnow()
    to_app = to_fac = control_id = ""
    # the ACK's addressing from MSH when it can be read; a NAK to an unreadable header goes unaddressed
    with contextlib.suppress(Malformed, IndexError):
        _, msh = header(raw)
        control_id = msh[10].strip() if len(msh) > 10 else ""
        to_app = msh[3].split(msh[2][0])[0] if len(msh) > 3 else ""
        to_fac = msh[4].split(msh[2][0])[0] if len(msh) > 4 else ""
    try:
        parsed = parse_oru(raw)
    except Malformed as exc:
        try:
            with db.write() as session:
                rid = store.reject(session, f"hl7 {peer}", raw, exc.reason, exc.control_id or control_id, now)
        except SQLAlchemyError as db_exc:
            log.error("report refusal could not be recorded", extra={"error": clean(db_exc)})
            return ack(exc.control_id or control_id, "AE", "database unavailable, send again", "207",
                       facility, to_app, to_fac)
        log.warning("report message refused", extra={"rejection_id": rid, "control_id": clean(control_id, 40),
                                                     "reason": clean(exc.reason)})
        return ack(exc.control_id or control_id, "AR" if exc.reject else "AE", exc.reason, exc.code, facility,
                   to_app, to_fac)
    try:
        with db.write() as session:
            row, new = store.store(session, parsed.report, now)
            report_id = row.id
    except SQLAlchemyError as exc:
        log.error("report could not be stored", extra={"control_id": clean(parsed.control_id, 40), "error": clean(exc)})
        return ack(parsed.control_id, "AE", "database unavailable, send again", "207", facility, to_app, to_fac)
    log.info("report received" if new else "repeated report message acknowledged again",
             extra={"report_id": report_id, "control_id": clean(parsed.control_id, 40), "status": parsed.report.status})
    log.debug("report identifiers", extra={"report_id": report_id, "accession": clean(parsed.report.accession_number),
                                           "study_uid": clean(parsed.report.study_uid)})
    return ack(parsed.control_id, "AA", "", "", facility, to_app, to_fac)


class ReportListener:
    """MLLP server: `start()` binds and serves in threads, `stop()` closes and joins; `port` once started."""

    def __init__(self, db: Database, host: str, port: int, facility: str = "DICOMNODE",
                 max_connections: int = 16, idle_timeout: float = 300.0) -> None:
        self.db = db
        self.host, self.requested_port = host, port
        self.facility = facility
        self.idle_timeout = idle_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.port = 0

    def start(self) -> None:
        sock = socket.create_server((self.host, self.requested_port), reuse_port=False)
        sock.settimeout(0.5)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        thread = threading.Thread(target=self._accept, name="report-listener", daemon=True)
        thread.start()
        self._threads.append(thread)
        log.info("report listener serving", extra={"host": self.host, "port": self.port})

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._sock is not None:
            self._sock.close()
        with self._lock:
            for conn in list(self._open):
                with contextlib.suppress(OSError):  # the peer may have closed it already
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(timeout)
        log.info("report listener stopped")

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                log.warning("report connection refused: too many open", extra={"peer": addr[0]})
                conn.close()
                continue
            thread = threading.Thread(target=self._serve, args=(conn, f"{addr[0]}:{addr[1]}"), daemon=True,
                                      name="report-connection")
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, peer: str) -> None:
        with self._lock:
            self._open.add(conn)
        try:
            conn.settimeout(self.idle_timeout)
            buffer = b""
            while not self._stopping.is_set():
                try:
                    chunk = conn.recv(65536)
                except (TimeoutError, OSError):
                    break
                if not chunk:
                    break
                buffer += chunk
                while True:
                    start = buffer.find(START)
                    if start < 0:
                        buffer = b""
                        break
                    end = buffer.find(END, start)
                    if end < 0:
                        buffer = buffer[start:]
                        break
                    frame, buffer = buffer[start + 1:end], buffer[end + len(END):]
                    answer = handle_message(self.db, _decode(frame), peer, self.facility)
                    conn.sendall(START + answer.encode("utf-8") + END)
                if len(buffer) > MAX_MESSAGE:
                    log.warning("report message too large; connection closed", extra={"peer": peer})
                    break
        except OSError as exc:
            log.info("report connection ended", extra={"peer": peer, "reason": clean(exc)})
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()
            self._slots.release()
