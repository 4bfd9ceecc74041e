"""Triage: study priority from results, and the critical-finding alert that goes with it.

Rules: a present finding that its model marks critical raises the study to STAT; a result never lowers
a priority that is already higher. Raising it queues the alert (one `notifications` row per target:
webhook JSON POST, HL7 ORU^R01 over MLLP) in the same transaction as the result, so an alert is never
lost to a crash or to a receiving system that is down for a while; the serve process's notifier
(`notify/sender.py`) sends it with retries. The webhook carries UIDs, accession number, model and
findings only; the HL7 message adds the PACS's patient ID, which the receiving system needs to file it.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from sqlalchemy.orm import Session

from dicom_node.config import NotificationsConfig
from dicom_node.db.engine import utcnow
from dicom_node.db.schema import Priority, Study
from dicom_node.ml.analysis import StudyAnalysis
from dicom_node.notify import state as notify_state
from dicom_node.notify.hl7 import oru_message
from dicom_node.runtime.safe_text import clean

log = logging.getLogger(__name__)


def priority_for(analysis: StudyAnalysis) -> Priority:
    """The priority a result asks for: STAT for a present critical finding, else ROUTINE."""
    return Priority.STAT if analysis.critical else Priority.ROUTINE


def apply_priority(session: Session, study: Study, analysis: StudyAnalysis) -> bool:
    """Raise the study's priority to what the result asks for (never lower). True when it was raised.

    Raising it to STAT queues the critical-finding alert to every target in the caller's transaction.
    """
    wanted = priority_for(analysis).value
    if wanted <= study.priority:
        return False
    study.priority = wanted
    session.flush()
    notify_state.enqueue(session, study.id, alert_messages(study, analysis), utcnow())
    log.warning(
        "study raised to STAT: critical finding",
        extra={
            "study_uid": clean(study.study_uid),
            "model": analysis.model.name,
            "findings": ",".join(critical_labels(analysis)),
        },
    )
    return True


def alert_messages(study: Study, analysis: StudyAnalysis) -> dict[str, tuple[str, str]]:
    """{target: (body, control ID)}: the webhook JSON and the HL7 ORU (with a fresh MSH-10)."""
    payload = webhook_payload(study.study_uid, study.accession_number, analysis)
    control_id = uuid.uuid4().hex[:20]
    oru = oru_message(study.study_uid, study.accession_number, study.patient_id, analysis, control_id=control_id)
    return {notify_state.WEBHOOK: (json.dumps(payload), ""), notify_state.HL7: (oru, control_id)}


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
    """Called by the worker after the transaction that raised the study: the alert is already queued.

    `apply_priority` queued it durably with the result; the serve process's notifier sends it (and
    retries). Nothing is sent here any more. True when the result is critical and a target is
    configured, i.e. an alert is on its way.
    """
    del timeout, patient_id  # kept for callers; the notifier has its own timeout, the row has the ID
    if not analysis.critical:
        return False
    configured = bool(settings.webhook_url or (settings.hl7_host and settings.hl7_port))
    if configured:
        log.info("critical-finding alert queued", extra={"study_uid": clean(study_uid)})
    return configured
