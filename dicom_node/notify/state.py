"""Notification rows: every change of `Notification.state`.

`triage.apply_priority` queues one row per target (`webhook`, `hl7`) in the transaction that raises a
study to STAT, so the alert is as durable as the result. The serve process's notifier sends them:
`pending → sent` when the target confirms (HTTP 2xx; an HL7 ACK that names the message's control ID and
accepts it), retried under `[notifications.retry]` (absent: `[delivery.retry]`) otherwise, `failed` with
the reason at once when the target refuses for good (HTTP 4xx other than 408/425/429). A target the serve process has
not configured makes the row `skipped`.

A notifier sends only alerts it has claimed (`claim_due`, see `db/claims.py`), so two `serve` processes on one
database never send one twice; recording the outcome clears the claim and applies only while the caller
still holds it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from dicom_node.db import claims
from dicom_node.db.engine import utcnow
from dicom_node.db.schema import Notification, NotificationState, Study
from dicom_node.runtime.retry import RetryPolicy, count_failure, count_success, start_all_over
from dicom_node.runtime.safe_text import clean

log = logging.getLogger(__name__)

WEBHOOK, HL7 = "webhook", "hl7"
TARGETS = (WEBHOOK, HL7)


@dataclass(frozen=True)
class DueNotification:
    notification_id: int
    target: str
    body: str
    control_id: str
    study_uid: str


def enqueue(session: Session, study_id: int, messages: dict[str, tuple[str, str]], now: datetime) -> int:
    """Queue `messages` ({target: (body, control ID)}) for the study; a study is alerted once per target.

    Runs in the caller's transaction. Returns how many rows were added.
    """
    have = set(session.scalars(select(Notification.target).where(Notification.study_id == study_id)))
    added = 0
    for target, (body, control_id) in messages.items():
        if target in have:
            continue
        session.add(
            Notification(
                study_id=study_id,
                target=target,
                state=NotificationState.PENDING,
                body=body,
                control_id=control_id,
                attempts=0,
                next_attempt_at=now,
                last_error="",
                created_at=now,
            )
        )
        added += 1
    session.flush()
    return added


def _due_conditions(now: datetime, target: str) -> list[ColumnElement[bool]]:
    return [
        Notification.state == NotificationState.PENDING,
        Notification.next_attempt_at <= now,
        Notification.target == target,
    ]


_ORDER = (Notification.next_attempt_at, Notification.id)


def _items(session: Session, ids: Collection[int]) -> list[DueNotification]:
    rows = session.execute(
        select(Notification, Study.study_uid)
        .join(Study, Study.id == Notification.study_id)
        .where(Notification.id.in_(list(ids)))
        .order_by(*_ORDER)
    ).all()
    return [DueNotification(n.id, n.target, n.body, n.control_id, uid) for n, uid in rows]


def due(session: Session, now: datetime, target: str, limit: int = 100) -> list[DueNotification]:
    """Pending alerts to `target` whose time has come and that nobody holds (reading claims nothing)."""
    ids = session.scalars(
        select(Notification.id)
        .where(*_due_conditions(now, target), claims.is_free(Notification, now))
        .order_by(*_ORDER)
        .limit(limit)
    ).all()
    return _items(session, ids) if ids else []


def claim_due(
    session: Session, owner: str, lease_seconds: float, now: datetime, target: str, limit: int = 100
) -> list[DueNotification]:
    """Claim the due alerts to `target` that nobody holds, for `owner`; run in `Database.write()`."""
    ids = claims.claim(session, Notification, _due_conditions(now, target), _ORDER, owner, lease_seconds, now, limit)
    return _items(session, ids) if ids else []


def _pending(session: Session, notification_id: int, owner: str) -> Notification | None:
    """The pending alert when `owner` still holds its claim (then cleared: `claims.settle`), else None."""
    n = session.get(Notification, notification_id)
    if n is None or n.state != NotificationState.PENDING:
        return None
    return n if claims.settle(n, owner, "notification", notification_id) else None


def mark_sent(session: Session, notification_id: int, now: datetime, owner: str) -> None:
    n = _pending(session, notification_id, owner)
    if n is not None:
        n.state = NotificationState.SENT
        count_success(n, now)


def mark_skipped(session: Session, notification_id: int, reason: str, owner: str) -> None:
    n = _pending(session, notification_id, owner)
    if n is not None:
        n.state = NotificationState.SKIPPED
        n.last_error = reason


def mark_attempt_failed(
    session: Session,
    policy: RetryPolicy,
    notification_id: int,
    error: str,
    now: datetime,
    owner: str,
    permanent: bool = False,
) -> None:
    """Count a failed try: FAILED with the reason when `permanent` or `policy` gives up, else back off.
    Applies only while `owner` still holds the claim."""
    n = _pending(session, notification_id, owner)
    if n is None:
        return
    context = {"notification_id": n.id, "target": n.target, "attempts": n.attempts + 1, "reason": clean(error)}
    if count_failure(n, policy, error, now, permanent):
        n.state = NotificationState.FAILED
        log.error("critical-finding alert failed for good", extra=context)
    else:
        log.warning("critical-finding alert not delivered; will retry", extra=context)


def retry_failed(session: Session, study_uid: str | None = None) -> int:
    """Failed notifications back to pending with a fresh `max_age` window (`dicom-node retry`)."""
    query = select(Notification).where(Notification.state == NotificationState.FAILED)
    if study_uid:
        query = query.join(Study, Study.id == Notification.study_id).where(Study.study_uid == study_uid)
    return start_all_over(session.scalars(query), utcnow(), _reopen)


def _reopen(row: Notification) -> None:
    row.state = NotificationState.PENDING
