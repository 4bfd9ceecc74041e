"""The inference worker's job loop: claim a job, run its model under a heartbeat, record the result
(`jobs/results.py`: outputs, their files and rows, deliveries by `delivery/fanout.py`), or count the failure.
With no job due, it analyses a study that waits out its grace period, for its job to use (`jobs/early.py`).

Models load once, when the worker starts. While a model runs, a heartbeat thread renews the job's lease;
a worker that dies stops renewing and the job goes back to the queue (`jobs.requeue_expired`). So does a
worker whose model hangs: the heartbeat stops renewing once the job has run `worker.max_run_seconds`, and
a model that returns after that counts as a failed attempt. A job whose workers stopped
`worker.max_lease_expiries` times gets the "analysis failed" SR without the model running again.
Everything a finished job changes in the database is one transaction (`jobs/results.py`).

When the final attempt fails (or a job comes back after its last attempt's worker died), the worker
builds a FAILED analysis with the reason and still writes an SR saying that analysis failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Self

from dicom_node.config import Config
from dicom_node.db.engine import Database
from dicom_node.db.schema import Job
from dicom_node.delivery import outbox
from dicom_node.errors import LeaseLostError, PermanentError
from dicom_node.jobs import queue as jobs
from dicom_node.jobs.early import EarlyAnalyses
from dicom_node.jobs.results import BuildOutputs, ResultRecorder, StudyInput
from dicom_node.ml.analysis import AnalysisStatus, StudyAnalysis
from dicom_node.receiver.store import write_durable
from dicom_node.runtime import ownership

if TYPE_CHECKING:
    from dicom_node.ml.pipeline import Pipeline

log = logging.getLogger(__name__)

def default_worker_id() -> str:
    return ownership.new_id()


class RunTimeExceeded(Exception):
    """The model returned after `worker.max_run_seconds`: a failed attempt, retried or reported."""


class Heartbeat:
    """Renews a job's lease every third of its length until stopped; `lost` is set when renewal fails.

    After `max_run_seconds` it stops renewing and sets `overrun`: a hung model's job then loses its lease
    and goes back to the queue (or fails), instead of being held for ever."""

    def __init__(
        self, db: Database, job_id: int, worker_id: str, lease_seconds: float, max_run_seconds: float = float("inf")
    ) -> None:
        self.db, self.job_id, self.worker_id, self.lease_seconds = db, job_id, worker_id, lease_seconds
        self.max_run_seconds = max_run_seconds
        self._deadline = time.monotonic() + max_run_seconds
        self.lost = threading.Event()
        self.overrun = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(min(self.lease_seconds / 3, max(0.0, self._deadline - time.monotonic()))):
            if time.monotonic() >= self._deadline:
                self.overrun.set()
                log.error(
                    "job ran longer than worker.max_run_seconds: its lease is no longer renewed",
                    extra={"job_id": self.job_id, "max_run_seconds": self.max_run_seconds},
                )
                return
            try:
                if not jobs.renew(self.db, self.job_id, self.worker_id, self.lease_seconds):
                    self.lost.set()
                    log.warning("lease lost while analysing", extra={"job_id": self.job_id})
                    return
            except Exception:  # a transient database error: try again next beat
                log.warning("lease renewal failed", extra={"job_id": self.job_id}, exc_info=True)


class Worker:
    def __init__(
        self,
        config: Config,
        db: Database,
        pipelines: Sequence[Pipeline] | None = None,
        build_outputs: BuildOutputs | None = None,
        worker_id: str | None = None,
        write_file: outbox.WriteFile = write_durable,
    ) -> None:
        self.config = config
        self.db = db
        self.worker_id = worker_id or default_worker_id()
        if pipelines is None and not any(m.enabled for m in config.models.enabled):
            pipelines = []  # nothing to load (and no reason to import torch)
        if pipelines is None:
            from dicom_node.ml.registry import load_pipelines

            pipelines = load_pipelines(config)
        self.pipelines: dict[str, Pipeline] = {p.info.name: p for p in pipelines}
        if build_outputs is None:
            from dicom_node.outputs import build_outputs as default_builder

            build_outputs = default_builder
        self.results = ResultRecorder(config, db, self.worker_id, build_outputs, write_file)
        self.early = EarlyAnalyses(config, db, self.pipelines, self.results.study_input)
        self.lease_seconds = config.worker.lease_seconds
        self._last_requeue = 0.0
        log.info(
            "worker ready", extra={"worker_id": self.worker_id, "models": ",".join(sorted(self.pipelines))}
        )

    # -- loop ----------------------------------------------------------------------------------------
    def run_forever(self, stop_event: threading.Event) -> None:
        """Process jobs until `stop_event` is set; the job in hand is finished first."""
        while not stop_event.is_set():
            try:
                busy = self.run_once()
            except Exception:  # a database outage must not end the worker
                log.exception("worker pass failed", extra={"worker_id": self.worker_id})
                busy = False
            if not busy:
                self._requeue_expired_now_and_then()
                stop_event.wait(self.config.worker.poll_seconds)
        log.info("worker stopped", extra={"worker_id": self.worker_id})

    def _requeue_expired_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._last_requeue >= max(1.0, self.lease_seconds / 4):
            self._last_requeue = now
            jobs.requeue_expired(self.db, max_lease_expiries=self.config.worker.max_lease_expiries)

    def run_once(self) -> bool:
        """Claim and process one job; with none due, analyse a study in its grace period
        (`jobs/early.py`). False when there was nothing to do."""
        if not self.pipelines:
            return False
        job = jobs.claim(self.db, self.worker_id, self.lease_seconds, model_names=self.pipelines.keys())
        if job is None:
            return self.early.run_once()
        self.process(job)
        return True

    # -- one job -------------------------------------------------------------------------------------
    def process(self, job: Job) -> None:
        pipeline = self.pipelines[job.model_name]
        extra = {
            "job_id": job.id,
            "model": job.model_name,
            "attempt": job.attempts,
            "worker_id": self.worker_id,
        }
        study = self.results.study_input(job.study_id)
        max_expiries = self.config.worker.max_lease_expiries
        if jobs.is_exhausted(job, max_expiries):
            self._finish_failed(job, pipeline, study, jobs.exhausted_reason(job, max_expiries))
            return
        try:
            analysis = self.early.take(study, job)
            if analysis is not None:
                log.info("analysis made during the grace period used", extra=extra)
            else:
                max_run = self.config.worker.max_run_seconds
                with Heartbeat(self.db, job.id, self.worker_id, self.lease_seconds, max_run) as beat:
                    analysis = pipeline.analyse(study.refs)
                if beat.lost.is_set():
                    log.warning("result dropped: lease lost during analysis", extra=extra)
                    return
                if beat.overrun.is_set():
                    raise RunTimeExceeded(f"analysis ran longer than worker.max_run_seconds ({max_run:g} s)")
            self.results.finish(job, study, analysis)
        except LeaseLostError:
            log.warning("result dropped: lease lost", extra=extra)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            permanent = isinstance(exc, PermanentError)
            if permanent or jobs.is_final_attempt(job):
                log.exception("analysis failed for good", extra=extra)
                self._finish_failed(job, pipeline, study, reason)
            else:
                log.warning("analysis attempt failed", extra={**extra, "reason": reason})
                self._fail_attempt(job, reason, permanent=False)

    def _finish_failed(self, job: Job, pipeline: Pipeline, study: StudyInput, reason: str) -> None:
        analysis = StudyAnalysis(
            model=pipeline.info, status=AnalysisStatus.FAILED, reason=reason, study_uid=study.study_uid
        )
        try:
            self.results.finish(job, study, analysis, error=reason)
        except LeaseLostError:
            log.warning("failure report dropped: lease lost", extra={"job_id": job.id})
        except Exception as exc:
            log.exception("could not write the failure report", extra={"job_id": job.id})
            self._fail_attempt(
                job, f"{reason}; failure report not written: {type(exc).__name__}: {exc}", True
            )

    def _fail_attempt(self, job: Job, reason: str, permanent: bool) -> None:
        try:
            jobs.fail_attempt(self.db, job.id, self.worker_id, reason, permanent, self.config.worker.retry)
        except LeaseLostError:
            log.warning("attempt failure not recorded: lease lost", extra={"job_id": job.id})

