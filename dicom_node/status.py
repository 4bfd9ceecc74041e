"""What the node knows about each study, as plain dicts (for `dicom-node status` and the dashboard)."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database
from dicom_node.db.schema import (
    Delivery,
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
from dicom_node.safe_text import clean


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value is not None else None


def study_status(db: Database, limit: int | None = None) -> list[dict[str, Any]]:
    """One dict per study, most recently received first."""
    with db.read() as session:
        query = select(Study).order_by(Study.last_received_at.desc(), Study.id.desc())
        if limit is not None:
            query = query.limit(limit)
        studies = session.scalars(query).all()
        ids = [s.id for s in studies]
        if not ids:
            return []
        instances = _count_by(session, Instance.study_id, ids)
        series = _count_by(session, Series.study_id, ids)
        jobs = _jobs(session, ids)
        findings = _findings(session, ids)
        deliveries = _deliveries(session, ids)
        notifications = _notifications(session, ids)
        return [
            {
                "study_uid": s.study_uid,
                "state": s.state.value,
                "generation": s.generation,
                "priority": Priority(s.priority).name if s.priority in (p.value for p in Priority) else str(s.priority),
                "instances": instances.get(s.id, 0),
                "series": series.get(s.id, 0),
                "first_received_at": _iso(s.first_received_at),
                "last_received_at": _iso(s.last_received_at),
                "completed_at": _iso(s.completed_at),
                "jobs": dict(jobs.get(s.id, {})),
                "findings": findings.get(s.id, []),
                "deliveries": dict(deliveries.get(s.id, {})),
                "notifications": notifications.get(s.id, {}),
            }
            for s in studies
        ]


def _count_by(session: Session, column: Any, ids: list[int]) -> dict[int, int]:
    rows = session.execute(select(column, func.count()).where(column.in_(ids)).group_by(column)).all()
    return {int(k): int(n) for k, n in rows}


def _jobs(session: Session, ids: list[int]) -> dict[int, Counter[str]]:
    out: dict[int, Counter[str]] = defaultdict(Counter)
    rows = session.execute(
        select(Job.study_id, Job.state, func.count()).where(Job.study_id.in_(ids)).group_by(Job.study_id, Job.state)
    ).all()
    for study_id, state, n in rows:
        out[study_id][state.value] += n
    return out


def _findings(session: Session, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The latest result per study and model: status, critical flag, and the labels found present."""
    latest: dict[tuple[int, str], Result] = {}
    for r in session.scalars(select(Result).where(Result.study_id.in_(ids)).order_by(Result.id)).all():
        latest[(r.study_id, r.model_name)] = r
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for (study_id, model), r in sorted(latest.items()):
        payload = r.payload or {}
        present = [
            {"label": f.get("label"), "probability": f.get("probability")}
            for f in payload.get("findings", [])
            if f.get("present")
        ]
        out[study_id].append(
            {
                "model": model,
                "version": r.model_version,
                "status": r.status,
                "critical": r.critical,
                "present": present,
            }
        )
    return out


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
