"""Triage: study priority from results, and notifications for critical findings.

Rules: a present finding that its model marks critical raises the study to STAT; a result never lowers
a priority that is already higher. Notifications (webhook JSON POST) carry UIDs, accession number,
model and findings only: no patient name, birth date or other demographics.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
import uuid
from typing import Any

from sqlalchemy.orm import Session

from dicom_node.analysis import StudyAnalysis
from dicom_node.config import NotificationsConfig
from dicom_node.db.schema import Priority, Study
from dicom_node.hl7 import oru_message, send_mllp

log = logging.getLogger(__name__)


def priority_for(analysis: StudyAnalysis) -> Priority:
    """The priority a result asks for: STAT for a present critical finding, else ROUTINE."""
    return Priority.STAT if analysis.critical else Priority.ROUTINE


def apply_priority(session: Session, study: Study, analysis: StudyAnalysis) -> bool:
    """Raise the study's priority to what the result asks for (never lower). True when it was raised."""
    wanted = priority_for(analysis).value
    if wanted <= study.priority:
        return False
    study.priority = wanted
    session.flush()
    log.warning(
        "study raised to STAT: critical finding",
        extra={
            "study_uid": study.study_uid,
            "model": analysis.model.name,
            "findings": ",".join(critical_labels(analysis)),
        },
    )
    return True


def critical_labels(analysis: StudyAnalysis) -> list[str]:
    return [f.label for f in analysis.findings if f.present and f.critical]


def webhook_payload(study_uid: str, accession_number: str, analysis: StudyAnalysis) -> dict[str, Any]:
    """The JSON body of a critical-finding notification: identifiers and findings, no demographics."""
    return {
        "event": "critical_finding",
        "priority": Priority.STAT.name,
        "study_instance_uid": study_uid,
        "accession_number": accession_number,
        "model": {
            "name": analysis.model.name,
            "version": analysis.model.version,
            "synthetic_demo": analysis.model.synthetic_demo,
        },
        "findings": [
            {"label": f.label, "probability": round(f.probability, 4), "threshold": f.threshold}
            for f in analysis.findings
            if f.present and f.critical
        ],
        "note": "AI result, not verified by a physician",
    }


def notify_critical(
    settings: NotificationsConfig,
    study_uid: str,
    accession_number: str,
    analysis: StudyAnalysis,
    timeout: float = 5.0,
    patient_id: str = "",
) -> bool:
    """Notify a critical finding: the JSON webhook and/or an HL7 ORU over MLLP, whichever is configured.

    Best effort: True when at least one was delivered. Call after the result is committed; a failure is
    logged and never undoes the result.
    """
    if not analysis.critical:
        return False
    sent = False
    if settings.hl7_host and settings.hl7_port:
        sent = _send_hl7(settings, study_uid, accession_number, patient_id, analysis, timeout)
    if not settings.webhook_url:
        return sent
    body = json.dumps(webhook_payload(study_uid, accession_number, analysis)).encode("utf-8")
    request = urllib.request.Request(
        settings.webhook_url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            ok = 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("critical-finding webhook failed", extra={"study_uid": study_uid, "error": str(exc)})
        return False
    if ok:
        log.info("critical-finding webhook sent", extra={"study_uid": study_uid})
    else:
        log.warning("critical-finding webhook answered an error", extra={"study_uid": study_uid})
    return ok or sent


def _send_hl7(
    settings: NotificationsConfig,
    study_uid: str,
    accession_number: str,
    patient_id: str,
    analysis: StudyAnalysis,
    timeout: float,
) -> bool:
    message = oru_message(study_uid, accession_number, patient_id, analysis, control_id=uuid.uuid4().hex[:20])
    try:
        ack = send_mllp(settings.hl7_host, settings.hl7_port, message, timeout)
    except (OSError, ValueError) as exc:
        log.warning("critical-finding HL7 message failed", extra={"study_uid": study_uid, "error": str(exc)})
        return False
    if ack != "AA":
        log.warning("critical-finding HL7 message not accepted", extra={"study_uid": study_uid, "ack": ack})
        return False
    log.info("critical-finding HL7 message sent", extra={"study_uid": study_uid})
    return True
