"""Analysis during a study's grace period, by a worker with nothing else to do.

A study whose association was released completes only when `assembly.release_grace_seconds` have passed
without another association adding to it (`studies/assembler.py`). A worker that finds no job due analyses
such a study at once and keeps the analysis, with the exact instances it read. When the study's job comes,
the worker uses the kept analysis if it is the job of that completion (the next generation: not a later
re-analysis) and the study still has exactly those instances (same rows, same files), and analyses again
otherwise. The result is the one the job would have computed: the same pipeline on the
same instances. The report, its UIDs and its delivery are made by the job as always, so the grace period
still decides when a study is complete, and nothing is reported before. Only the time to result drops: by
the analysis time, or by the grace period when the analysis takes longer.

What it costs: an analysis of a partial study is wasted when the sender opens one association per series
and the next series comes within the grace period; a job that becomes due during an early analysis waits
for it to end (one study, at most one analysis per model). Both only when the worker was idle. An early
analysis that raises is dropped: the job analyses the study again with its own retries and report.
`worker.analyse_during_grace = false` turns it off. Kept analyses live in this worker's memory: with
several workers, another worker may take the job and analyse the study itself.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from dicom_node.config import Config
from dicom_node.db.engine import Database
from dicom_node.db.schema import Job
from dicom_node.jobs.results import StudyInput
from dicom_node.ml.analysis import InstanceRef, StudyAnalysis
from dicom_node.studies.assembler import in_grace_period

if TYPE_CHECKING:
    from dicom_node.ml.pipeline import Pipeline

log = logging.getLogger(__name__)

KEPT_ANALYSES = 8  # the most analyses kept at once (one study and model each); the oldest goes first


class EarlyAnalyses:
    """The analyses one worker made of studies still in their grace period, until their jobs take them."""

    def __init__(self, config: Config, db: Database, pipelines: Mapping[str, Pipeline],
                 study_input: Callable[[int], StudyInput]) -> None:
        assembly = config.assembly
        self.enabled = (config.worker.analyse_during_grace and assembly.complete_on_release
                        and assembly.release_grace_seconds > 0 and bool(pipelines))
        self.db, self.pipelines, self.study_input = db, pipelines, study_input
        # (study id, model) -> (the generation its completion will make, the instances read, the analysis)
        self._kept: OrderedDict[tuple[int, str], tuple[int, tuple[InstanceRef, ...], StudyAnalysis]] = OrderedDict()
        self._done: dict[int, datetime] = {}  # study id -> its last_received_at when analysed early

    def run_once(self) -> bool:
        """Analyse one study in its grace period that was not analysed with its current instances; False
        when there is none (or this is turned off)."""
        if not self.enabled:
            return False
        with self.db.read() as session:
            waiting = in_grace_period(session)
        ids = {study_id for study_id, _, _ in waiting}
        self._done = {sid: at for sid, at in self._done.items() if sid in ids}
        for study_id, last_received_at, generation in waiting:
            if self._done.get(study_id) == last_received_at:
                continue
            self._done[study_id] = last_received_at
            self._analyse(self.study_input(study_id), generation + 1)
            return True
        return False

    def take(self, study: StudyInput, job: Job) -> StudyAnalysis | None:
        """The kept analysis for this job if it was made for the job's generation and read exactly the
        study's instances now (forgotten either way); None otherwise."""
        model_name = job.model_name
        kept = self._kept.pop((study.study_id, model_name), None)
        if kept is None:
            return None
        generation, refs, analysis = kept
        if generation != job.generation:
            return None  # a later completion (a re-analysis): analysed again, as asked
        if refs != tuple(study.refs):
            log.info("analysis made during the grace period dropped: the study changed since",
                     extra={"study_uid": study.study_uid, "model": model_name})
            return None
        return analysis

    def _analyse(self, study: StudyInput, generation: int) -> None:
        modalities = {r.modality for r in study.refs}
        for name, pipeline in self.pipelines.items():
            if not pipeline.modalities & modalities:
                continue
            try:
                analysis = pipeline.analyse(study.refs)
            except Exception as exc:  # noqa: BLE001 - the job analyses again, with its retries and report
                log.info("analysis during the grace period failed; the study's job will analyse it",
                         extra={"study_uid": study.study_uid, "model": name,
                                "error": f"{type(exc).__name__}: {exc}"})
                continue
            self._kept[(study.study_id, name)] = (generation, tuple(study.refs), analysis)
            self._kept.move_to_end((study.study_id, name))
            while len(self._kept) > KEPT_ANALYSES:
                self._kept.popitem(last=False)
            log.debug("study analysed during its grace period",
                      extra={"study_uid": study.study_uid, "model": name, "instances": len(study.refs)})
