"""`reports import FILE`: reports exported from a RIS as CSV or JSONL, stored like HL7 ones.

Keys (CSV header names or JSON keys; case and `_`/space ignored): `text` (required); `accession_number`
(or `accession`, `AccessionNumber`) and/or `study_uid` (or `StudyInstanceUID`) - at least one; optional
`id` (the RIS's report ID: a repeated import of the same ID is skipped), `patient_id`, `status`
(P/F/C/X, default F), `report_time` (ISO 8601 or HL7 YYYYMMDDHHMMSS). A row without an ID is identified
by the sha256 of its content, so importing a file twice stores nothing twice. Rows that cannot be stored
are kept in `report_rejections` with the reason (`import <file>:<line>`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dicom_node.db.engine import Database, utcnow
from dicom_node.textreports import store
from dicom_node.textreports.files import read_records
from dicom_node.textreports.hl7in import hl7_time

log = logging.getLogger(__name__)

_ALIASES = {
    "text": ("text", "report", "reporttext", "body"),
    "id": ("id", "reportid"),
    "accession_number": ("accessionnumber", "accession", "accno"),
    "study_uid": ("studyuid", "studyinstanceuid"),
    "patient_id": ("patientid", "mrn"),
    "status": ("status", "resultstatus"),
    "report_time": ("reporttime", "reportedat", "reportdate", "signedat", "time"),
}


@dataclass
class ImportResult:
    imported: int = 0
    repeated: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)


def _key(name: str) -> str:
    return name.lower().replace("_", "").replace(" ", "")


def _pick(record: dict[str, Any]) -> dict[str, str]:
    flat = {_key(str(k)): "" if v is None else str(v) for k, v in record.items()}
    return {name: next((flat[a] for a in aliases if a in flat), "") for name, aliases in _ALIASES.items()}


def _time(value: str) -> datetime | None:
    value = value.strip()
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return hl7_time(value)
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def _problem(row: dict[str, str]) -> str:
    if not row["text"].strip():
        return "no report text"
    if not row["accession_number"].strip() and not row["study_uid"].strip():
        return "no accession number and no Study Instance UID: the report could never be matched to a study"
    if any(len(row[k]) > 64 for k in ("accession_number", "study_uid", "patient_id")):
        return "accession number, Study Instance UID or patient ID longer than 64 characters"
    if row["report_time"].strip() and _time(row["report_time"]) is None:
        return f"report_time {row['report_time'][:40]!r} is not ISO 8601 or YYYYMMDDHHMMSS"
    return ""


def import_file(db: Database, path: Path) -> ImportResult:
    """Store every report of a CSV/JSONL file; ValueError/TypeError when the file itself cannot be read."""
    result = ImportResult()
    name = Path(path).name
    records = list(read_records(path))
    with db.write() as session:
        now = utcnow()
        for line, record in records:
            row = _pick(record)
            problem = _problem(row)
            if problem:
                store.reject(session, f"import {name}:{line}", json.dumps(record, default=str), problem, row["id"], now)
                result.rejected.append((line, problem))
                continue
            ident = row["id"].strip() or hashlib.sha256(
                json.dumps(row, sort_keys=True).encode("utf-8")).hexdigest()
            incoming = store.IncomingReport(
                "import", f"import:{ident}"[:255], row["accession_number"].strip(), row["study_uid"].strip(),
                row["patient_id"].strip(), (row["status"].strip() or "F")[:1].upper(), _time(row["report_time"]),
                row["text"])
            _, new = store.store(session, incoming, now)
            if new:
                result.imported += 1
            else:
                result.repeated += 1
    log.info("reports imported", extra={"file": name, "imported": result.imported, "repeated": result.repeated,
                                        "rejected": len(result.rejected)})
    return result
