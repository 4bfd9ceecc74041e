"""The audit trail: one `audit_events` row per thing someone did to or through the node.

Kinds: association accepted / rejected (from the receiver, `AssociationAudit`), login / login failed /
logout, config changed (with the TOML before and after), re-analyse and re-send (who, which study),
C-ECHO from the dashboard, user added. Rows hold AE titles, peer addresses, user names, Study Instance
UIDs and configuration values; never a patient name or ID. Every value is escaped (`safe_text.clean`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import AuditEvent
from dicom_node.runtime.safe_text import clean

log = logging.getLogger(__name__)

ASSOCIATION_ACCEPTED = "association-accepted"
ASSOCIATION_REJECTED = "association-rejected"
LOGIN = "login"
LOGIN_FAILED = "login-failed"
LOGOUT = "logout"
CONFIG_CHANGED = "config-changed"
REANALYSE = "reanalyse"
RESEND = "resend"
ECHO = "echo"
USER_ADDED = "user-added"
KINDS = (ASSOCIATION_ACCEPTED, ASSOCIATION_REJECTED, LOGIN, LOGIN_FAILED, LOGOUT, CONFIG_CHANGED, REANALYSE,
         RESEND, ECHO, USER_ADDED)


@dataclass(frozen=True)
class Event:
    """An audit row as the dashboard shows it."""

    id: int
    at: datetime
    kind: str
    actor: str
    peer: str
    subject: str
    detail: str
    before: str
    after: str


def record(session: Session, kind: str, *, actor: str = "", peer: str = "", subject: str = "", detail: str = "",
           before: str = "", after: str = "") -> None:
    """Add one audit row inside the caller's transaction (so it commits with the change it describes)."""
    if kind not in KINDS:
        raise ValueError(f"unknown audit kind {kind!r}")
    session.add(AuditEvent(
        at=utcnow(), kind=kind, actor=clean(actor, 64), peer=clean(peer, 64), subject=clean(subject, 128),
        detail=clean(detail, 2000), before=before, after=after,
    ))


def record_now(db: Database, kind: str, **fields: str) -> None:
    """Add one audit row in a transaction of its own; a database error is logged, never raised."""
    try:
        with db.write() as session:
            record(session, kind, **fields)
    except SQLAlchemyError as exc:
        log.error("cannot write audit row", extra={"kind": kind, "error": clean(exc)})


def recent(db: Database, limit: int = 200, kinds: tuple[str, ...] = ()) -> list[Event]:
    """The newest rows first, optionally only of some kinds."""
    with db.read() as session:
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if kinds:
            query = query.where(AuditEvent.kind.in_(kinds))
        return [
            Event(e.id, e.at, e.kind, e.actor, e.peer, e.subject, e.detail, e.before, e.after)
            for e in session.scalars(query)
        ]


class AssociationAudit:
    """Receiver observer (`receiver.scp.ReceiverObserver`): one row per association request."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def association(self, accepted: bool, calling_ae: str, called_ae: str, peer: str, reason: str) -> None:
        record_now(
            self.db, ASSOCIATION_ACCEPTED if accepted else ASSOCIATION_REJECTED,
            actor=calling_ae.strip(), peer=peer, subject=f"called {called_ae.strip()}", detail=reason,
        )

    def stored(self, status: int, seconds: float) -> None:
        """Instances are counted by the metrics, not audited."""
