"""Report rows: storing (idempotent per message), superseding, refusals, matching to studies, labels.

Every function runs in the caller's transaction (`Database.write()`), so a report is on disk before the
sender hears AA. Matching is a query, not a stored link: a report belongs to a study when its Study
Instance UID equals the study's, or its accession number equals the study's, and the patient IDs do not
disagree (both present and different refuses the match). So it matches whichever of report and images
arrives first, and a study received later finds the reports that waited for it.

Superseding: the reports with the same `match_key` (accession number, else Study Instance UID) are one
report's versions; the current one has the highest (status rank, report time, arrival): a final (F) or
correction (C) outranks a preliminary (P); among equals the newer report time wins, then the later arrival.
A cancelled report (X) is stored and, when current, means "no report".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dicom_node.db.schema import RadiologyReport, ReportLabel, ReportRejection, Study

log = logging.getLogger(__name__)

_PRELIMINARY = {"P", "I", "S", "R", "O"}  # HL7 0123: preliminary, in process, scheduled, not verified, ordered


@dataclass(frozen=True)
class IncomingReport:
    source: str  # hl7 | import
    source_key: str
    accession_number: str
    study_uid: str
    patient_id: str
    status: str
    reported_at: datetime | None
    text: str

    @property
    def match_key(self) -> str:
        return f"acc:{self.accession_number}" if self.accession_number else f"uid:{self.study_uid}"


def _rank(r: RadiologyReport) -> tuple[int, datetime, datetime, int]:
    return (0 if r.status in _PRELIMINARY else 1, r.reported_at or r.received_at, r.received_at, r.id)


def store(session: Session, incoming: IncomingReport, now: datetime) -> tuple[RadiologyReport, bool]:
    """The report's row and whether it is new (a repeated message returns the row it made before)."""
    existing = session.scalar(select(RadiologyReport).where(RadiologyReport.source_key == incoming.source_key))
    if existing is not None:
        return existing, False
    row = RadiologyReport(
        source=incoming.source, source_key=incoming.source_key, match_key=incoming.match_key,
        accession_number=incoming.accession_number, study_uid=incoming.study_uid, patient_id=incoming.patient_id,
        status=incoming.status or "F", reported_at=incoming.reported_at, received_at=now, text=incoming.text,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:  # the same message stored by another connection a moment ago
        existing = session.scalar(select(RadiologyReport).where(RadiologyReport.source_key == incoming.source_key))
        if existing is None:
            raise
        return existing, False
    _supersede(session, row.match_key, now)
    return row, True


def _supersede(session: Session, match_key: str, now: datetime) -> None:
    versions = list(session.scalars(select(RadiologyReport).where(RadiologyReport.match_key == match_key)))
    current = max(versions, key=_rank)
    for r in versions:
        if r.id == current.id:
            r.superseded_by, r.superseded_at = None, None
        elif r.superseded_by != current.id:
            r.superseded_by, r.superseded_at = current.id, now
            log.info("report superseded", extra={"report_id": r.id, "by": current.id})


def reject(session: Session, source: str, raw: str, reason: str, control_id: str, now: datetime) -> int:
    row = ReportRejection(received_at=now, source=source[:255], control_id=control_id[:64], reason=reason, raw=raw)
    session.add(row)
    session.flush()
    return row.id


def _compatible(report: RadiologyReport, study: Study) -> bool:
    uid = bool(report.study_uid) and report.study_uid == study.study_uid
    acc = bool(report.accession_number) and report.accession_number == study.accession_number
    if not (uid or acc):
        return False
    return not (report.patient_id and study.patient_id and report.patient_id != study.patient_id)


def current_reports(session: Session, studies: Sequence[Study]) -> dict[int, RadiologyReport]:
    """{study id: its current report} for the studies that have one (not cancelled)."""
    uids = [s.study_uid for s in studies if s.study_uid]
    accs = [s.accession_number for s in studies if s.accession_number]
    if not uids and not accs:
        return {}
    out: dict[int, RadiologyReport] = {}
    for chunk_uids, chunk_accs in _chunks(uids, accs):
        rows = session.scalars(select(RadiologyReport).where(
            RadiologyReport.superseded_by.is_(None),
            or_(RadiologyReport.study_uid.in_(chunk_uids), RadiologyReport.accession_number.in_(chunk_accs)),
        ))
        for report in rows:
            for study in studies:
                if _compatible(report, study) and report.status != "X":
                    best = out.get(study.id)
                    if best is None or _rank(report) > _rank(best):
                        out[study.id] = report
    return out


def _chunks(uids: list[str], accs: list[str], size: int = 400) -> Iterable[tuple[list[str], list[str]]]:
    n = max(len(uids), len(accs))
    for i in range(0, max(n, 1), size):
        yield uids[i:i + size], accs[i:i + size]


def studies_for(session: Session, report: RadiologyReport) -> list[Study]:
    """The studies a report is matched to (none yet when its images have not arrived)."""
    conditions = []
    if report.study_uid:
        conditions.append(Study.study_uid == report.study_uid)
    if report.accession_number:
        conditions.append(Study.accession_number == report.accession_number)
    if not conditions:
        return []
    return [s for s in session.scalars(select(Study).where(or_(*conditions))) if _compatible(report, s)]


def unlabelled(session: Session, model_name: str, model_version: str, limit: int = 500) -> list[RadiologyReport]:
    """Current reports the labeller version has not labelled yet, oldest first."""
    done = select(ReportLabel.report_id).where(ReportLabel.model_name == model_name,
                                               ReportLabel.model_version == model_version)
    return list(session.scalars(
        select(RadiologyReport).where(RadiologyReport.superseded_by.is_(None), RadiologyReport.id.not_in(done))
        .order_by(RadiologyReport.id).limit(limit)))


def save_labels(session: Session, report_id: int, model_name: str, model_version: str, manifest_sha256: str,
                probabilities: dict[str, float], positive: list[str], now: datetime) -> None:
    exists = session.scalar(select(ReportLabel.id).where(
        ReportLabel.report_id == report_id, ReportLabel.model_name == model_name,
        ReportLabel.model_version == model_version))
    if exists is None:
        session.add(ReportLabel(report_id=report_id, model_name=model_name, model_version=model_version,
                                manifest_sha256=manifest_sha256, probabilities=probabilities, positive=positive,
                                created_at=now))


def labels_for(session: Session, report_ids: Iterable[int], model_name: str, model_version: str
               ) -> dict[int, ReportLabel]:
    ids = list(report_ids)
    out: dict[int, ReportLabel] = {}
    for i in range(0, len(ids), 500):
        for row in session.scalars(select(ReportLabel).where(
                ReportLabel.report_id.in_(ids[i:i + 500]), ReportLabel.model_name == model_name,
                ReportLabel.model_version == model_version)):
            out[row.report_id] = row
    return out
