"""The worker: claim → analyse → result, outputs, deliveries in one transaction; retries, failures, dead workers."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from conftest import wait_for, write_config
from e2e_helpers import SIH_DEMO_VERSION
from notify_helpers import Webhook
from outputs_helpers import ICH_MODEL, ich_analysis, make_series
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, make_transient

from dicom_node.config import Config, load_config
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import (
    Association,
    Delivery,
    Instance,
    Job,
    JobState,
    Output,
    Priority,
    Result,
    Series,
    Study,
    StudyState,
)
from dicom_node.errors import PermanentError
from dicom_node.jobs import queue as jobs
from dicom_node.jobs.worker import Worker
from dicom_node.ml.analysis import AnalysisStatus, Finding, InstanceRef, StudyAnalysis, header_fields
from dicom_node.notify.sender import Notifier
from dicom_node.receiver.ingest import parse_instance, record_instance
from dicom_node.receiver.store import instance_relpath, write_durable
from dicom_node.runtime.worker_process import WorkerProcess
from dicom_node.studies.assembler import Assembler

Analyse = Callable[[list[pydicom.Dataset]], StudyAnalysis]


class FakePipeline:
    """Stands in for a loaded model: reads the refs' files and answers with `answer(datasets)`."""

    def __init__(self, answer: Analyse, fail_times: int = 0, error: type[Exception] = RuntimeError) -> None:
        self.info = ICH_MODEL
        self.modalities = frozenset({"CT"})
        self.answer = answer
        self.fail_times = fail_times
        self.error = error
        self.calls = 0
        self.during: Callable[[], None] | None = None

    def analyse(self, instances: Sequence[InstanceRef]) -> StudyAnalysis:
        self.calls += 1
        datasets = [pydicom.dcmread(r.path) for r in instances]
        assert all(r.modality == "CT" and r.study_uid == datasets[0].StudyInstanceUID for r in instances)
        if self.during is not None:
            self.during()
        if self.calls <= self.fail_times:
            raise self.error(f"simulated failure {self.calls}")
        return self.answer(datasets)


def sr_text(path: Path) -> str:
    """Every text value in an SR's content tree, joined."""
    texts: list[str] = []

    def walk(items: Sequence[pydicom.Dataset]) -> None:
        for item in items:
            if "TextValue" in item:
                texts.append(str(item.TextValue))
            walk(item.get("ContentSequence", []))

    walk(pydicom.dcmread(path).get("ContentSequence", []))
    return "\n".join(texts)


def positive(datasets: list[pydicom.Dataset]) -> StudyAnalysis:
    return ich_analysis(datasets, positive=True)


