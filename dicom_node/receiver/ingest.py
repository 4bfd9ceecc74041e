"""Index a received instance: parse its header from the raw bytes and upsert study/series/instance rows.

Parsing never touches pixel data (`stop_before_pixels`). The three rows are written in one transaction,
so an instance is either fully indexed or not at all. A repeated SOP Instance UID updates its row
(idempotent); a new instance for a study that was already complete re-opens it (state RECEIVING). A
series or SOP instance that the node holds under another study is refused (ConflictingIdentifiersError):
linking it would mix two patients' images. A deflated dataset is inflated in bounded steps first, and
refused (DatasetTooLargeError) beyond MAX_INFLATED_BYTES.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from typing import Any

import pydicom
from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Association, Base, Instance, Series, Study, StudyState
from dicom_node.errors import ConflictingIdentifiersError, DatasetTooLargeError, UnparseableDatasetError
from dicom_node.ml.analysis import header_fields
from dicom_node.studies import state as study_state

log = logging.getLogger(__name__)

_REQUIRED = ("study_uid", "series_uid", "sop_instance_uid", "sop_class_uid")
_UPSERT_ATTEMPTS = 3
DEFLATED = "1.2.840.10008.1.2.1.99"
MAX_INFLATED_BYTES = 512 * 1024 * 1024  # a deflated dataset may not inflate beyond this (deflate bombs)


def _table(model: type[Base]) -> Table:
    """The Table a model maps (SQLAlchemy types `__table__` as the broader FromClause)."""
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a single Table")
    return table


@dataclass(frozen=True)
class ParsedInstance:
    """The header of one received instance: indexed fields plus the study-level identifiers."""

    fields: dict[str, Any]  # `analysis.header_fields()` output
    transfer_syntax_uid: str
    patient_id: str
    accession_number: str
    study_date: str

    @property
    def study_uid(self) -> str:
        return str(self.fields["study_uid"])

    @property
    def series_uid(self) -> str:
        return str(self.fields["series_uid"])

    @property
    def sop_instance_uid(self) -> str:
        return str(self.fields["sop_instance_uid"])


@dataclass(frozen=True)
class Recorded:
    """What `record_instance` did."""

    study_id: int
    new_instance: bool
    reopened: bool
    replaced_path: str | None  # a duplicate's previous path when it moved (its file can go)


def _meta_and_body(data: bytes) -> tuple[str, int]:
    """(transfer syntax UID, offset of the dataset) from the file meta, without reading the dataset."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    fp = BytesIO(data)
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    return str(meta.get("TransferSyntaxUID", "")), fp.tell()


def check_inflated_size(data: bytes, limit: int | None = None) -> None:
    """Refuse a deflated dataset that would inflate beyond `limit` (default MAX_INFLATED_BYTES) bytes,
    inflating it in bounded steps."""
    limit = MAX_INFLATED_BYTES if limit is None else limit
    try:
        syntax, offset = _meta_and_body(data)
    except Exception:  # noqa: BLE001 - no usable file meta: parse_instance says why
        return
    if syntax != DEFLATED:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total, chunk = 0, memoryview(data)[offset:]
    try:
        while True:
            out = inflater.decompress(chunk, 16 * 1024 * 1024)
            total += len(out)
            if total > limit:
                raise DatasetTooLargeError(f"deflated dataset inflates beyond {limit // (1024 * 1024)} MB")
            chunk = memoryview(inflater.unconsumed_tail)
            if not chunk:
                return
    except zlib.error as exc:
        raise UnparseableDatasetError(f"cannot inflate deflated dataset: {exc}") from exc


def parse_instance(data: bytes) -> ParsedInstance:
    """Parse the header of a DICOM file's bytes. Raises UnparseableDatasetError saying why, and
    DatasetTooLargeError for a deflated dataset that would inflate beyond MAX_INFLATED_BYTES."""
    check_inflated_size(data)
    try:
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
        fields = header_fields(ds)
        meta = getattr(ds, "file_meta", None)
        tsyntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        patient_id = str(ds.get("PatientID", "") or "")[:64]
        accession = str(ds.get("AccessionNumber", "") or "")[:16]
        study_date = str(ds.get("StudyDate", "") or "")[:8]
    except UnparseableDatasetError:
        raise
    except Exception as exc:  # pydicom raises many kinds on malformed input; all mean "cannot parse"
        raise UnparseableDatasetError(f"cannot parse dataset: {type(exc).__name__}: {exc}") from exc
    missing = [k for k in _REQUIRED if not fields.get(k)]
    if missing:
        raise UnparseableDatasetError(f"dataset lacks {', '.join(missing)}")
    too_long = [k for k in _REQUIRED if len(str(fields[k])) > 64]
    if too_long:
        raise UnparseableDatasetError(f"UID longer than 64 characters: {', '.join(too_long)}")
    if not tsyntax:
        raise UnparseableDatasetError("no transfer syntax in file meta")
    return ParsedInstance(fields, tsyntax, patient_id, accession, study_date)


