"""Delivery rows: every change of `Delivery.state`, and the study's DELIVERED state that follows from them.

`pending → sent` on a success or warning status; a failed attempt keeps the row pending with
`next_attempt_at = now + min(initial * 2**attempts, max_backoff)` and becomes `failed` with the reason
once the row is older than `max_age`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicom_node.config import DeliveryConfig
from dicom_node.db.engine import utcnow
from dicom_node.db.schema import Delivery, DeliveryState, Job, Output, Result, Study, StudyState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DueDelivery:
    delivery_id: int
    destination: str
    output_id: int
    path: str  # relative to storage.outbox
    sop_class_uid: str
    sop_instance_uid: str
    study_id: int


def backoff(settings: DeliveryConfig, attempts: int) -> timedelta:
    """Wait before the next try after `attempts` failed ones: initial * 2**attempts, capped."""
    seconds = settings.initial_backoff_seconds * 2 ** min(attempts, 30)
    return timedelta(seconds=min(seconds, settings.max_backoff_seconds))


def due(session: Session, now: datetime, limit: int = 500) -> list[DueDelivery]:
    rows = session.execute(
        select(Delivery, Output)
        .join(Output, Output.id == Delivery.output_id)
        .where(Delivery.state == DeliveryState.PENDING, Delivery.next_attempt_at <= now)
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
    ).all()
    return [
        DueDelivery(d.id, d.destination, o.id, o.path, o.sop_class_uid, o.sop_instance_uid, o.study_id)
        for d, o in rows
    ]


def mark_sent(session: Session, delivery_id: int, now: datetime) -> None:
    d = session.get(Delivery, delivery_id)
    if d is None or d.state != DeliveryState.PENDING:
        return
    d.state = DeliveryState.SENT
    d.attempts += 1
    d.sent_at = now
    d.last_error = ""


def mark_attempt_failed(
    session: Session, settings: DeliveryConfig, delivery_id: int, error: str, now: datetime
) -> None:
    """Count a failed try: back off, or FAILED with the reason once older than `max_age`."""
    d = session.get(Delivery, delivery_id)
    if d is None or d.state != DeliveryState.PENDING:
        return
    d.attempts += 1
    d.last_error = error
    if now - d.created_at >= timedelta(seconds=settings.max_age_seconds):
        d.state = DeliveryState.FAILED
        log.error(
            "delivery failed for good",
            extra={
                "delivery_id": d.id,
                "destination": d.destination,
                "attempts": d.attempts,
                "reason": error,
            },
        )
        return
    d.next_attempt_at = now + backoff(settings, d.attempts)
    log.warning(
        "delivery attempt failed; will retry",
        extra={"delivery_id": d.id, "destination": d.destination, "attempts": d.attempts, "reason": error},
    )


def update_study_delivered(session: Session, study_id: int) -> bool:
    """Study → DELIVERED when it is ANALYSED and every delivery of its current generation is sent."""
    study = session.get(Study, study_id)
    if study is None or study.state != StudyState.ANALYSED:
        return False
    base = (
        select(func.count(Delivery.id))
        .join(Output, Output.id == Delivery.output_id)
        .join(Result, Result.id == Output.result_id)
        .join(Job, Job.id == Result.job_id)
        .where(Output.study_id == study_id, Job.generation == study.generation)
    )
    total = session.scalar(base) or 0
    unsent = session.scalar(base.where(Delivery.state != DeliveryState.SENT)) or 0
    if total == 0 or unsent:
        return False
    study.state = StudyState.DELIVERED
    log.info("study delivered", extra={"study_uid": study.study_uid, "generation": study.generation})
    return True


def retry_failed(session: Session, study_uid: str | None = None) -> int:
    """Failed deliveries back to pending with a fresh `max_age` window (`dicom-node retry --deliveries`)."""
    query = select(Delivery).where(Delivery.state == DeliveryState.FAILED)
    if study_uid:
        query = (
            query.join(Output, Output.id == Delivery.output_id)
            .join(Study, Study.id == Output.study_id)
            .where(Study.study_uid == study_uid)
        )
    now = utcnow()
    count = 0
    for d in session.scalars(query):
        d.state = DeliveryState.PENDING
        d.attempts = 0
        d.next_attempt_at = now
        d.created_at = now
        d.last_error = ""
        count += 1
    return count


def reset_for_new_content(session: Session, output_id: int, now: datetime) -> None:
    """An output file was rewritten with new content (a re-run job): send it again everywhere."""
    for d in session.scalars(select(Delivery).where(Delivery.output_id == output_id)):
        d.state = DeliveryState.PENDING
        d.attempts = 0
        d.next_attempt_at = now
        d.created_at = now
        d.sent_at = None
        d.last_error = ""
