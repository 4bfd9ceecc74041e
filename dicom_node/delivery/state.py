"""Delivery rows: every change of `Delivery.state`, and the study's DELIVERED state that follows from them.

`pending → sent` on a success or warning status. A permanent refusal (C-STORE status `0x0122` SOP class
not supported, `0x0124` not authorised, `0xA9xx` dataset does not match the SOP class, an association
rejected for good, the object's presentation context refused) makes it `failed` at once with the reason.
Any other failed attempt keeps the row pending, due again after the `[delivery.retry]` policy's delay
(`retry.RetryPolicy`), and makes it `failed` with the reason once the policy gives up (`max_age_seconds`,
or `max_attempts` when set).

A process sends only deliveries it has claimed (`claim_due`, see `db/claims.py`): the claim names the process
and holds for `delivery.lease_seconds`, renewed every third of that from a thread while its batch runs (a
C-STORE may wait for its answer up to the DIMSE timeout), so two `serve` processes on one database never
send the same delivery; a dead process's claims are taken over once they expire. Marking a
delivery sent or failed clears the claim and applies only while the caller still holds it.

An output's file leaves the outbox once every destination has it (`remove_delivered_files`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.orm import Session

from dicom_node.db import claims
from dicom_node.db.engine import utcnow
from dicom_node.db.schema import Delivery, DeliveryState, Job, Output, Result, Study, StudyState
from dicom_node.runtime.retry import RetryPolicy, count_failure, count_success, start_all_over, start_over
from dicom_node.studies import state as study_state

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


def is_refusal(status: int) -> bool:
    """A C-STORE failure status that sending the same object again will not change."""
    return status in (0x0122, 0x0124) or 0xA900 <= status <= 0xA9FF


def _due_conditions(
    now: datetime, destination: str | None, exclude: Collection[str]
) -> list[ColumnElement[bool]]:
    conditions = [Delivery.state == DeliveryState.PENDING, Delivery.next_attempt_at <= now]
    if destination is not None:
        conditions.append(Delivery.destination == destination)
    if exclude:
        conditions.append(Delivery.destination.not_in(list(exclude)))
    return conditions


_ORDER = (Delivery.next_attempt_at, Delivery.id)


def _items(session: Session, ids: Collection[int]) -> list[DueDelivery]:
    rows = session.execute(
        select(Delivery, Output).join(Output, Output.id == Delivery.output_id).where(Delivery.id.in_(list(ids)))
        .order_by(*_ORDER)
    ).all()
    return [
        DueDelivery(d.id, d.destination, o.id, o.path, o.sop_class_uid, o.sop_instance_uid, o.study_id)
        for d, o in rows
    ]


def due(
    session: Session,
    now: datetime,
    limit: int = 500,
    destination: str | None = None,
    exclude: Collection[str] = (),
) -> list[DueDelivery]:
    """Pending deliveries whose time has come and that nobody holds: all, one destination's, or all but
    `exclude`'s. Reading them claims nothing: send only what `claim_due` returned."""
    ids = session.scalars(
        select(Delivery.id)
        .where(*_due_conditions(now, destination, exclude), claims.is_free(Delivery, now))
        .order_by(*_ORDER)
        .limit(limit)
    ).all()
    return _items(session, ids) if ids else []


def claim_due(
    session: Session,
    owner: str,
    lease_seconds: float,
    now: datetime,
    limit: int = 500,
    destination: str | None = None,
    exclude: Collection[str] = (),
) -> list[DueDelivery]:
    """Claim the due deliveries nobody holds (as `due` selects them) for `owner`; run in `Database.write()`."""
    ids = claims.claim(
        session, Delivery, _due_conditions(now, destination, exclude), _ORDER, owner, lease_seconds, now, limit
    )
    return _items(session, ids) if ids else []


def renew_claims(session: Session, delivery_ids: Collection[int], owner: str, until: datetime) -> set[int]:
    """Extend `owner`'s claims on `delivery_ids` (a long batch); returns those it still holds."""
    return claims.renew(session, Delivery, delivery_ids, owner, until)


def unclaim(session: Session, delivery_ids: Collection[int], owner: str) -> set[int]:
    """Give back `owner`'s claims on `delivery_ids` unsent (they did not fit the batch)."""
    return claims.unclaim(session, Delivery, delivery_ids, owner)