def record_instance(
    db: Database,
    parsed: ParsedInstance,
    relpath: str,
    size: int,
    calling_ae: str,
    association_id: str | None,
    now: datetime | None = None,
) -> Recorded:
    """Upsert the study, series and instance rows for one stored file, in one transaction."""
    now = now or utcnow()
    for attempt in range(1, _UPSERT_ATTEMPTS + 1):
        try:
            with db.write() as session:
                return _upsert(session, parsed, relpath, size, calling_ae, association_id, now)
        except IntegrityError:
            # Another process inserted the same study/series/instance between our select and insert
            # (PostgreSQL; SQLite's BEGIN IMMEDIATE serialises writers): the next attempt sees its row.
            if attempt == _UPSERT_ATTEMPTS:
                raise
            log.info("concurrent insert, retrying upsert", extra={"sop_instance_uid": parsed.sop_instance_uid})
    raise AssertionError("unreachable")


def _upsert(
    session: Session,
    parsed: ParsedInstance,
    relpath: str,
    size: int,
    calling_ae: str,
    association_id: str | None,
    now: datetime,
) -> Recorded:
    # Core statements, not ORM units of work: this runs once per received instance.
    f = parsed.fields
    studies, series_t, instances = _table(Study), _table(Series), _table(Instance)
    row = session.execute(
        select(studies.c.id, studies.c.state, studies.c.generation).where(studies.c.study_uid == parsed.study_uid)
    ).first()
    if row is None:
        study_id = session.execute(
            insert(studies)
            .values(
                study_uid=parsed.study_uid,
                patient_id=parsed.patient_id,
                accession_number=parsed.accession_number,
                study_date=parsed.study_date,
                **study_state.arrival(),
                generation=0,
                priority=0,
                first_received_at=now,
                last_received_at=now,
            )
            .returning(studies.c.id)
        ).scalar_one()
        state, generation = StudyState.RECEIVING, 0
    else:
        study_id, state, generation = row.id, StudyState(row.state), row.generation

    series_row = session.execute(
        select(series_t.c.id, series_t.c.study_id).where(series_t.c.series_uid == parsed.series_uid)).first()
    if series_row is not None and series_row.study_id != study_id:
        raise ConflictingIdentifiersError(f"series {parsed.series_uid} belongs to another study")
    series_id = series_row.id if series_row is not None else None
    if series_id is None:
        series_id = session.execute(
            insert(series_t)
            .values(
                study_id=study_id,
                series_uid=parsed.series_uid,
                modality=f["modality"][:16],
                series_number=f["series_number"],
                series_description=f["series_description"],
                body_part=f["body_part"],
            )
            .returning(series_t.c.id)
        ).scalar_one()

    values = {
        "study_id": study_id,
        "series_id": series_id,
        "sop_class_uid": f["sop_class_uid"],
        "transfer_syntax_uid": parsed.transfer_syntax_uid,
        "path": relpath,
        "size": size,
        "instance_number": f["instance_number"],
        "image_type": f["image_type"],
        "image_orientation": f["image_orientation"],
        "image_position": f["image_position"],
        "slice_thickness": f["slice_thickness"],
        "contrast_agent": f["contrast_agent"],
        "rows": f["rows"],
        "columns": f["columns"],
        "convolution_kernel": f["convolution_kernel"],
        "calling_ae": calling_ae[:16],
        "association_id": association_id,
        "received_at": now,
    }
    existing = session.execute(
        select(instances.c.id, instances.c.path, instances.c.study_id)
        .where(instances.c.sop_instance_uid == parsed.sop_instance_uid)
    ).first()
    if existing is not None and existing.study_id != study_id:
        raise ConflictingIdentifiersError(f"SOP instance {parsed.sop_instance_uid} belongs to another study")
    new_instance = existing is None
    replaced_path: str | None = None
    if existing is None:
        session.execute(insert(instances).values(sop_instance_uid=parsed.sop_instance_uid, **values))
    else:
        if existing.path != relpath:
            replaced_path = existing.path
        session.execute(update(instances).where(instances.c.id == existing.id).values(**values))

    study_values: dict[str, Any] = dict(study_state.receiving(state, new_instance))
    reopened = bool(study_values)
    if reopened:
        log.info("late instance re-opens study", extra={"study_uid": parsed.study_uid, "generation": generation})
    if new_instance or state == StudyState.RECEIVING:
        study_values.update(last_received_at=now, last_association_id=association_id)
    if study_values:
        session.execute(update(studies).where(studies.c.id == study_id).values(**study_values))
    if association_id is not None:
        session.execute(
            update(Association).where(Association.id == association_id).values(n_stored=Association.n_stored + 1)
        )
    return Recorded(study_id=study_id, new_instance=new_instance, reopened=reopened, replaced_path=replaced_path)
