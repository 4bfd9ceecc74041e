"""Analysis during a study's grace period, by a worker with nothing else to do.

A study whose association was released completes only when `assembly.release_grace_seconds` have passed
without another association adding to it (`studies/assembler.py`). A worker that finds no job due analyses
such a study at once, one model per pass, the most urgent study first, and keeps the analysis with the
exact instances it read. When the study's job comes, the worker uses the kept analysis if it is the job
of that completion (the next generation: not a later re-analysis) and the study still has exactly those
instances (the same rows, each received at the same time with the same size: a slice sent again rewrites
both, even in a complete study it does not re-open), and analyses again otherwise. The result is the one
the job would have computed: the same pipeline on the same instances. The report, its UIDs and its
delivery are made by the job as always, so the grace period still decides when a study is complete, and
nothing is reported before. Only the time to result drops: by the analysis time, or by the grace period
when the analysis takes longer.

What it costs: an analysis of a partial study is wasted when the sender opens one association per series
and the next series comes within the grace period; a job that becomes due during an early analysis waits
for that one analysis to end. Both only when the worker was idle. An early analysis that raises, or finds
nothing to analyse, is dropped: the job analyses the study again with its own retries and report. An early
analysis has no lease: a model that hangs on a study hangs this worker as the study's job would (the job
stays queued for another worker), and one that kills the worker is tried again only while the grace
period lasts; after it, the job's leases count the deaths (docs/architecture.md).
`worker.analyse_during_grace = false` turns it off. Kept analyses live in this worker's memory: with
several workers, another worker may take the job and analyse the study itself.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from dicom_node.config import Config
from dicom_node.db.engine import Database
from dicom_node.db.schema import Instance, Job
from dicom_node.jobs.results import StudyInput
from dicom_node.ml.analysis import AnalysisStatus, InstanceRef, StudyAnalysis
from dicom_node.studies.assembler import in_grace_period

if TYPE_CHECKING:
    from dicom_node.ml.pipeline import Pipeline

log = logging.getLogger(__name__)

KEPT_ANALYSES = 8  # the most analyses kept at once (one study and model each); the oldest goes first

# what identifies the instances an analysis read: (row id, received_at, size) per instance. A re-sent
# instance rewrites its file and its received_at, even in a complete study it does not re-open.
Fingerprint = tuple[tuple[int, datetime, int], ...]


@dataclass(frozen=True)
class Kept:
    generation: int  # the generation the study's completion makes: its job's
    fingerprint: Fingerprint
    refs: tuple[InstanceRef, ...]
    analysis: StudyAnalysis


class EarlyAnalyses:
    """The analyses one worker made of studies still in their grace period, until their jobs take them."""

    def __init__(self, config: Config, db: Database, pipelines: Mapping[str, Pipeline],
                 study_input: Callable[[int], StudyInput]) -> None:
        assembly = config.assembly
        self.enabled = (config.worker.analyse_during_grace and assembly.complete_on_release
                        and assembly.release_grace_seconds > 0 and bool(pipelines))
        self.db, self.pipelines, self.study_input = db, pipelines, study_input
        self._kept: OrderedDict[tuple[int, str], Kept] = OrderedDict()  # (study id, model) -> its analysis
        self._done: dict[tuple[int, str], datetime] = {}  # (study id, model) -> last_received_at analysed

    def run_once(self) -> bool:
        """Analyse one study in its grace period with one model, if that was not done with its current
        instances (the most urgent study first), so that a job due meanwhile waits for one analysis at
        most; False when there is nothing to do (or this is turned off)."""
        if not self.enabled:
            return False
        with self.db.read() as session:
            waiting = in_grace_period(session)
        ids = {study_id for study_id, _, _ in waiting}
        self._done = {key: at for key, at in self._done.items() if key[0] in ids}
        for study_id, last_received_at, generation in waiting:
            pending = [name for name in self.pipelines if self._done.get((study_id, name)) != last_received_at]
            if not pending:
                continue
            fingerprint = self._fingerprint(study_id)  # before the files are read
            study = self.study_input(study_id)
            modalities = {r.modality for r in study.refs}
            readers = [name for name in pending if self.pipelines[name].modalities & modalities]
            for name in pending:  # the first reader is analysed now; the others do not read this study
                if name not in readers[1:]:
                    self._done[(study_id, name)] = last_received_at
            if not readers:
                continue
            name = readers[0]
            analysis = self._analyse(study, name, self.pipelines[name])
            if analysis is not None:
                self._keep((study_id, name), Kept(generation + 1, fingerprint, tuple(study.refs), analysis))
            return True
        return False

    def take(self, study: StudyInput, job: Job) -> StudyAnalysis | None:
        """The kept analysis for this job if it was made for the job's generation and read exactly the
        study's instances now (forgotten either way); None otherwise."""
        kept = self._kept.pop((study.study_id, job.model_name), None)
        if kept is None:
            return None
        if kept.generation != job.generation:
            return None  # a later completion (a re-analysis): analysed again, as asked
        if kept.refs != tuple(study.refs) or kept.fingerprint != self._fingerprint(study.study_id):
            log.info("analysis made during the grace period dropped: the study changed since",
                     extra={"study_uid": study.study_uid, "model": job.model_name})
            return None
        return kept.analysis

    def _fingerprint(self, study_id: int) -> Fingerprint:
        with self.db.read() as session:
            rows = session.execute(select(Instance.id, Instance.received_at, Instance.size)
                                   .where(Instance.study_id == study_id).order_by(Instance.id)).all()
        return tuple((int(i), at, int(size)) for i, at, size in rows)

    def _analyse(self, study: StudyInput, name: str, pipeline: Pipeline) -> StudyAnalysis | None:
        try:
            analysis = pipeline.analyse(study.refs)
        except Exception as exc:  # noqa: BLE001 - the job analyses again, with its retries and report
            log.info("analysis during the grace period failed; the study's job will analyse it",
                     extra={"study_uid": study.study_uid, "model": name, "error": f"{type(exc).__name__}: {exc}"})
            return None
        if analysis.status != AnalysisStatus.ANALYSED:
            return None  # "not analysed" may come of a passing read error: the job looks again
        log.debug("study analysed during its grace period",
                  extra={"study_uid": study.study_uid, "model": name, "instances": len(study.refs)})
        return analysis

    def _keep(self, key: tuple[int, str], kept: Kept) -> None:
        self._kept[key] = kept
        self._kept.move_to_end(key)
        while len(self._kept) > KEPT_ANALYSES:
            self._kept.popitem(last=False)