def _held(session: Session, delivery_id: int, owner: str) -> Delivery | None:
    """The pending delivery when `owner` still holds its claim (then cleared: `claims.settle`), else None."""
    d = session.get(Delivery, delivery_id)
    if d is None or d.state != DeliveryState.PENDING:
        return None
    return d if claims.settle(d, owner, "delivery", delivery_id) else None


def mark_sent(session: Session, delivery_id: int, now: datetime, owner: str) -> None:
    """PENDING → SENT, when `owner` still holds the claim."""
    d = _held(session, delivery_id, owner)
    if d is not None:
        d.state = DeliveryState.SENT
        count_success(d, now)


def mark_attempt_failed(
    session: Session,
    policy: RetryPolicy,
    delivery_id: int,
    error: str,
    now: datetime,
    owner: str,
    permanent: bool = False,
) -> None:
    """Count a failed try: FAILED with the reason when `permanent` or `policy` gives up, else back off.
    Applies only while `owner` still holds the claim."""
    d = _held(session, delivery_id, owner)
    if d is None:
        return
    if count_failure(d, policy, error, now, permanent):
        d.state = DeliveryState.FAILED
        log.error(
            "delivery refused" if permanent else "delivery failed for good",
            extra={
                "delivery_id": d.id,
                "destination": d.destination,
                "attempts": d.attempts,
                "reason": error,
            },
        )
        return
    log.warning(
        "delivery attempt failed; will retry",
        extra={"delivery_id": d.id, "destination": d.destination, "attempts": d.attempts, "reason": error},
    )


def update_study_delivered(session: Session, study_id: int) -> bool:
    """Study → DELIVERED when it is ANALYSED and every delivery of its current generation is sent."""
    study = session.get(Study, study_id)
    if study is None or study.state != StudyState.ANALYSED:  # the cheap check before counting deliveries
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
    study_state.delivered(study)
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
    return start_all_over(session.scalars(query), utcnow(), _reopen)


def _reopen(row: Delivery) -> None:
    row.state = DeliveryState.PENDING


def new(output_id: int, destination: str, now: datetime) -> Delivery:
    """A delivery of an output to a destination, PENDING and due at once (added by `fanout`)."""
    return Delivery(
        output_id=output_id,
        destination=destination,
        state=DeliveryState.PENDING,
        attempts=0,
        next_attempt_at=now,
        last_error="",
        created_at=now,
    )


def reset_for_new_content(session: Session, output_id: int, now: datetime) -> None:
    """An output file was rewritten with new content (a re-run job): send it again everywhere. A claim in
    flight is dropped, so a sender still sending the old content cannot mark the new one sent."""
    for d in session.scalars(select(Delivery).where(Delivery.output_id == output_id)):
        d.state = DeliveryState.PENDING
        d.sent_at = None
        claims.release(d)
        start_over(d, now)


def remove_delivered_files(session: Session, outbox: Path, output_ids: Collection[int] | None = None) -> int:
    """Delete the outbox file of each output (of `output_ids`, or of all) that every destination has.

    An output is done when it has deliveries and all of them are sent; one with a pending or failed
    delivery, or with none (no destination configured), keeps its file. Run in a write transaction: the
    worker rewrites a file only inside one, together with setting its deliveries back to pending.
    Returns how many files were deleted.
    """
    unsent = exists().where(Delivery.output_id == Output.id, Delivery.state != DeliveryState.SENT)
    query = select(Output).where(exists().where(Delivery.output_id == Output.id), ~unsent)
    if output_ids is not None:
        if not output_ids:
            return 0
        query = query.where(Output.id.in_(list(output_ids)))
    removed = 0
    for out in session.scalars(query.with_for_update()):
        path = outbox / out.path
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
        _remove_empty_parent(path.parent, outbox)
    if removed:
        log.info("outbox files removed: every destination has them", extra={"files": removed})
    return removed


def _remove_empty_parent(folder: Path, outbox: Path) -> None:
    if folder == outbox or outbox not in folder.parents:
        return
    try:
        folder.rmdir()  # only when empty; another output of the study may still be waiting
    except OSError:
        pass
