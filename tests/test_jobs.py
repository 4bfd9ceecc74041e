"""The job queue: enqueue rules, atomic claims (SQLite and PostgreSQL), leases, retries, invariants."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import write_config
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from dicom_node.config import Config, load_config
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Job, JobState, Series, Study
from dicom_node.errors import LeaseLostError
from dicom_node.jobs import queue as jobs
from dicom_node.runtime.retry import RetryPolicy

MODELS = [("ich", {"CT"}), ("sih", {"MR"})]


def make_study(db: Database, uid: str, modalities: tuple[str, ...] = ("CT",), generation: int = 1) -> int:
    now = utcnow()
    with db.write() as s:
        study = Study(study_uid=uid, generation=generation, first_received_at=now, last_received_at=now)
        s.add(study)
        s.flush()
        for i, mod in enumerate(modalities):
            s.add(Series(study_id=study.id, series_uid=f"{uid}.{i}", modality=mod, series_number=i))
        return study.id


def enqueue(db: Database, config: Config, study_id: int, models=MODELS) -> list[tuple[str, int]]:
    with db.write() as s:
        study = s.get(Study, study_id)
        return [(j.model_name, j.generation) for j in jobs.enqueue_for_study(s, study, config, models)]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(write_config(tmp_path))


@pytest.fixture
def db(config: Config) -> Iterator[Database]:
    database = Database(config.database_url)
    yield database
    database.dispose()


def test_enqueue_one_job_per_matching_model(db: Database, config: Config) -> None:
    ct = make_study(db, "1.2.3.1", ("CT", "SR"))
    both = make_study(db, "1.2.3.2", ("CT", "MR"))
    assert enqueue(db, config, ct) == [("ich", 1)]
    assert sorted(enqueue(db, config, both)) == [("ich", 1), ("sih", 1)]
    # idempotent for a generation
    assert enqueue(db, config, ct) == [("ich", 1)]
    with db.read() as s:
        assert len(s.scalars(select(Job)).all()) == 3


def test_enqueue_without_matching_model_queues_first_model_for_not_analysed(
    db: Database, config: Config
) -> None:
    xr = make_study(db, "1.2.3.3", ("CR",))
    assert enqueue(db, config, xr) == [("ich", 1)]
    assert enqueue(db, config, make_study(db, "1.2.3.4", ("CR",)), models=[]) == []


def test_enqueue_skips_models_disabled_in_config(tmp_path: Path) -> None:
    cfg = load_config(
        write_config(tmp_path, models={"enabled": [{"name": "ich", "version": "1", "enabled": False}]})
    )
    database = Database(cfg.database_url)
    sid = make_study(database, "1.2.3.5", ("CT", "MR"))
    assert enqueue(database, cfg, sid) == [("sih", 1)]


def test_requeued_study_moves_waiting_job_to_new_generation(db: Database, config: Config) -> None:
    sid = make_study(db, "1.2.3.6")
    enqueue(db, config, sid)
    with db.write() as s:
        s.get(Study, sid).generation = 2
    assert enqueue(db, config, sid) == [("ich", 2)]
    with db.read() as s:
        rows = s.scalars(select(Job)).all()
        assert [(j.generation, j.state) for j in rows] == [(2, JobState.QUEUED)]


def test_running_job_coexists_with_new_generation(db: Database, config: Config) -> None:
    sid = make_study(db, "1.2.3.7")
    enqueue(db, config, sid)
    running = jobs.claim(db, "w1", 30)
    assert running is not None
    with db.write() as s:
        s.get(Study, sid).generation = 2
    assert enqueue(db, config, sid) == [("ich", 2)]
    with db.read() as s:
        assert sorted((j.generation, j.state.value) for j in s.scalars(select(Job))) == [
            (1, "running"),
            (2, "queued"),
        ]


def test_database_enforces_one_queued_job_per_study_and_model(db: Database) -> None:
    sid = make_study(db, "1.2.3.8")
    now = utcnow()

    def job(generation: int) -> Job:
        return Job(
            study_id=sid,
            generation=generation,
            model_name="ich",
            run_after=now,
            created_at=now,
            updated_at=now,
        )

    with db.write() as s:
        s.add(job(1))
    with pytest.raises(IntegrityError), db.write() as s:
        s.add(job(2))
    with pytest.raises(IntegrityError), db.write() as s:  # same generation twice, whatever the state
        j = job(1)
        j.state = JobState.DONE
        s.add(j)


def test_claim_order_priority_then_age(db: Database, config: Config) -> None:
    a = make_study(db, "1.2.4.1")
    b = make_study(db, "1.2.4.2")
    enqueue(db, config, a)
    enqueue(db, config, b)
    with db.write() as s:
        s.scalar(select(Job).where(Job.study_id == b)).priority = 1
    first = jobs.claim(db, "w", 30)
    second = jobs.claim(db, "w", 30)
    assert (first.study_id, second.study_id) == (b, a)
    assert first.state == JobState.RUNNING and first.attempts == 1 and first.worker_id == "w"
    assert jobs.claim(db, "w", 30) is None


def test_claim_only_loaded_models_and_due_jobs(db: Database, config: Config) -> None:
    enqueue(db, config, make_study(db, "1.2.4.3", ("MR",)))
    assert jobs.claim(db, "w", 30, model_names={"ich"}) is None
    with db.write() as s:
        s.scalar(select(Job)).run_after = utcnow() + timedelta(hours=1)
    assert jobs.claim(db, "w", 30, model_names={"sih"}) is None


def _claim_all(db: Database, worker: str, out: list[int]) -> None:
    while (job := jobs.claim(db, worker, 30)) is not None:
        out.append(job.id)


def _fill(db: Database, config: Config, n: int) -> None:
    for i in range(n):
        enqueue(db, config, make_study(db, f"1.2.5.{i}"))


def test_concurrent_claims_threads_never_share_a_job(db: Database, config: Config) -> None:
    _fill(db, config, 60)
    results: list[list[int]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=_claim_all, args=(db, f"w{i}", results[i])) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    claimed = [j for r in results for j in r]
    assert len(claimed) == 60 and len(set(claimed)) == 60


CLAIMER = """
import sys
from dicom_node.jobs import queue as jobs
from dicom_node.db.engine import Database
db = Database(sys.argv[1])
while (job := jobs.claim(db, sys.argv[2], 30)) is not None:
    print(job.id, flush=True)
