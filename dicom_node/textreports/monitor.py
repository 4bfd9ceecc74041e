"""AI versus the final report: agreement per model version and label, discordant studies, and alerts.

For each study with an analysed AI result in the window (the latest result per study and model version)
and a current report labelled by the report labeller, the AI verdict of each model label that has a
report label (`REPORT_LABEL`: ICH `any` -> `hemorrhage`; otherwise the same name, e.g. `subdural`, `sih`,
`microbleeds`) is compared with the report's. Per model, version and label: TP, FP, FN, TN; sensitivity,
specificity, PPV and NPV with Wilson 95 % intervals; the discordant studies (AI positive / report
negative, and the reverse), to review.

`check_alerts` opens one alert per model version, label and rate when the rate is below its floor
(`[reports] min_sensitivity` / `min_specificity`) with at least `min_cases` in its denominator, logs it
(ERROR), and queues a webhook (`[reports] alert_webhook_url`) sent under the alerts' retry policy; the
alert clears (INFO) when the rate is back at or above the floor. Open alerts are also what the dashboard
and /metrics can show (`open_alerts`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db import claims
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import MonitorAlert, NotificationState, Result, Study
from dicom_node.ml.analysis import AnalysisStatus, StudyAnalysis
from dicom_node.ml.verdicts import reconcile
from dicom_node.runtime.retry import RetryPolicy, count_failure
from dicom_node.runtime.safe_text import clean
from dicom_node.textreports import LABELS, store

log = logging.getLogger(__name__)

REPORT_LABEL = {"any": "hemorrhage"}  # AI label -> report label, where the names differ
METRICS = ("sensitivity", "specificity")


def report_label(ai_label: str) -> str | None:
    mapped = REPORT_LABEL.get(ai_label, ai_label)
    return mapped if mapped in LABELS else None


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float | None, float | None]:
    """Wilson score 95 % interval of k successes in n (None, None when n = 0)."""
    if n == 0:
        return None, None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)


@dataclass
class Agreement:
    model: str
    version: str
    label: str  # the model's label
    report_label: str
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    discordant: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    def rate(self, metric: str) -> tuple[int, int]:
        """(numerator, denominator) of sensitivity, specificity, ppv or npv."""
        return {"sensitivity": (self.tp, self.tp + self.fn), "specificity": (self.tn, self.tn + self.fp),
                "ppv": (self.tp, self.tp + self.fp), "npv": (self.tn, self.tn + self.fn)}[metric]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in asdict(self).items() if k != "discordant"}
        out["n"] = self.n
        for metric in ("sensitivity", "specificity", "ppv", "npv"):
            k, n = self.rate(metric)
            out[metric] = round(k / n, 6) if n else None
            out[f"{metric}_ci"] = list(wilson(k, n))
        out["discordant"] = self.discordant
        return out


def _latest_results(session: Session, since: datetime, until: datetime) -> list[tuple[Result, Study]]:
    rows = session.execute(
        select(Result, Study).join(Study, Study.id == Result.study_id)
        .where(Result.created_at >= since, Result.created_at <= until, Result.status == AnalysisStatus.ANALYSED.value)
        .order_by(Result.id)
    ).all()
    latest: dict[tuple[int, str, str], tuple[Result, Study]] = {}
    for result, study in rows:
        latest[(study.id, result.model_name, result.model_version)] = (result, study)
    return list(latest.values())


def agreement(session: Session, labeller_name: str, labeller_version: str, since: datetime,
              until: datetime | None = None) -> list[Agreement]:
    """Agreement per model, version and label over the results created in [since, until]."""
    until = until or utcnow()
    pairs = _latest_results(session, since, until)
    studies = list({s.id: s for _, s in pairs}.values())
    reports = store.current_reports(session, studies)
    labels = store.labels_for(session, (r.id for r in reports.values()), labeller_name, labeller_version)
    out: dict[tuple[str, str, str], Agreement] = {}
    for result, study in pairs:
        report = reports.get(study.id)
        if report is None or report.id not in labels:
            continue
        rl = labels[report.id]
        analysis = reconcile(StudyAnalysis.from_json(result.payload))
        for finding in analysis.findings:
            target = report_label(finding.label)
            if target is None or finding.present is None:
                continue
            key = (result.model_name, result.model_version, finding.label)
            a = out.setdefault(key, Agreement(result.model_name, result.model_version, finding.label, target))
            ai, truth = bool(finding.present), target in rl.positive
            if ai and truth:
                a.tp += 1
            elif ai:
                a.fp += 1
            elif truth:
                a.fn += 1
            else:
                a.tn += 1
            if ai != truth:
                a.discordant.append({
                    "kind": "ai_positive_report_negative" if ai else "ai_negative_report_positive",
                    "study_uid": study.study_uid, "accession_number": study.accession_number,
                    "ai_probability": round(float(finding.probability), 4),
                    "report_probability": round(float(rl.probabilities.get(target, 0.0)), 4),
                    "report_id": report.id, "result_at": result.created_at.isoformat(timespec="seconds"),
                })
    return [out[k] for k in sorted(out)]


def check_alerts(session: Session, found: list[Agreement], floors: dict[str, float], min_cases: int,
                 window_days: float, webhook: bool, now: datetime) -> tuple[int, int]:
    """Open alerts for rates below their floors, clear those back above; returns (opened, cleared)."""
    opened = cleared = 0
    open_rows = {(a.model_name, a.model_version, a.label, a.metric): a for a in session.scalars(
        select(MonitorAlert).where(MonitorAlert.cleared_at.is_(None)))}
    for a in found:
        for metric in METRICS:
            floor = floors.get(metric, 0.0)
            k, n = a.rate(metric)
            key = (a.model, a.version, a.label, metric)
            row = open_rows.get(key)
            if floor <= 0 or n < min_cases:
                continue
            value = k / n
            context = {"model": a.model, "version": a.version, "label": a.label, "metric": metric,
                       "value": round(value, 4), "floor": floor, "cases": n}
            if value < floor and row is None:
                body = json.dumps({"event": "ai_report_agreement_below_floor", **context, "window_days": window_days,
                                   "confidence_interval": list(wilson(k, n)), "at": now.isoformat(timespec="seconds")})
                session.add(MonitorAlert(
                    model_name=a.model, model_version=a.version, label=a.label, metric=metric, value=value,
                    floor=floor, cases=n, window_days=window_days, body=body, created_at=now, next_attempt_at=now,
                    attempts=0, last_error="",
                    state=NotificationState.PENDING if webhook else NotificationState.SKIPPED))
                opened += 1
                log.error("AI-vs-report agreement below its floor", extra=context)
            elif value >= floor and row is not None:
                row.cleared_at = now
                cleared += 1
                log.info("AI-vs-report agreement back at its floor", extra=context)
    session.flush()
    return opened, cleared


def open_alerts(session: Session) -> list[MonitorAlert]:
    return list(session.scalars(select(MonitorAlert).where(MonitorAlert.cleared_at.is_(None))
                                .order_by(MonitorAlert.id)))


def send_alerts(db: Database, url: str, policy: RetryPolicy, owner: str, lease_seconds: float,
                timeout: float = 5.0) -> int:
    """POST the due alert webhooks this process claims (`db/claims.py`: two `serve` processes on one
    database never post the same alert; a dead one's claim is taken over after `lease_seconds`); returns
    how many were delivered. An outcome is recorded only while the claim is still ours."""
    from dicom_node.notify.sender import post_json

    lease = max(lease_seconds, 3 * timeout)
    with db.write() as session:
        now = utcnow()
        ids = claims.claim(session, MonitorAlert, [MonitorAlert.state == NotificationState.PENDING,
                                                   MonitorAlert.next_attempt_at <= now],
                           [MonitorAlert.id], owner, lease, now, limit=100)
        due = [(a.id, a.body) for a in session.scalars(select(MonitorAlert).where(MonitorAlert.id.in_(ids))
                                                       .order_by(MonitorAlert.id))]
    sent = 0
    for alert_id, body in due:
        error, permanent = post_json(url, body, timeout)
        with db.write() as session:
            row = session.get(MonitorAlert, alert_id)
            if row is None or row.state != NotificationState.PENDING or not claims.settle(
                    row, owner, "monitor_alert", alert_id):
                continue
            if not error:
                row.state, row.sent_at, row.last_error = NotificationState.SENT, utcnow(), ""
                row.attempts += 1
                sent += 1
            elif count_failure(row, policy, error, utcnow(), permanent):
                row.state = NotificationState.FAILED
                log.error("monitoring alert webhook failed for good", extra={"alert_id": alert_id,
                                                                            "reason": clean(error)})
    return sent


def window(days: float, now: datetime | None = None) -> tuple[datetime, datetime]:
    now = now or utcnow()
    return now - timedelta(days=days), now