def store_study(config: Config, db: Database, generation: int = 1) -> tuple[int, list[pydicom.Dataset]]:
    """Put a generated 4-slice head CT into the store and the index, as the receiver would; complete it."""
    series = make_series("CT", n=4, size=64, blob=(20, 40))
    now = utcnow()
    with db.write() as s:
        first = series[0]
        study = Study(
            study_uid=first.StudyInstanceUID,
            accession_number=first.AccessionNumber,
            generation=generation,
            state=StudyState.COMPLETE,
            first_received_at=now,
            last_received_at=now,
        )
        s.add(study)
        s.flush()
        ser = Series(study_id=study.id, series_uid=first.SeriesInstanceUID, modality="CT", series_number=2)
        s.add(ser)
        s.flush()
        for ds in series:
            rel = instance_relpath(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
            path = config.storage.path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            f = header_fields(ds)
            s.add(
                Instance(
                    study_id=study.id,
                    series_id=ser.id,
                    sop_instance_uid=f["sop_instance_uid"],
                    sop_class_uid=f["sop_class_uid"],
                    transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
                    path=rel,
                    size=path.stat().st_size,
                    instance_number=f["instance_number"],
                    image_type=f["image_type"],
                    image_orientation=f["image_orientation"],
                    image_position=f["image_position"],
                    slice_thickness=f["slice_thickness"],
                    rows=f["rows"],
                    columns=f["columns"],
                    received_at=now,
                )
            )
        jobs.enqueue_for_study(s, study, config, [("ich", {"CT"})])
        return study.id, series


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def config(tmp_path: Path, webhook: Webhook) -> Config:
    return load_config(
        write_config(
            tmp_path,
            destinations=[
                {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 11113},
                {"name": "archive", "ae_title": "ARCHIVE", "host": "127.0.0.1", "port": 11114},
            ],
            worker={"lease_seconds": 30, "max_attempts": 2, "poll_seconds": 0.05},
            notifications={"webhook_url": webhook.url},
        )
    )


@pytest.fixture
def db(config: Config) -> Iterator[Database]:
    database = Database(config.database_url)
    yield database
    database.dispose()


def outputs(db: Database) -> list[Output]:
    with db.read() as s:
        return list(s.scalars(select(Output).order_by(Output.id)))


def job_row(db: Database) -> Job:
    with db.read() as s:
        return s.scalars(select(Job)).one()


def count(db: Database, model: type) -> int:
    with db.read() as s:
        return int(s.scalar(select(func.count()).select_from(model)))


def make_due(db: Database) -> None:
    with db.write() as s:
        for j in s.scalars(select(Job).where(Job.state == JobState.QUEUED)):
            j.run_after = utcnow()


def test_positive_study_result_outputs_deliveries_priority_and_webhook(
    config: Config, db: Database, webhook: Webhook
) -> None:
    study_id, series = store_study(config, db)
    pipeline = FakePipeline(positive)
    worker = Worker(config, db, pipelines=[pipeline])
    assert worker.run_once() is True
    assert worker.run_once() is False
    assert job_row(db).state == JobState.DONE
    with db.read() as s:
        study = s.get(Study, study_id)
        assert study.priority == Priority.STAT.value and study.state == StudyState.ANALYSED
        result = s.scalars(select(Result)).one()
        assert result.status == "analysed" and result.critical
        assert StudyAnalysis.from_json(result.payload).findings[-1].label == "subdural"
    objs = outputs(db)
    assert [o.kind for o in objs] == ["sr", "overlay"]  # SR + one overlay per located finding ("any" is not repeated)
    for o in objs:
        ds = pydicom.dcmread(config.storage.outbox / o.path)
        assert ds.SOPInstanceUID == o.sop_instance_uid and ds.StudyInstanceUID == series[0].StudyInstanceUID
    assert count(db, Delivery) == 2 * len(objs)
    assert webhook.bodies == [], "the worker queues the alert; serve's notifier sends it"
    assert Notifier(config, db).run_once() == 1
    (body,) = webhook.bodies
    assert body["study_instance_uid"] == series[0].StudyInstanceUID and body["accession_number"] == "ACC0001"
    assert {f["label"] for f in body["findings"]} == {"any", "subdural"}
    assert "Synthetic" not in json.dumps(body) and "SYN0001" not in json.dumps(body)


def test_negative_study_keeps_routine_priority_and_never_lowers_stat(
    config: Config, db: Database, webhook: Webhook
) -> None:
    study_id, _ = store_study(config, db)
    with db.write() as s:
        s.get(Study, study_id).priority = Priority.STAT.value  # raised earlier (another model / generation)
    Worker(config, db, pipelines=[FakePipeline(lambda d: ich_analysis(d, positive=False))]).run_once()
    assert [o.kind for o in outputs(db)] == ["sr"]
    with db.read() as s:
        assert s.get(Study, study_id).priority == Priority.STAT.value
    assert webhook.bodies == []


def test_not_analysed_study_gets_sr(config: Config, db: Database) -> None:
    store_study(config, db)

    def unsuitable(datasets: list[pydicom.Dataset]) -> StudyAnalysis:
        return StudyAnalysis(
            model=ICH_MODEL,
            status=AnalysisStatus.NOT_ANALYSED,
            reason="no axial series",
            study_uid=datasets[0].StudyInstanceUID,
        )

    Worker(config, db, pipelines=[FakePipeline(unsuitable)]).run_once()
    (sr,) = outputs(db)
    assert sr.kind == "sr" and job_row(db).state == JobState.DONE
    assert "no axial series" in sr_text(config.storage.outbox / sr.path)


def test_transient_failure_is_retried_then_succeeds(config: Config, db: Database) -> None:
    store_study(config, db)
    pipeline = FakePipeline(positive, fail_times=1)
    worker = Worker(config, db, pipelines=[pipeline])
    worker.run_once()
    row = job_row(db)
    assert row.state == JobState.QUEUED and row.attempts == 1 and "simulated failure 1" in row.last_error
    assert row.run_after > utcnow() and outputs(db) == []
    assert worker.run_once() is False  # backing off
    make_due(db)
    worker.run_once()
    assert job_row(db).state == JobState.DONE and len(outputs(db)) == 2


def test_final_failure_writes_failed_sr(config: Config, db: Database) -> None:
    store_study(config, db)
    worker = Worker(config, db, pipelines=[FakePipeline(positive, fail_times=99)])
    worker.run_once()
    make_due(db)
    worker.run_once()  # attempt 2 of 2
    row = job_row(db)
    assert row.state == JobState.FAILED and "simulated failure 2" in row.last_error
    with db.read() as s:
        result = s.scalars(select(Result)).one()
        assert result.status == "failed" and "simulated failure 2" in result.payload["reason"]
    (sr,) = outputs(db)
    assert "simulated failure 2" in sr_text(config.storage.outbox / sr.path)


def test_permanent_error_fails_at_first_attempt_with_sr(config: Config, db: Database) -> None:
    store_study(config, db)
    Worker(config, db, pipelines=[FakePipeline(positive, fail_times=1, error=PermanentError)]).run_once()
    assert job_row(db).state == JobState.FAILED and job_row(db).attempts == 1
    assert [o.kind for o in outputs(db)] == ["sr"]


def test_dead_worker_job_rerun_after_lease_expiry_gives_one_set_of_outputs(
    config: Config, db: Database
) -> None:
    store_study(config, db)
    dead = jobs.claim(db, "dead-worker", lease_seconds=0.2)  # claims, then never renews nor reports
    assert dead is not None
    pipeline = FakePipeline(positive)
    worker = Worker(config, db, pipelines=[pipeline])
    assert worker.run_once() is False  # nothing queued while the lease holds
    time.sleep(0.25)
    worker._last_requeue = 0.0
    worker._requeue_expired_now_and_then()
    assert worker.run_once() is True
    assert job_row(db).state == JobState.DONE and job_row(db).attempts == 2
    first = [o.sop_instance_uid for o in outputs(db)]
    assert len(first) == 2 and len(set(first)) == 2
    # the same job re-run (an admin retry): same deterministic UIDs, nothing inserted twice
    with db.write() as s:
        s.scalars(select(Job)).one().state = JobState.FAILED
        assert jobs.retry_failed(s) == 1
    worker.run_once()
    assert [o.sop_instance_uid for o in outputs(db)] == first
    assert count(db, Delivery) == 4 and count(db, Result) == 1


def test_job_exhausted_by_dying_workers_reports_failure_without_running_model(
    config: Config, db: Database
) -> None:
    store_study(config, db)
    for _ in range(2):
        assert jobs.claim(db, "dying", lease_seconds=0.0) is not None
        assert jobs.requeue_expired(db, now=utcnow() + timedelta(seconds=1)) == 1
    pipeline = FakePipeline(positive)
    Worker(config, db, pipelines=[pipeline]).run_once()
    assert pipeline.calls == 0
    row = job_row(db)
    assert row.state == JobState.FAILED and "lost its lease" in row.last_error
    assert [o.kind for o in outputs(db)] == ["sr"]


def test_a_study_that_keeps_stopping_the_worker_fails_with_the_reason_and_an_sr(tmp_path: Path) -> None:
    """A study whose loading kills the worker: each claim's lease expires; at `max_lease_expiries` the job
    fails with that reason and the study still gets its "analysis failed" SR."""
    config = load_config(write_config(tmp_path, worker={"max_attempts": 10, "max_lease_expiries": 3}))
    db = Database(config.database_url)
    store_study(config, db)
    later = utcnow() + timedelta(seconds=1)
    for n in (1, 2, 3):
        assert jobs.claim(db, f"dying-{n}", lease_seconds=0.0) is not None  # loads the study, dies
        assert jobs.requeue_expired(db, now=later, max_lease_expiries=3) == 1
        assert job_row(db).lease_expiries == n and job_row(db).state == JobState.QUEUED
    assert job_row(db).attempts == 3 < config.worker.max_attempts  # the cap, not the attempts, ends it
    pipeline = FakePipeline(positive)
    Worker(config, db, pipelines=[pipeline]).run_once()
    assert pipeline.calls == 0  # the study is not opened a fourth time
    row = job_row(db)
    reason = "the worker stopped 3 times while running this study (lease expired)"
    assert row.state == JobState.FAILED and row.last_error == reason
    with db.read() as s:
        result = s.scalars(select(Result)).one()
    assert result.status == "failed" and result.payload["reason"] == reason
    (sr,) = outputs(db)
    assert sr.kind == "sr" and reason in sr_text(config.storage.outbox / sr.path)
    db.dispose()


def test_a_job_whose_failure_report_kills_the_worker_too_is_not_requeued_again(
    config: Config, db: Database
) -> None:
    store_study(config, db)
    later = utcnow() + timedelta(seconds=1)
    for _ in range(4):  # three expiries, then the failure report's claim expires as well
        assert jobs.claim(db, "dying", lease_seconds=0.0) is not None
        assert jobs.requeue_expired(db, now=later, max_lease_expiries=3) == 1
    row = job_row(db)
    assert row.state == JobState.FAILED and row.lease_expiries == 4
    assert row.last_error.startswith("the worker stopped 4 times while running this study (lease expired)")
    assert jobs.claim(db, "next", lease_seconds=30) is None  # never re-queued again


def test_a_hung_model_past_max_run_seconds_is_not_renewed(tmp_path: Path) -> None:
    """The heartbeat stops renewing at `max_run_seconds`: the lease runs out and the job goes back to the
    queue (another worker may take it) while the hung model still runs; its late answer is dropped."""
    config = load_config(write_config(tmp_path, worker={"lease_seconds": 0.6, "max_run_seconds": 0.3}))
    db = Database(config.database_url)
    store_study(config, db)
    pipeline = FakePipeline(positive)
    leases: list[object] = []

    def hang() -> None:  # serve's scheduler runs requeue_expired meanwhile
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            leases.append(job_row(db).lease_expires_at)
            if jobs.requeue_expired(db, max_lease_expiries=config.worker.max_lease_expiries):
                return
            time.sleep(0.05)

    pipeline.during = hang
    Worker(config, db, pipelines=[pipeline]).run_once()
    row = job_row(db)
    assert row.state == JobState.QUEUED and row.lease_expiries == 1 and "lost its lease" in row.last_error
    assert len(set(leases)) <= 3  # claimed, then renewed at most twice before max_run_seconds
    assert count(db, Result) == 0 and outputs(db) == []
    db.dispose()


def test_a_model_answering_after_max_run_seconds_counts_as_a_failed_attempt(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, worker={"lease_seconds": 30, "max_run_seconds": 0.2,
                                                        "max_attempts": 2}))
    db = Database(config.database_url)
    store_study(config, db)
    pipeline = FakePipeline(positive)
    pipeline.during = lambda: time.sleep(0.5)
    worker = Worker(config, db, pipelines=[pipeline])
    worker.run_once()
    row = job_row(db)
    assert row.state == JobState.QUEUED and row.attempts == 1
    assert "longer than worker.max_run_seconds (0.2 s)" in row.last_error
    assert count(db, Result) == 0
    make_due(db)
    worker.run_once()  # the final attempt runs long too: failed, and the study gets its SR
    row = job_row(db)
    assert row.state == JobState.FAILED and "max_run_seconds" in row.last_error
    (sr,) = outputs(db)
    assert "max_run_seconds" in sr_text(config.storage.outbox / sr.path)
    db.dispose()