"""


def _claim_in_processes(db: Database, n_procs: int) -> list[int]:
    procs = [
        subprocess.Popen([sys.executable, "-c", CLAIMER, db.url, f"p{i}"], stdout=subprocess.PIPE, text=True)
        for i in range(n_procs)
    ]
    ids: list[int] = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        ids.extend(int(x) for x in out.split())
    return ids


def test_concurrent_claims_processes_sqlite(db: Database, config: Config) -> None:
    _fill(db, config, 40)
    ids = _claim_in_processes(db, 3)
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 40


def test_lease_renew_expiry_and_requeue(db: Database, config: Config) -> None:
    enqueue(db, config, make_study(db, "1.2.6.1"))
    job = jobs.claim(db, "dead", 30)
    assert jobs.renew(db, job.id, "dead", 30)
    assert not jobs.renew(db, job.id, "other", 30)
    assert jobs.requeue_expired(db) == 0
    assert jobs.requeue_expired(db, now=utcnow() + timedelta(seconds=31)) == 1
    assert not jobs.renew(db, job.id, "dead", 30)  # the dead worker lost it
    again = jobs.claim(db, "alive", 30)
    assert again.id == job.id and again.attempts == 2 and "lost its lease" in again.last_error
    with pytest.raises(LeaseLostError), db.write() as s:
        jobs.complete(s, job.id, "dead")
    with db.write() as s:
        jobs.complete(s, job.id, "alive")
    with db.read() as s:
        assert s.get(Job, job.id).state == JobState.DONE


def test_attempts_then_failed_with_backoff(db: Database, config: Config) -> None:
    enqueue(db, config, make_study(db, "1.2.6.2"))
    policy = RetryPolicy(max_attempts=3, initial_delay_seconds=10, factor=2, max_delay_seconds=15)
    job = jobs.claim(db, "w", 30)
    assert jobs.fail_attempt(db, job.id, "w", "boom 1", permanent=False, policy=policy) == JobState.QUEUED
    assert jobs.claim(db, "w", 30) is None  # backing off
    with db.read() as s:
        row = s.get(Job, job.id)
        assert 9 <= (row.run_after - utcnow()).total_seconds() <= 10.5 and row.last_error == "boom 1"
    states = []
    for attempt in (2, 3):
        with db.write() as s:
            s.get(Job, job.id).run_after = utcnow()
        job = jobs.claim(db, "w", 30)
        assert job.attempts == attempt
        assert jobs.is_final_attempt(job) == (attempt == 3)
        states.append(jobs.fail_attempt(db, job.id, "w", f"boom {attempt}", permanent=False, policy=policy))
    assert states == [JobState.QUEUED, JobState.FAILED]
    assert policy.delay(5) == timedelta(seconds=15)


def test_permanent_error_fails_at_once(db: Database, config: Config) -> None:
    enqueue(db, config, make_study(db, "1.2.6.3"))
    job = jobs.claim(db, "w", 30)
    assert jobs.fail_attempt(db, job.id, "w", "bad input", permanent=True) == JobState.FAILED
    with db.write() as s:
        assert jobs.retry_failed(s) == 1
    assert jobs.claim(db, "w", 30).attempts == 1


def test_expired_after_last_attempt_is_requeued_as_exhausted(db: Database, config: Config) -> None:
    enqueue(db, config, make_study(db, "1.2.6.4"))
    for _ in range(3):
        job = jobs.claim(db, "w", 0.0)
        assert not jobs.is_exhausted(job)
        assert jobs.requeue_expired(db, now=utcnow() + timedelta(seconds=1)) == 1
    job = jobs.claim(db, "w", 30)
    assert jobs.is_exhausted(job) and job.attempts == 4
    with db.write() as s:
        jobs.complete(s, job.id, "w", error=job.last_error)
    with db.read() as s:
        assert s.get(Job, job.id).state == JobState.FAILED


def test_retry_of_old_generation_fails_when_newer_waits(db: Database, config: Config) -> None:
    sid = make_study(db, "1.2.6.5")
    enqueue(db, config, sid)
    job = jobs.claim(db, "w", 30)
    with db.write() as s:
        s.get(Study, sid).generation = 2
    enqueue(db, config, sid)
    assert jobs.fail_attempt(db, job.id, "w", "boom", permanent=False) == JobState.FAILED
    with db.read() as s:
        assert "superseded" in s.get(Job, job.id).last_error


# --- PostgreSQL: FOR UPDATE SKIP LOCKED with several processes -------------------------------------


def test_postgres_concurrent_claims_and_invariants(postgres_url: str, config: Config) -> None:
    db = Database(postgres_url)
    try:
        _fill(db, config, 40)
        ids = _claim_in_processes(db, 3)
        assert len(ids) == 40 and len(set(ids)) == 40
        sid = make_study(db, "1.2.7.1")
        enqueue(db, config, sid)
        now = utcnow()
        with pytest.raises(IntegrityError), db.write() as s:
            s.add(
                Job(
                    study_id=sid,
                    generation=9,
                    model_name="ich",
                    run_after=now,
                    created_at=now,
                    updated_at=now,
                )
            )
        job = jobs.claim(db, "w", 0.0)
        assert job.study_id == sid
        assert jobs.requeue_expired(db, now=utcnow() + timedelta(seconds=1)) == 1
    finally:
        db.engine.dispose()
