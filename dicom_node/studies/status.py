"""What the node knows about each study, as plain dicts (for `dicom-node status` and the dashboard).

Per study: its identifiers (Study Instance UID, accession number, patient ID), when it was received, its
processing state and priority, what each model made of it (analysed with the findings present, not
analysed or failed with the reason, or still queued/running), its deliveries (counts, and the reason for
any that failed or are being retried) and its critical-finding alerts. Every value that came from a
DICOM header or a peer is passed through `safe_text.clean`, so no value can forge or hide a line.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.schema import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    Notification,
    NotificationState,
    Output,
    Priority,
    Result,
    Series,
    Study,
)
from dicom_node.ml.verdicts import SUMMARY_LABEL
from dicom_node.runtime.safe_text import clean


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value is not None else None


def study_status(
    db: Database, limit: int | None = None, *, critical_first: bool = False, where: Sequence[ColumnElement[bool]] = ()
) -> list[dict[str, Any]]:
    """One dict per study, most recently received first (`critical_first`: STAT studies before the
    rest, each group newest first, as the dashboard's worklist); `where`: conditions on `Study`."""
    with db.read() as session:
        order: list[ColumnElement[Any]] = [Study.last_received_at.desc(), Study.id.desc()]
        if critical_first:
            order.insert(0, Study.priority.desc())
        query = select(Study).where(*where).order_by(*order)
        if limit is not None:
            query = query.limit(limit)
        studies = session.scalars(query).all()
        ids = [s.id for s in studies]
        if not ids:
            return []
        instances = _count_by(session, Instance.study_id, ids)
        series = _count_by(session, Series.study_id, ids)
        jobs = _jobs(session, ids)
        models = _models(session, ids)
        deliveries = _deliveries(session, ids)
        problems = _delivery_problems(session, ids)
        notifications = _notifications(session, ids)
        modalities = _modalities(session, ids)
        delivered_at = _last_sent(session, ids)
        return [
            {
                "study_uid": clean(s.study_uid),
                "accession_number": clean(s.accession_number),
                "patient_id": clean(s.patient_id),
                "state": s.state.value,
                "generation": s.generation,
                "priority": Priority(s.priority).name if s.priority in (p.value for p in Priority) else str(s.priority),
                "instances": instances.get(s.id, 0),
                "series": series.get(s.id, 0),
                "first_received_at": _iso(s.first_received_at),
                "last_received_at": _iso(s.last_received_at),
                "completed_at": _iso(s.completed_at),
                "delivered_at": _iso(delivered_at.get(s.id)),
                "time_to_result": _elapsed(s.completed_at, delivered_at.get(s.id)),
                "modalities": modalities.get(s.id, []),
                "jobs": dict(jobs.get(s.id, {})),
                "models": models.get(s.id, []),
                "deliveries": dict(deliveries.get(s.id, {})),
                "delivery_problems": problems.get(s.id, []),
                "notifications": notifications.get(s.id, {}),
            }
            for s in studies
        ]


def _count_by(session: Session, column: Any, ids: list[int]) -> dict[int, int]:
    rows = session.execute(select(column, func.count()).where(column.in_(ids)).group_by(column)).all()
    return {int(k): int(n) for k, n in rows}


def _elapsed(start: datetime | None, end: datetime | None) -> float | None:
    """Seconds from the study's completion to its last delivery (None while not delivered)."""
    return round((end - start).total_seconds(), 3) if start is not None and end is not None and end >= start else None


def _modalities(session: Session, ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    rows = session.execute(
        select(Series.study_id, Series.modality).where(Series.study_id.in_(ids)).distinct()
        .order_by(Series.study_id, Series.modality)
    )
    for study_id, modality in rows:
        if modality:
            out[study_id].append(clean(modality, 16))
    return out


def _last_sent(session: Session, ids: list[int]) -> dict[int, datetime]:
    """When the last delivery of each study reached its destination."""
    rows = session.execute(
        select(Output.study_id, func.max(Delivery.sent_at))
        .join(Output, Output.id == Delivery.output_id)
        .where(Output.study_id.in_(ids), Delivery.state == DeliveryState.SENT)
        .group_by(Output.study_id)
    )
    return {int(k): v for k, v in rows if v is not None}


def _jobs(session: Session, ids: list[int]) -> dict[int, Counter[str]]:
    out: dict[int, Counter[str]] = defaultdict(Counter)
    rows = session.execute(
        select(Job.study_id, Job.state, func.count()).where(Job.study_id.in_(ids)).group_by(Job.study_id, Job.state)
    ).all()
    for study_id, state, n in rows:
        out[study_id][state.value] += n
    return out


def _models(session: Session, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Per study and model, its latest job (highest generation) and what came of it.

    `state` is the result's status (`analysed`, `not_analysed`, `failed`) when there is one, else the
    job's (`queued`, `running`, `failed`); `reason` says why it was not analysed, why it failed, or why
    the last attempt of a job that will be retried failed.
    """
    latest: dict[tuple[int, str], Job] = {}
    for job in session.scalars(select(Job).where(Job.study_id.in_(ids)).order_by(Job.generation, Job.id)):
        latest[(job.study_id, job.model_name)] = job
    results = {
        r.job_id: r
        for r in session.scalars(select(Result).where(Result.job_id.in_([j.id for j in latest.values()])))
    }
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for (study_id, model), job in sorted(latest.items()):
        r = results.get(job.id)
        payload = (r.payload or {}) if r is not None else {}
        out[study_id].append(
            {
                "model": clean(model),
                "version": clean(r.model_version) if r is not None else None,
                "state": r.status if r is not None else job.state.value,
                "reason": clean(payload.get("reason") or job.last_error, 500),
                "critical": bool(r.critical) if r is not None else False,
                "present": [
                    {"label": clean(f.get("label")), "probability": f.get("probability")}
                    for f in payload.get("findings", [])
                    if f.get("present")
                ],
                "probability": _headline_probability(payload.get("findings", [])),
                "analysed_at": _iso(r.created_at) if r is not None else None,
                "attempts": job.attempts,
                "generation": job.generation,
            }
        )
    return out


def _headline_probability(findings: list[dict[str, Any]]) -> float | None:
    """The study-level label's probability ("any" of a model with subtypes), else the highest one."""
    values: dict[Any, float] = {f.get("label"): float(f["probability"]) for f in findings
                                if f.get("probability") is not None}
    if SUMMARY_LABEL in values:
        return values[SUMMARY_LABEL]
    return max(values.values(), default=None)


def _deliveries(session: Session, ids: list[int]) -> dict[int, Counter[str]]:
    out: dict[int, Counter[str]] = defaultdict(Counter)
    rows = session.execute(
        select(Output.study_id, Delivery.state, func.count())
        .join(Output, Output.id == Delivery.output_id)
        .where(Output.study_id.in_(ids))
        .group_by(Output.study_id, Delivery.state)
    ).all()
    for study_id, state, n in rows:
        out[study_id][state.value] += n
    return out


def _delivery_problems(session: Session, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Failed deliveries, and pending ones whose last try failed: per destination, state and reason."""
    rows = session.execute(
        select(Output.study_id, Delivery.destination, Delivery.state, Delivery.last_error, func.count(),
               func.max(Delivery.attempts))
        .join(Output, Output.id == Delivery.output_id)
        .where(Output.study_id.in_(ids), Delivery.state != DeliveryState.SENT, Delivery.last_error != "")
        .group_by(Output.study_id, Delivery.destination, Delivery.state, Delivery.last_error)
        .order_by(Output.study_id, Delivery.destination)
    ).all()
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for study_id, destination, state, error, n, attempts in rows:
        out[study_id].append(
            {
                "destination": clean(destination),
                "state": state.value,
                "objects": int(n),
                "attempts": int(attempts),
                "reason": clean(error, 500),
            }
        )
    return out


def _notifications(session: Session, ids: list[int]) -> dict[int, dict[str, dict[str, Any]]]:
    """Critical-finding alerts per study and target (those for targets not configured left out)."""
    out: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    rows = session.scalars(
        select(Notification).where(Notification.study_id.in_(ids), Notification.state != NotificationState.SKIPPED)
    )
    for n in rows:
        out[n.study_id][n.target] = {
            "state": n.state.value,
            "attempts": n.attempts,
            "last_error": clean(n.last_error),
            "sent_at": _iso(n.sent_at),
        }
    return out