def test_lease_lost_during_analysis_stores_nothing(config: Config, db: Database) -> None:
    store_study(config, db)
    pipeline = FakePipeline(positive)
    worker = Worker(config, db, pipelines=[pipeline])

    def steal() -> None:  # the lease runs out and another worker takes the job
        jobs.requeue_expired(db, now=utcnow() + timedelta(seconds=60))
        assert jobs.claim(db, "thief", 30) is not None

    pipeline.during = steal
    worker.run_once()
    assert outputs(db) == [] and count(db, Result) == 0
    assert job_row(db).worker_id == "thief" and job_row(db).state == JobState.RUNNING
    # its files were written before the transaction that found the lease gone: removed, none left
    assert list(config.storage.outbox.rglob("*.dcm")) == []


CRASHING_WORKER = """
import os, sys
from dicom_node.config import load_config
from dicom_node.db.engine import Database
from dicom_node.receiver.store import write_durable
from dicom_node.jobs.worker import Worker
from test_worker import FakePipeline, positive

def write_then_die(path, data):
    write_durable(path, data)
    os._exit(17)  # dies once its first output file is durable, before any row is recorded

config = load_config(sys.argv[1])
Worker(config, Database(config.database_url), pipelines=[FakePipeline(positive)], write_file=write_then_die).run_once()
"""


