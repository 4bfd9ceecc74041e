"""The job queue: the only module that changes `Job.state`.

State machine (one row per study generation and model)::

    queued ──claim──▶ running ──complete──▶ done
      ▲                 │  └──complete(error=...)──▶ failed   (final attempt: the worker wrote a "failed" SR)
      │                 ├──fail_attempt──▶ queued (run_after = now + backoff) | failed
      └─requeue_expired─┘  (lease ran out: the worker died or hung)

Invariants kept by the database: one job per (study, generation, model); at most one *queued* job per
(study, model) (partial unique index), so a study that completes again while its job still waits moves
that job to the new generation instead of adding a second one.

`attempts` counts claims. A job whose lease expired after its last allowed attempt is re-queued
once more with `attempts == max_attempts`; the worker that claims it (`is_exhausted`) does not run the
model again but writes the "analysis failed" SR with the recorded reason and marks the job failed, so
every study gets an SR even when workers keep dying on it.

`lease_expiries` counts the claims whose worker stopped (died, or a hung model past `worker.max_run_seconds`
that is no longer renewed). At `worker.max_lease_expiries` the job is re-queued for that failure report
with the reason "the worker stopped N times while running this study (lease expired)"; should the
report's claim expire too, the job fails at once with the reason, so a study that kills every worker
that opens it is never re-queued without end.

Studies no model applies to (no series of a modality any enabled model reads) still get one job, for
the first enabled model: its pipeline answers NOT_ANALYSED with the reason, and the study gets a
"not analysed" SR.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from dicom_node.config import Config, WorkerConfig
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Job, JobState, Series, Study
from dicom_node.errors import LeaseLostError
from dicom_node.runtime.retry import RetryPolicy

log = logging.getLogger(__name__)


DEFAULT_RETRY = WorkerConfig().retry  # `[worker.retry]`: the backoff between a job's attempts
DEFAULT_MAX_LEASE_EXPIRIES = WorkerConfig().max_lease_expiries


def is_exhausted(job: Job, max_lease_expiries: int = DEFAULT_MAX_LEASE_EXPIRIES) -> bool:
    """True when this claim exceeds the allowed attempts, or its workers stopped `max_lease_expiries`
    times: report the failure instead of running the model."""
    return job.attempts > job.max_attempts or job.lease_expiries >= max_lease_expiries


def lease_expiry_reason(expiries: int) -> str:
    return f"the worker stopped {expiries} times while running this study (lease expired)"


def exhausted_reason(job: Job, max_lease_expiries: int = DEFAULT_MAX_LEASE_EXPIRIES) -> str:
    """Why an exhausted job (`is_exhausted`) failed, as its "analysis failed" SR says it."""
    if job.lease_expiries >= max_lease_expiries:
        return lease_expiry_reason(job.lease_expiries)
    return f"analysis failed after {job.max_attempts} attempts: {job.last_error or 'no attempt finished'}"


def is_final_attempt(job: Job) -> bool:
    return job.attempts >= job.max_attempts


def enqueue_for_study(
    session: Session,
    study: Study,
    config: Config,
    models: Sequence[tuple[str, Collection[str]]],
) -> list[Job]:
    """Queue one job per model whose modalities meet the study's, for the study's current generation.

    `models` are (name, modalities) of the loadable models; names disabled in the config are skipped.
    Runs inside the caller's transaction (the assembler's). Idempotent for a generation. Returns the
    queued jobs (inserted, moved from an older generation, or already there).
    """
    disabled = {m.name for m in config.models.enabled if not m.enabled}
    enabled = [(name, frozenset(mods)) for name, mods in models if name not in disabled]
    if not enabled:
        log.warning("no model enabled: study not queued for analysis", extra={"study_uid": study.study_uid})
        return []
    study_modalities = set(session.scalars(select(Series.modality).where(Series.study_id == study.id)))
    chosen = [name for name, mods in enabled if mods & study_modalities]
    if not chosen:
        # Nothing reads these modalities: one job anyway, so the study gets a "not analysed" SR.
        chosen = [enabled[0][0]]
        log.info(
            "no model reads this study's modalities; queued for a 'not analysed' report",
            extra={
                "study_uid": study.study_uid,
                "modalities": ",".join(sorted(study_modalities)),
                "model": chosen[0],
            },
        )
    now = utcnow()
    jobs = [_enqueue_one(session, study, name, config.worker.retry.max_attempts, now) for name in chosen]
    session.flush()
    return jobs


def _enqueue_one(session: Session, study: Study, model: str, max_attempts: int, now: datetime) -> Job:
    existing = session.scalar(
        select(Job).where(
            Job.study_id == study.id, Job.model_name == model, Job.generation == study.generation
        )
    )
    if existing is not None:
        return existing
    waiting = session.scalar(
        select(Job).where(Job.study_id == study.id, Job.model_name == model, Job.state == JobState.QUEUED)
    )
    if waiting is not None:
        log.info(
            "queued job moved to the new study generation",
            extra={
                "job_id": waiting.id,
                "study_uid": study.study_uid,
                "from": waiting.generation,
                "to": study.generation,
            },
        )
        waiting.generation = study.generation
        waiting.priority = max(waiting.priority, study.priority)
        waiting.attempts = 0
        waiting.lease_expiries = 0
        waiting.run_after = now
        waiting.last_error = ""
        waiting.updated_at = now
        return waiting
    job = Job(
        study_id=study.id,
        generation=study.generation,
        model_name=model,
        state=JobState.QUEUED,
        priority=study.priority,
        attempts=0,
        lease_expiries=0,
        max_attempts=max_attempts,
        run_after=now,
        last_error="",
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    log.info(
        "job queued", extra={"study_uid": study.study_uid, "model": model, "generation": study.generation}
    )
    return job


def claim(
    db: Database, worker_id: str, lease_seconds: float, model_names: Collection[str] | None = None
) -> Job | None:
    """Atomically take the most urgent due queued job (priority desc, run_after, id) and lease it.

    SQLite: `db.write()` holds the write lock (BEGIN IMMEDIATE) and one `UPDATE ... RETURNING` picks
    the row. PostgreSQL: the candidate is chosen with `FOR UPDATE SKIP LOCKED`, so concurrent workers
    never block on or share a row. `model_names` limits the claim to models this worker has loaded.
    With nothing due (an idle worker's poll) it is one read and takes no write lock.
    """
    now = utcnow()
    candidate = select(Job.id).where(Job.state == JobState.QUEUED, Job.run_after <= now)
    if model_names is not None:
        candidate = candidate.where(Job.model_name.in_(list(model_names)))
    with db.read() as session:
        if session.execute(candidate.limit(1)).first() is None:
            return None
    candidate = (
        candidate.order_by(Job.priority.desc(), Job.run_after, Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(Job)
        .where(Job.id == candidate.scalar_subquery(), Job.state == JobState.QUEUED)
        .values(
            state=JobState.RUNNING,
            attempts=Job.attempts + 1,
            worker_id=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            updated_at=now,
        )
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    with db.write() as session:
        job_id = session.execute(stmt).scalar_one_or_none()
        if job_id is None:
            return None
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
    log.info(
        "job claimed",
        extra={"job_id": job.id, "model": job.model_name, "attempt": job.attempts, "worker_id": worker_id},
    )
    return job


def renew(db: Database, job_id: int, worker_id: str, lease_seconds: float) -> bool:
    """Extend the lease; False when this worker no longer holds the job (it must stop and not report)."""
    now = utcnow()
    with db.write() as session:
        # An UPDATE without RETURNING gives a CursorResult; Session.execute is typed as plain Result.
        result = cast(CursorResult[Any], session.execute(
            update(Job)
            .where(Job.id == job_id, Job.worker_id == worker_id, Job.state == JobState.RUNNING)
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now)
            .execution_options(synchronize_session=False)
        ))
        return bool(result.rowcount)


def _held(session: Session, job_id: int, worker_id: str) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None or job.state != JobState.RUNNING or job.worker_id != worker_id:
        raise LeaseLostError(f"job {job_id} is no longer held by worker {worker_id}")
    return job


def complete(session: Session, job_id: int, worker_id: str, error: str = "") -> Job:
    """Finish a running job inside the caller's transaction (with its results and outputs).

    `error` empty: DONE. Otherwise FAILED with that reason (the final attempt, reported in an SR).
    Raises LeaseLostError when the lease went to another worker: the caller's transaction must roll back.
    """
    job = _held(session, job_id, worker_id)
    now = utcnow()
    job.state = JobState.FAILED if error else JobState.DONE
    job.last_error = error
    job.lease_expires_at = None
    job.updated_at = now
    session.flush()
    if error:
        log.error("job failed", extra={"job_id": job_id, "model": job.model_name, "reason": error})
    else:
        log.info("job done", extra={"job_id": job_id, "model": job.model_name})
    return job


def fail_attempt(
    db: Database,
    job_id: int,
    worker_id: str,
    error: str,
    permanent: bool,
    policy: RetryPolicy = DEFAULT_RETRY,
) -> JobState:
    """An attempt failed: re-queue with backoff, or FAILED when permanent or out of attempts.

    Returns the new state. Raises LeaseLostError when this worker no longer holds the job.
    """
    now = utcnow()
    with db.write() as session:
        job = _held(session, job_id, worker_id)
        job.last_error = error
        job.lease_expires_at = None
        job.updated_at = now
        if permanent or is_final_attempt(job):
            job.state = JobState.FAILED
            log.error(
                "job failed",
                extra={"job_id": job_id, "model": job.model_name, "attempt": job.attempts, "reason": error},
            )
        else:
            _requeue(session, job, now + policy.delay(job.attempts), now)
            log.warning(
                "job attempt failed; will retry",
                extra={
                    "job_id": job_id,
                    "attempt": job.attempts,
                    "run_after": job.run_after.isoformat(),
                    "reason": error,
                },
            )
        return job.state


def _requeue(session: Session, job: Job, run_after: datetime, now: datetime) -> None:
    """Back to QUEUED, unless a newer generation already waits for this study and model (then FAILED)."""
    waiting = session.scalar(
        select(Job.id).where(
            Job.study_id == job.study_id,
            Job.model_name == job.model_name,
            Job.state == JobState.QUEUED,
            Job.id != job.id,
        )
    )
    job.worker_id = None
    job.lease_expires_at = None
    job.updated_at = now
    if waiting is not None:
        job.state = JobState.FAILED
        job.last_error = f"superseded by job {waiting} (newer study generation); last error: {job.last_error}"
        return
    job.state = JobState.QUEUED
    job.run_after = run_after


def requeue_expired(
    db: Database, now: datetime | None = None, max_lease_expiries: int = DEFAULT_MAX_LEASE_EXPIRIES
) -> int:
    """Scheduler job: running jobs whose lease ran out go back to the queue. Returns how many.

    A job out of attempts, or whose lease has now expired `max_lease_expiries` times, is re-queued too
    (see the module docstring): its next claim writes the "analysis failed" SR instead of running the
    model again. One whose lease expires more often than that (the failure report's claim died too) fails.
    """
    wall = utcnow()
    now = now or wall
    with db.write() as session:
        expired = list(
            session.scalars(
                select(Job)
                .where(Job.state == JobState.RUNNING, Job.lease_expires_at < now)
                .order_by(Job.id)
                .with_for_update(skip_locked=True)
            )
        )
        for job in expired:
            job.lease_expiries += 1
            if job.lease_expiries > max_lease_expiries:
                reason = (f"{lease_expiry_reason(job.lease_expiries)}; "
                          "the failure report could not be written either")
                job.state, job.last_error = JobState.FAILED, reason
                job.worker_id, job.lease_expires_at, job.updated_at = None, None, wall
                log.error("job failed: its workers keep stopping", extra={"job_id": job.id, "reason": reason})
                continue
            if job.lease_expiries == max_lease_expiries:
                reason = lease_expiry_reason(job.lease_expiries)
            else:
                reason = f"worker {job.worker_id} lost its lease (attempt {job.attempts}/{job.max_attempts})"
            job.last_error = reason
            _requeue(session, job, wall, wall)
            log.warning(
                "job lease expired; re-queued",
                extra={"job_id": job.id, "state": job.state.value, "reason": reason},
            )
        return len(expired)


def retry_failed(session: Session, study_uid: str | None = None) -> int:
    """Re-queue failed jobs of each study's current generation (admin `dicom-node retry --jobs`).

    Skips a job when its study and model already have a queued one. Returns how many were re-queued.
    """
    query = (
        select(Job)
        .join(Study, Study.id == Job.study_id)
        .where(Job.state == JobState.FAILED, Job.generation == Study.generation)
        .order_by(Job.id)
    )
    if study_uid:
        query = query.where(Study.study_uid == study_uid)
    now = utcnow()
    count = 0
    for job in session.scalars(query):
        waiting = session.scalar(
            select(func.count(Job.id)).where(
                Job.study_id == job.study_id, Job.model_name == job.model_name, Job.state == JobState.QUEUED
            )
        )
        if waiting:
            continue
        job.state = JobState.QUEUED
        job.attempts = 0
        job.lease_expiries = 0
        job.run_after = now
        job.worker_id = None
        job.lease_expires_at = None
        job.updated_at = now
        session.flush()
        count += 1
        log.info("failed job re-queued", extra={"job_id": job.id, "model": job.model_name})
    return count


def open_jobs(session: Session, study_id: int, generation: int) -> int:
    """How many jobs of a study generation are still queued or running."""
    return int(
        session.scalar(
            select(func.count(Job.id)).where(
                Job.study_id == study_id,
                Job.generation == generation,
                Job.state.in_([JobState.QUEUED, JobState.RUNNING]),
            )
        )
        or 0
    )
