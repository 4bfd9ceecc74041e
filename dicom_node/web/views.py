"""What the dashboard's pages show, read from the database: worklist rows (from `status.study_status`),
one study in detail, the operations summary. Read-only; every value from a header or a peer is escaped
by `safe_text.clean` (and by the templates' HTML escaping).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import ColumnElement, func, or_, select

from dicom_node.config import Config
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    Notification,
    NotificationState,
    Output,
    Priority,
    Result,
    Series,
    Study,
    StudyState,
)
from dicom_node.ml.analysis import AnalysisStatus, StudyAnalysis
from dicom_node.ml.verdicts import reconcile
from dicom_node.outputs import codes, wording
from dicom_node.runtime.safe_text import clean
from dicom_node.studies.status import study_status

STAGE = {"receiving": "receiving", "complete": "analysing", "analysed": "sending", "delivered": "delivered"}
WORKLIST_LIMIT = 200


@dataclass(frozen=True)
class Filters:
    q: str = ""  # patient ID, accession number or Study Instance UID (substring)
    priority: str = ""  # "" | STAT | ROUTINE
    state: str = ""  # "" | receiving | analysing | sending | delivered
    modality: str = ""

    @classmethod
    def from_query(cls, params: Any) -> Filters:
        def get(name: str, allowed: tuple[str, ...] | None = None) -> str:
            value = str(params.get(name, "")).strip()[:64]
            return value if allowed is None or value in allowed else ""

        return cls(q=get("q"), priority=get("priority", ("STAT", "ROUTINE")),
                   state=get("state", tuple(STAGE.values())), modality=get("modality").upper()[:16])

    def conditions(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.q:
            like = f"%{self.q}%"
            out.append(or_(Study.patient_id.like(like), Study.accession_number.like(like), Study.study_uid.like(like)))
        if self.priority:
            out.append(Study.priority == Priority[self.priority].value)
        if self.state:
            raw = next(k for k, v in STAGE.items() if v == self.state)
            out.append(Study.state == StudyState(raw))
        if self.modality:
            out.append(Study.id.in_(select(Series.study_id).where(Series.modality == self.modality)))
        return out


def worklist(db: Database, filters: Filters) -> list[dict[str, Any]]:
    """Critical studies first (STAT, then newest), each with the columns of the worklist."""
    rows = study_status(db, WORKLIST_LIMIT, critical_first=True, where=filters.conditions())
    for row in rows:
        row["stage"] = STAGE.get(row["state"], row["state"])
        for m in row["models"]:
            m["labels"] = [codes.finding_concept(p["label"]).display if _known(p["label"]) else p["label"]
                           for p in m["present"] if p["label"] != wording.SUMMARY_LABEL or len(m["present"]) == 1]
    return rows


def _known(label: str) -> bool:
    try:
        codes.finding_concept(label)
    except (KeyError, ValueError):
        return False
    return True


@dataclass
class ModelView:
    name: str
    version: str
    state: str  # analysed | not_analysed | failed | queued | running
    reason: str
    demo: bool = False
    analysed_at: datetime | None = None
    summary: str = ""
    findings: list[dict[str, Any]] = field(default_factory=list)
    key_images: list[dict[str, Any]] = field(default_factory=list)


def study(db: Database, study_uid: str) -> dict[str, Any] | None:
    """One study: identifiers, timeline, per model the findings as the SR states them and key images,
    deliveries per destination with reasons, alerts."""
    with db.read() as session:
        s = session.scalar(select(Study).where(Study.study_uid == study_uid))
        if s is None:
            return None
        latest: dict[str, Job] = {}
        for job in session.scalars(select(Job).where(Job.study_id == s.id).order_by(Job.generation, Job.id)):
            latest[job.model_name] = job
        results = {r.job_id: r for r in session.scalars(select(Result).where(Result.job_id.in_([j.id for j in latest.values()])))}
        models = [_model_view(job, results.get(job.id)) for _name, job in sorted(latest.items())]
        series = [
            {"number": se.series_number, "modality": clean(se.modality), "description": clean(se.series_description),
             "instances": n}
            for se, n in session.execute(
                select(Series, func.count(Instance.id)).join(Instance, Instance.series_id == Series.id)
                .where(Series.study_id == s.id).group_by(Series.id).order_by(Series.series_number)
            )
        ]
        deliveries = [
            {"destination": clean(dest), "state": state.value, "objects": n, "reason": clean(err, 500),
             "sent_at": sent}
            for dest, state, err, n, sent in session.execute(
                select(Delivery.destination, Delivery.state, Delivery.last_error, func.count(), func.max(Delivery.sent_at))
                .join(Output, Output.id == Delivery.output_id).where(Output.study_id == s.id)
                .group_by(Delivery.destination, Delivery.state, Delivery.last_error).order_by(Delivery.destination)
            )
        ]
        alerts = [
            {"target": n.target, "state": n.state.value, "attempts": n.attempts, "reason": clean(n.last_error, 500),
             "sent_at": n.sent_at}
            for n in session.scalars(select(Notification).where(Notification.study_id == s.id,
                                                                Notification.state != NotificationState.SKIPPED))
        ]
        sent = [cast(datetime, d["sent_at"]) for d in deliveries if d["sent_at"] is not None and d["state"] == DeliveryState.SENT.value]
        timeline: list[tuple[str, datetime | None]] = [
            ("received", s.first_received_at), ("last instance", s.last_received_at), ("complete", s.completed_at)]
        timeline += [(f"analysed ({m.name})", m.analysed_at) for m in models if m.analysed_at]
        if sent and s.state == StudyState.DELIVERED:
            timeline.append(("delivered", max(sent)))
        return {
            "study_uid": clean(s.study_uid), "patient_id": clean(s.patient_id),
            "accession_number": clean(s.accession_number), "study_date": clean(s.study_date),
            "priority": Priority(s.priority).name if s.priority in (p.value for p in Priority) else str(s.priority),
            "stage": STAGE.get(s.state.value, s.state.value), "generation": s.generation,
            "pixels_deleted": s.pixels_deleted_at is not None,
            "timeline": timeline, "models": models, "series": series, "deliveries": deliveries, "alerts": alerts,
        }


def _model_view(job: Job, result: Result | None) -> ModelView:
    if result is None:
        return ModelView(job.model_name, "", job.state.value, clean(job.last_error, 500))
    try:
        analysis = reconcile(StudyAnalysis.from_json(result.payload))
    except (KeyError, TypeError, ValueError) as exc:
        return ModelView(result.model_name, result.model_version, result.status, f"result unreadable: {clean(exc)}")
    view = ModelView(
        clean(result.model_name), clean(result.model_version), analysis.status.value,
        clean(analysis.reason, 500) if analysis.status != AnalysisStatus.ANALYSED else "",
        demo=analysis.model.synthetic_demo, analysed_at=result.created_at, summary=clean(wording.summary(analysis), 500),
    )
    keys: dict[str, dict[str, Any]] = {}
    for f in analysis.findings:
        display = codes.finding_concept(f.label).display if _known(f.label) else clean(f.label)
        view.findings.append({"label": clean(f.label), "display": display, "verdict": wording.verdict(f),
                              "probability": f.probability, "threshold": f.threshold})
        if f.present and f.key_sop_instance_uid:
            key = keys.setdefault(f.key_sop_instance_uid, {"sop_instance_uid": clean(f.key_sop_instance_uid),
                                                           "marks": []})
            key["marks"].append({"label": display, "center": f.region_center, "radius": f.region_radius})
    view.key_images = list(keys.values())
    return view


def key_image_path(db: Database, store_root: Path, study_uid: str, sop_instance_uid: str) -> Path | None:
    """The stored file of one instance of this study (None when unknown or its pixels were deleted)."""
    with db.read() as session:
        row = session.execute(
            select(Instance.path, Study.pixels_deleted_at).join(Study, Study.id == Instance.study_id)
            .where(Instance.sop_instance_uid == sop_instance_uid, Study.study_uid == study_uid)
        ).first()
    if row is None or row[1] is not None:
        return None
    return store_root / row[0]


def operations(db: Database, config: Config) -> dict[str, Any]:
    """Queue depth, running jobs, delivery and alert backlogs with their last errors, workers seen."""
    now = utcnow()
    with db.read() as session:
        jobs = {(state.value, model): n for state, model, n in session.execute(
            select(Job.state, Job.model_name, func.count()).group_by(Job.state, Job.model_name))}
        running = [
            {"model": j.model_name, "worker": clean(j.worker_id), "attempt": j.attempts, "since": j.updated_at,
             "lease_expires_at": j.lease_expires_at}
            for j in session.scalars(select(Job).where(Job.state == JobState.RUNNING).order_by(Job.updated_at))
        ]
        workers = _workers(session, now)
        deliveries = _backlog(session, Delivery, Delivery.destination, DeliveryState.PENDING, DeliveryState.FAILED)
        alerts = _backlog(session, Notification, Notification.target, NotificationState.PENDING,
                          NotificationState.FAILED)
    models = sorted({m for _s, m in jobs} | {s.name for s in config.models.enabled})
    return {
        "jobs": [{"model": m, **{st.value: jobs.get((st.value, m), 0) for st in JobState}} for m in models],
        "running": running, "workers": workers, "deliveries": deliveries, "alerts": alerts,
        "destinations": config.destinations,
        "enabled": [{"name": s.name, "version": s.version, "enabled": s.enabled,
                     "thresholds": json.dumps(s.thresholds) if s.thresholds else ""} for s in config.models.enabled],
    }


def _workers(session: Any, now: datetime) -> list[dict[str, Any]]:
    """Workers that claimed a job in the last hour and the models they ran (workers keep no other row)."""
    seen: dict[str, dict[str, Any]] = {}
    for w, m, last in session.execute(
        select(Job.worker_id, Job.model_name, func.max(Job.updated_at))
        .where(Job.worker_id.is_not(None), Job.updated_at > now - timedelta(hours=1))
        .group_by(Job.worker_id, Job.model_name)
    ):
        entry = seen.setdefault(w, {"worker": clean(w), "models": [], "last_claim": last})
        entry["models"].append(m)
        entry["last_claim"] = max(entry["last_claim"], last)
    return list(seen.values())


def _backlog(session: Any, table: Any, key: Any, pending: Any, failed: Any) -> list[dict[str, Any]]:
    """Per destination (or alert target): pending and failed counts and the newest error."""
    out: dict[str, dict[str, Any]] = {}
    for name, state, n in session.execute(
        select(key, table.state, func.count()).where(table.state.in_([pending, failed])).group_by(key, table.state)
    ):
        out.setdefault(name, {"name": clean(name), "pending": 0, "failed": 0, "last_error": ""})[state.value] = n
    for name, entry in out.items():
        error = session.scalar(
            select(table.last_error).where(key == name, table.state.in_([pending, failed]), table.last_error != "")
            .order_by(table.id.desc()).limit(1)
        )
        entry["last_error"] = clean(error or "", 500)
    return sorted(out.values(), key=lambda e: e["name"])