def test_a_worker_dying_between_writing_and_recording_leaves_harmless_files_the_rerun_reconciles(
    config: Config, db: Database
) -> None:
    """Outputs are written before the transaction that records them. A worker that dies in between leaves
    files no row names: never sent (no delivery exists), and reconciled when the job runs again: the same
    bytes have the same name (kept), other bytes for the same output are removed after the commit."""
    store_study(config, db)
    tests = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests)])}
    crashed = subprocess.run([sys.executable, "-c", CRASHING_WORKER, str(config.source)], env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert crashed.returncode == 17, crashed.stderr[-2000:]
    (left,) = config.storage.outbox.rglob("*.dcm")
    assert outputs(db) == [] and count(db, Delivery) == 0, "no row names it: nothing will send it"
    # an older crashed attempt of the same output, with other bytes
    other = left.with_name(left.name.split("+")[0] + "+0123456789abcdef.dcm")
    other.write_bytes(b"other bytes")
    # the dead worker's lease runs out; the job runs again and records its outputs
    assert jobs.requeue_expired(db, now=utcnow() + timedelta(seconds=60),
                                max_lease_expiries=config.worker.max_lease_expiries) == 1
    make_due(db)
    assert Worker(config, db, pipelines=[FakePipeline(positive)]).run_once() is True
    assert job_row(db).state == JobState.DONE
    recorded = {config.storage.outbox / o.path for o in outputs(db)}
    assert len(recorded) == 2 and set(config.storage.outbox.rglob("*.dcm")) == recorded
    assert count(db, Delivery) == 4


def test_stale_generation_result_is_stored_without_outputs(config: Config, db: Database) -> None:
    study_id, _ = store_study(config, db)
    pipeline = FakePipeline(positive)

    def reopen() -> None:  # late instances: the study completes again while this job runs
        with db.write() as s:
            s.get(Study, study_id).generation = 2

    pipeline.during = reopen
    Worker(config, db, pipelines=[pipeline]).run_once()
    assert count(db, Result) == 1 and outputs(db) == []


def test_run_forever_stops_on_event(config: Config, db: Database) -> None:
    store_study(config, db)
    stop = threading.Event()
    worker = Worker(config, db, pipelines=[FakePipeline(positive)])
    thread = threading.Thread(target=worker.run_forever, args=(stop,))
    thread.start()
    wait_for(lambda: job_row(db).state == JobState.DONE, timeout=10, msg="job done")
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


def test_worker_process_starts_and_stops_gracefully(tmp_path: Path) -> None:
    cfg_path = write_config(tmp_path)  # no models enabled: the worker idles
    service = WorkerProcess(cfg_path, grace_seconds=20)
    service.start()
    try:
        proc = service.process
        assert proc is not None
        db_file = Path(load_config(cfg_path).database_url.split(":///", 1)[1])
        wait_for(
            db_file.exists, timeout=30, msg="worker opened the database"
        )  # signal handlers are set by then
        assert proc.poll() is None
    finally:
        service.stop()
    assert proc.returncode == 0  # SIGTERM handled: clean exit, not killed


def test_a_local_worker_that_cannot_load_its_models_is_not_restarted(tmp_path: Path) -> None:
    """A threshold for a label the model lacks (e.g. edited in while serve runs): the worker exits with
    EXIT_CANNOT_LOAD_MODELS, and serve leaves it down (not ready) instead of restarting it every 5 s."""
    from conftest import REPO

    from dicom_node.runtime.worker_process import EXIT_CANNOT_LOAD_MODELS

    cfg_path = write_config(tmp_path, models={"path": str(REPO / "models"), "enabled": [
        {"name": "sih", "version": SIH_DEMO_VERSION, "thresholds": {"tumour": 0.5}}]})
    service = WorkerProcess(cfg_path, restart_delay=0.2, grace_seconds=5)
    service.start()
    try:
        wait_for(lambda: service.gave_up, timeout=60, msg="the worker gave up")
        first = service.process
        assert first is not None and first.returncode == EXIT_CANNOT_LOAD_MODELS
        time.sleep(1.0)  # five restart delays: nothing restarted
        assert service.process is first
    finally:
        service.stop()


def test_a_changed_reanalysis_supersedes_the_delivered_report(config: Config, db: Database) -> None:
    """`retry --jobs` after a fix: the new report gets a new UID in the same series and names the old one."""
    store_study(config, db)
    pipeline = FakePipeline(positive)
    worker = Worker(config, db, pipelines=[pipeline])
    worker.run_once()
    (first_sr,) = [o for o in outputs(db) if o.kind == "sr"]
    pipeline.answer = lambda datasets: ich_analysis(datasets, positive=False)  # the corrected model says absent
    with db.write() as s:
        s.scalars(select(Job)).one().state = JobState.FAILED
        assert jobs.retry_failed(s) == 1
    worker.run_once()
    srs = [o for o in outputs(db) if o.kind == "sr"]
    assert len(srs) == 2 and srs[1].sop_instance_uid != first_sr.sop_instance_uid
    assert srs[1].series_uid == first_sr.series_uid
    new = pydicom.dcmread(config.storage.outbox / srs[1].path)
    ref = new.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == first_sr.sop_instance_uid
    assert "ABSENT" in new.SeriesDescription
    with db.read() as s:  # the new report goes to every destination
        assert s.scalar(select(func.count()).select_from(Delivery).where(Delivery.output_id == srs[1].id)) == 2
    # the same corrected result once more: no third report
    with db.write() as s:
        s.scalars(select(Job)).one().state = JobState.FAILED
        assert jobs.retry_failed(s) == 1
    worker.run_once()
    assert len([o for o in outputs(db) if o.kind == "sr"]) == 2


def test_a_result_whose_report_cannot_be_built_is_still_answered(config: Config, db: Database) -> None:
    """Outputs that fail to build (here: a label without a code) become an "analysis failed" report."""
    study_id, _series = store_study(config, db)

    def odd(datasets: list[pydicom.Dataset]) -> StudyAnalysis:
        analysis = ich_analysis(datasets, positive=True)
        analysis.findings.append(Finding(label="tumour", probability=0.9, threshold=0.5, present=True, critical=True))
        return analysis

    Worker(config, db, pipelines=[FakePipeline(odd)]).run_once()
    assert job_row(db).state == JobState.DONE
    (sr,) = outputs(db)
    ds = pydicom.dcmread(config.storage.outbox / sr.path)
    assert ds.SeriesDescription.startswith("AI ICH: ANALYSIS FAILED")
    assert "report could not be built: ValueError" in sr_text(config.storage.outbox / sr.path)
    with db.read() as s:
        assert s.scalars(select(Result)).one().status == "failed"
        assert s.get(Study, study_id).priority == Priority.STAT.value  # the model's critical call still counts


# -- analysis during the grace period (jobs/early.py) ----------------------------------------------------

def in_grace(db: Database, study_id: int, released: bool = True) -> None:
    """Make a stored study one still receiving, whose instances came with one association, open or released."""
    now = utcnow()
    with db.write() as s:
        s.execute(delete(Job))
        study = s.get(Study, study_id)
        study.state, study.generation, study.last_association_id = StudyState.RECEIVING, 0, "assoc-1"
        s.add(Association(id="assoc-1", calling_ae="SCU", peer_address="127.0.0.1", started_at=now,
                          ended_at=now if released else None, released=released))
        for instance in s.scalars(select(Instance).where(Instance.study_id == study_id)):
            instance.association_id = "assoc-1"


def release(db: Database) -> None:
    with db.write() as s:
        association = s.get(Association, "assoc-1")
        association.ended_at, association.released = utcnow(), True


def assembler(config: Config, db: Database) -> Assembler:
    """The assembler, queueing jobs on completion as `serve` does."""
    def queue(session: Session, study: Study) -> None:
        jobs.enqueue_for_study(session, study, config, [("ich", {"CT"})])

    return Assembler(config, db, queue)


def grace_ends(config: Config, db: Database) -> list[str]:
    """What the assembler completes once the grace period is over."""
    later = utcnow() + timedelta(seconds=config.assembly.release_grace_seconds + 1)
    return assembler(config, db).check(now=later)


def released_study(config: Config, db: Database, pipeline: FakePipeline) -> tuple[list[pydicom.Dataset], Worker]:
    """A stored study in its grace period (association released) and a worker with `pipeline`."""
    study_id, series = store_study(config, db)
    in_grace(db, study_id)
    return series, Worker(config, db, pipelines=[pipeline])


def evaluated(db: Database) -> list[str]:
    with db.read() as s:
        return StudyAnalysis.from_json(s.scalars(select(Result)).one().payload).evaluated_sop_instance_uids


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_an_idle_worker_analyses_a_released_study_in_its_grace_period_and_its_job_uses_that(
    database: str, tmp_path: Path, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    url = request.getfixturevalue("postgres_url") if database == "postgresql" else "sqlite:///var/node.db"
    config = load_config(write_config(tmp_path, database={"url": url}))
    db = Database(config.database_url)
    request.addfinalizer(db.dispose)
    assert config.assembly.release_grace_seconds > 0 and config.worker.analyse_during_grace  # the defaults
    study_id, series = store_study(config, db)
    in_grace(db, study_id, released=False)
    pipeline = FakePipeline(positive)
    worker = Worker(config, db, pipelines=[pipeline])
    assert worker.run_once() is False and pipeline.calls == 0, "an association still open: not analysed"
    release(db)
    assert worker.run_once() is True and pipeline.calls == 1, "released: analysed at once, no job yet"
    assert count(db, Job) == 0 and count(db, Result) == 0, "nothing is recorded or sent before completion"
    assert worker.run_once() is False and pipeline.calls == 1, "an unchanged study is analysed once"
    assert grace_ends(config, db) == [series[0].StudyInstanceUID]
    with caplog.at_level("INFO", logger="dicom_node.jobs.worker"):
        assert worker.run_once() is True
    assert pipeline.calls == 1, "the job used the analysis made during the grace period"
    assert "analysis made during the grace period used" in caplog.text
    assert job_row(db).state == JobState.DONE and [o.kind for o in outputs(db)] == ["sr", "overlay"]
    assert evaluated(db) == [ds.SOPInstanceUID for ds in series]


def test_an_analysis_made_before_more_instances_came_is_not_used(config: Config, db: Database) -> None:
    study_id, series = store_study(config, db)
    in_grace(db, study_id)
    with db.write() as s:  # the last slice has not come yet
        late = s.scalars(select(Instance).where(Instance.sop_instance_uid == series[-1].SOPInstanceUID)).one()
        s.expunge(late)
        s.execute(delete(Instance).where(Instance.id == late.id))
    seen: list[int] = []
    pipeline = FakePipeline(lambda datasets: seen.append(len(datasets)) or positive(datasets))
    worker = Worker(config, db, pipelines=[pipeline])
    assert worker.run_once() is True and seen == [3]
    with db.write() as s:  # it comes with the released association; the grace period ends before the next poll
        make_transient(late)
        s.add(late)
    assert grace_ends(config, db) == [series[0].StudyInstanceUID]
    assert worker.run_once() is True
    assert seen == [3, 4], "the job analysed the study again, with every instance"
    assert evaluated(db) == [ds.SOPInstanceUID for ds in series]


def test_an_early_analysis_that_fails_leaves_the_analysis_to_the_job(config: Config, db: Database) -> None:
    pipeline = FakePipeline(positive, fail_times=1)
    _, worker = released_study(config, db, pipeline)
    assert worker.run_once() is True and pipeline.calls == 1
    grace_ends(config, db)
    assert worker.run_once() is True and pipeline.calls == 2
    assert job_row(db).state == JobState.DONE and job_row(db).attempts == 1 and count(db, Result) == 1


def test_analysis_during_the_grace_period_can_be_turned_off(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, worker={"analyse_during_grace": False}))
    database = Database(config.database_url)
    try:
        pipeline = FakePipeline(positive)
        _, worker = released_study(config, database, pipeline)
        assert worker.run_once() is False and pipeline.calls == 0
        grace_ends(config, database)
        assert worker.run_once() is True and pipeline.calls == 1
    finally:
        database.dispose()


def test_a_reanalysis_asked_for_before_the_job_ran_analyses_again(config: Config, db: Database) -> None:
    pipeline = FakePipeline(positive)
    series, worker = released_study(config, db, pipeline)
    assert worker.run_once() is True and pipeline.calls == 1
    grace_ends(config, db)
    generation = assembler(config, db).reanalyse(series[0].StudyInstanceUID)
    assert generation == 2 and job_row(db).generation == 2
    assert worker.run_once() is True and pipeline.calls == 2, "the re-analysis is not answered from the grace period"
    assert job_row(db).state == JobState.DONE


def test_a_slice_sent_again_with_other_pixels_before_the_job_ran_is_analysed_again(
    config: Config, db: Database
) -> None:
    seen: list[int] = []
    pipeline = FakePipeline(lambda datasets: seen.append(int(datasets[1].pixel_array.sum())) or positive(datasets))
    series, worker = released_study(config, db, pipeline)
    assert worker.run_once() is True and len(seen) == 1
    assert grace_ends(config, db) == [series[0].StudyInstanceUID]  # the job is queued; the worker was busy
    again = series[1].copy()  # the sender sends a slice again, with other pixels, as the receiver stores it
    again.PixelData = (again.pixel_array + 7).astype(again.pixel_array.dtype).tobytes()
    buffer = io.BytesIO()
    again.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    rel = instance_relpath(again.StudyInstanceUID, again.SeriesInstanceUID, again.SOPInstanceUID)
    write_durable(config.storage.path / rel, data)
    record_instance(db, parse_instance(data), rel, len(data), "STORESCU", None)
    with db.read() as s:
        assert s.scalars(select(Study)).one().state == StudyState.COMPLETE, "a repeated instance re-opens nothing"
    assert worker.run_once() is True
    assert len(seen) == 2 and seen[1] == seen[0] + 7 * again.Rows * again.Columns, "the job read the new pixels"
