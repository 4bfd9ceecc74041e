"""Recording a finished job: build its outputs, write their files into the outbox, then record the result,
the outputs, their deliveries (`delivery/fanout.py`), the job's completion, the study's priority and state
in one transaction.

The transaction is keyed so that a re-run inserts nothing twice: results by job, outputs by SOP Instance UID
(deterministic), deliveries by (output, destination). Output files are written durably into the outbox
BEFORE that transaction, under names that hold a digest of their bytes (`delivery/outbox.py`), and the
transaction only records rows: on SQLite it holds the write lock, which incoming C-STOREs wait for, so it
does no file I/O beyond checking that the files it records are there. Files no row names (a crash before
the commit, a lost lease, replaced content) are removed after the commit, or at once when recording fails.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pydicom
from sqlalchemy import select

from dicom_node.config import Config
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Instance, Job, Output, Result, Series, Study
from dicom_node.delivery import fanout, outbox
from dicom_node.delivery import state as delivery_state
from dicom_node.errors import PermanentError, TransientError
from dicom_node.jobs import queue as jobs
from dicom_node.ml.analysis import AnalysisStatus, InstanceRef, StudyAnalysis, instance_ref
from dicom_node.ml.verdicts import reconcile
from dicom_node.outputs import lineage, uids
from dicom_node.outputs.lineage import PriorReport
from dicom_node.outputs.objects import OutputObject
from dicom_node.studies import state as study_state
from dicom_node.studies import triage

log = logging.getLogger(__name__)

_RECORD_TRIES = 3  # outputs written and recorded again when a file went before its row was recorded


class BuildOutputs(Protocol):
    def __call__(self, analysis: StudyAnalysis, sources: Mapping[str, pydicom.Dataset], generation: int, *,
                 history: Sequence[PriorReport]) -> list[OutputObject]: ...


@dataclass(frozen=True)
class StudyInput:
    study_id: int
    study_uid: str
    accession_number: str
    refs: list[InstanceRef]
    patient_id: str = ""  # for the HL7 notification only; never logged


class ResultRecorder:
    """What the worker does with an analysis: its outputs, their files and the rows of a finished job."""

    def __init__(self, config: Config, db: Database, worker_id: str, build_outputs: BuildOutputs,
                 write_file: outbox.WriteFile) -> None:
        self.config, self.db, self.worker_id = config, db, worker_id
        self.build_outputs = build_outputs
        self.write_file = write_file  # how an output's file is written (atomically, durably)

    def study_input(self, study_id: int) -> StudyInput:
        with self.db.read() as session:
            study = session.get(Study, study_id)
            assert study is not None
            rows = session.execute(
                select(Instance, Series)
                .join(Series, Series.id == Instance.series_id)
                .where(Instance.study_id == study_id)
                .order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
            ).all()
            refs = [
                instance_ref(str(self.config.storage.path / i.path), _fields(study, s, i)) for i, s in rows
            ]
            return StudyInput(study.id, study.study_uid, study.accession_number, refs, study.patient_id)

    def _sources(self, study: StudyInput, analysis: StudyAnalysis) -> dict[str, pydicom.Dataset]:
        """Datasets the output builders need: every key image (with pixels) and, as the report's evidence,
        every evaluated instance (headers only); any instance when nothing was evaluated."""
        keys: list[str] = []
        evaluated: list[str] = []
        if analysis.status == AnalysisStatus.ANALYSED:
            keys += [k.sop_instance_uid for k in analysis.key_images]
            keys += [f.key_sop_instance_uid for f in analysis.findings if f.key_sop_instance_uid]
        evaluated += analysis.evaluated_sop_instance_uids
        by_uid = {r.sop_instance_uid: r for r in study.refs}
        if not any(uid in by_uid for uid in keys + evaluated) and study.refs:
            evaluated.insert(0, study.refs[0].sop_instance_uid)
        sources: dict[str, pydicom.Dataset] = {}
        for uid in dict.fromkeys(keys + evaluated):
            ref = by_uid.get(uid)
            if ref is None:
                raise PermanentError(f"key image {uid} is not an instance of study {study.study_uid}")
            sources[uid] = pydicom.dcmread(ref.path, stop_before_pixels=uid not in keys)
        return sources

    def _history(self, study: StudyInput, analysis: StudyAnalysis) -> list[PriorReport]:
        """The SRs already issued for this study and model, oldest first (see outputs.lineage)."""
        model = analysis.model
        series_uid = str(uids.series_uid(study.study_uid, model.name, model.version, uids.SR))
        with self.db.read() as session:
            rows = session.execute(
                select(Output, Result)
                .join(Result, Result.id == Output.result_id)
                .where(Output.study_id == study.study_id, Output.series_uid == series_uid)
                .order_by(Output.id)
            ).all()
            return [
                PriorReport(o.sop_instance_uid, o.sop_class_uid, o.series_uid,
                            lineage.content_digest(reconcile(StudyAnalysis.from_json(r.payload))))
                for o, r in rows
            ]

    def finish(self, job: Job, study: StudyInput, analysis: StudyAnalysis, error: str = "") -> None:
        """Write the outputs, then store the result, record the outputs, queue deliveries and complete the
        job in one transaction; then remove the files no row names."""
        with self.db.read() as session:
            row = session.get(Study, study.study_id)
            if row is None:  # study rows are never deleted (retention removes files only)
                raise RuntimeError(f"study {study.study_uid} (id {study.study_id}) is not in the database")
            current_generation = row.generation
        stale = job.generation < current_generation
        outputs: list[OutputObject] = []
        reported = analysis  # what the report says; triage follows the model's verdicts in any case
        if not stale:
            outputs, reported = self._outputs(study, analysis, job.generation)
        encoded = [(o, _encode(o.dataset)) for o in outputs]
        files = [(o, data, outbox.relpath(study.study_uid, o.sop_instance_uid, data)) for o, data in encoded]
        for tries_left in reversed(range(_RECORD_TRIES)):
            for _obj, data, rel in files:  # no transaction open: the write lock is not held over file I/O
                outbox.write(self.config.storage.outbox, rel, data, self.write_file)
            try:
                raised, recorded = self._record(job, study, analysis, reported, files, error)
                break
            except outbox.FileGone as exc:
                if not tries_left:
                    raise TransientError(f"output file {exc} kept disappearing before it was recorded") from exc
                log.warning("output file removed before it was recorded: writing it again",
                            extra={"job_id": job.id, "file": str(exc)})
            except BaseException:
                self._remove_unrecorded(study, [rel for _obj, _data, rel in files])
                raise
        for sop_instance_uid, kept in recorded.items():  # after the commit: files no row names
            outbox.remove(outbox.strays(self.config.storage.outbox, study.study_uid, sop_instance_uid, kept))
        log.info(
            "result stored",
            extra={
                "job_id": job.id,
                "study_uid": study.study_uid,
                "status": reported.status.value,
                "critical": analysis.critical,
                "outputs": len(files),
                "stale": stale,
            },
        )
        if raised:
            triage.notify_critical(
                self.config.notifications, study.study_uid, study.accession_number, analysis,
                patient_id=study.patient_id,
            )

    def _record(self, job: Job, study: StudyInput, analysis: StudyAnalysis, reported: StudyAnalysis,
                files: list[tuple[OutputObject, bytes, str]], error: str) -> tuple[bool, dict[str, str]]:
        """The one transaction of a finished job; returns whether the study was raised to STAT and, per
        output, the file its row names."""
        now = utcnow()
        recorded: dict[str, str] = {}
        with self.db.write() as session:
            jobs.complete(session, job.id, self.worker_id, error=error)  # LeaseLostError: roll back
            result, changed = _upsert_result(session, job, reported, now)
            for obj, _data, rel in files:
                recorded[obj.sop_instance_uid] = self._store_output(session, study, result, obj, rel, changed, now)
            db_study = session.get(Study, study.study_id)
            assert db_study is not None
            raised = triage.apply_priority(session, db_study, analysis)
            if study_state.analysed(session, db_study, job.generation):
                delivery_state.update_study_delivered(session, db_study.id)
        return raised, recorded

    def _remove_unrecorded(self, study: StudyInput, rels: list[str]) -> None:
        """After a failed recording: remove the files written for it that no row names (e.g. this worker
        lost its lease and another one recorded other bytes); what cannot be checked now is left for the
        next reconciliation of these outputs."""
        try:
            with self.db.read() as session:
                named = set(session.scalars(select(Output.path).where(Output.path.in_(rels))))
        except Exception:
            log.warning("unrecorded output files not checked", extra={"study_uid": study.study_uid}, exc_info=True)
            return
        outbox.remove(self.config.storage.outbox / rel for rel in rels if rel not in named)

    def _outputs(self, study: StudyInput, analysis: StudyAnalysis, generation: int
                 ) -> tuple[list[OutputObject], StudyAnalysis]:
        """The outputs for a result; when they cannot be built from this study's headers, a report that
        says the analysis failed and why (every study is answered), with the result marked FAILED."""
        try:
            return self.build_outputs(analysis, self._sources(study, analysis), generation,
                                      history=self._history(study, analysis)), analysis
        except Exception as exc:
            if analysis.status == AnalysisStatus.FAILED:
                raise
            reason = f"report could not be built: {type(exc).__name__}: {exc}"
            log.warning("outputs not built: reporting the analysis as failed",
                        extra={"study_uid": study.study_uid, "model": analysis.model.name, "reason": reason})
            failed = StudyAnalysis(model=analysis.model, status=AnalysisStatus.FAILED, reason=reason,
                                   study_uid=study.study_uid,
                                   evaluated_series_uids=analysis.evaluated_series_uids,
                                   evaluated_sop_instance_uids=analysis.evaluated_sop_instance_uids)
            return self.build_outputs(failed, self._sources(study, failed), generation,
                                      history=self._history(study, failed)), failed

    def _store_output(
        self,
        session: Any,
        study: StudyInput,
        result: Result,
        obj: OutputObject,
        relpath: str,
        changed: bool,
        now: Any,
    ) -> str:
        """Record one output whose file `relpath` is written; returns the file its row names."""
        existing = session.scalar(
            select(Output).where(Output.sop_instance_uid == obj.sop_instance_uid).with_for_update()
        )
        replaced = False
        if existing is not None and not changed and (self.config.storage.outbox / existing.path).is_file():
            row = existing
        else:
            if not (self.config.storage.outbox / relpath).is_file():  # a stat, no I/O: written before
                raise outbox.FileGone(relpath)
            if existing is None:
                row = Output(
                    study_id=study.study_id,
                    result_id=result.id,
                    kind=obj.kind,
                    sop_class_uid=obj.sop_class_uid,
                    sop_instance_uid=obj.sop_instance_uid,
                    series_uid=obj.series_uid,
                    path=relpath,
                    created_at=now,
                )
                session.add(row)
                session.flush()
            else:
                row = existing
                row.result_id, row.path, row.kind = result.id, relpath, obj.kind
                replaced = True
        fanout.fan_out(session, row.id, [d.name for d in self.config.destinations], now, replaced=replaced)
        return str(row.path)

def _upsert_result(session: Any, job: Job, analysis: StudyAnalysis, now: Any) -> tuple[Result, bool]:
    payload = analysis.to_json()
    existing = session.scalar(select(Result).where(Result.job_id == job.id))
    if existing is not None:
        changed = existing.payload != payload
        existing.status, existing.critical, existing.payload = (
            analysis.status.value,
            analysis.critical,
            payload,
        )
        existing.model_version, existing.created_at = analysis.model.version, now
        session.flush()
        return existing, changed
    result = Result(
        job_id=job.id,
        study_id=job.study_id,
        model_name=analysis.model.name,
        model_version=analysis.model.version,
        status=analysis.status.value,
        critical=analysis.critical,
        payload=payload,
        created_at=now,
    )
    session.add(result)
    session.flush()
    return result, True


def _encode(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _fields(study: Study, series: Series, inst: Instance) -> dict[str, Any]:
    return {
        "study_uid": study.study_uid,
        "series_uid": series.series_uid,
        "sop_instance_uid": inst.sop_instance_uid,
        "sop_class_uid": inst.sop_class_uid,
        "modality": series.modality,
        "series_description": series.series_description,
        "body_part": series.body_part,
        "series_number": series.series_number,
        "instance_number": inst.instance_number,
        "image_type": inst.image_type,
        "image_orientation": inst.image_orientation,
        "image_position": inst.image_position,
        "slice_thickness": inst.slice_thickness,
        "contrast_agent": inst.contrast_agent,
        "rows": inst.rows,
        "columns": inst.columns,
        "convolution_kernel": inst.convolution_kernel,
    }
