"""The sender against real peers (DCMTK storescp, Orthanc): delivery, backoff while down, max age, echo, retry."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import free_port, wait_for, write_config
from orthanc_helpers import OrthancServer, StoreSCP
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from sqlalchemy import select

from dicom_node.config import Config, load_config
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Delivery, DeliveryState, Job, JobState, Output, Result, Study, StudyState
from dicom_node.delivery.echo import echo
from dicom_node.delivery.sender import Sender
from dicom_node.errors import DeliveryError

STUDY_UID = "1.2.826.0.1.3680043.8.498.4242"


def sc_dataset(study_uid: str, sop_uid: str) -> pydicom.Dataset:
    """A minimal, valid secondary capture (generated, no patient data)."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = study_uid + ".99"
    ds.PatientName = "TEST^SENDER"
    ds.PatientID = "SENDER-1"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(64, dtype=np.uint8).tobytes()
    return ds


def add_outputs(db: Database, config: Config, n: int, study_uid: str = STUDY_UID) -> list[str]:
    """An analysed study with `n` output files in the outbox and one pending delivery per destination."""
    now = utcnow()
    uids = [generate_uid() for _ in range(n)]
    with db.write() as s:
        study = Study(
            study_uid=study_uid,
            generation=1,
            state=StudyState.ANALYSED,
            first_received_at=now,
            last_received_at=now,
        )
        s.add(study)
        s.flush()
        job = Job(
            study_id=study.id,
            generation=1,
            model_name="ich",
            state=JobState.DONE,
            run_after=now,
            created_at=now,
            updated_at=now,
        )
        s.add(job)
        s.flush()
        result = Result(
            job_id=job.id,
            study_id=study.id,
            model_name="ich",
            model_version="1",
            status="analysed",
            payload={},
            created_at=now,
        )
        s.add(result)
        s.flush()
        for uid in uids:
            rel = f"{study_uid}/{uid}.dcm"
            target = config.storage.outbox / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            ds = sc_dataset(study_uid, uid)
            ds.save_as(target, enforce_file_format=True)
            out = Output(
                study_id=study.id,
                result_id=result.id,
                kind="overlay",
                sop_class_uid=ds.SOPClassUID,
                sop_instance_uid=uid,
                series_uid=ds.SeriesInstanceUID,
                path=rel,
                created_at=now,
            )
            s.add(out)
            s.flush()
            for dest in config.destinations:
                s.add(Delivery(output_id=out.id, destination=dest.name, next_attempt_at=now, created_at=now))
    return uids


def deliveries(db: Database) -> list[Delivery]:
    with db.read() as s:
        return list(s.scalars(select(Delivery).order_by(Delivery.id)))


def study_state(db: Database, uid: str = STUDY_UID) -> StudyState:
    with db.read() as s:
        return s.scalar(select(Study.state).where(Study.study_uid == uid))


@pytest.fixture
def pacs_port() -> int:
    return free_port()


@pytest.fixture
def config(tmp_path: Path, pacs_port: int) -> Config:
    return load_config(
        write_config(
            tmp_path,
            destinations=[{"name": "pacs", "ae_title": "DEMO-PACS", "host": "127.0.0.1", "port": pacs_port}],
            delivery={"initial_backoff_seconds": 0.3, "max_backoff_seconds": 1.0, "poll_seconds": 0.05},
        )
    )


@pytest.fixture
def db(config: Config) -> Iterator[Database]:
    database = Database(config.database_url)
    yield database
    database.dispose()


def test_backoff_is_exponential_and_capped(config: Config) -> None:
    # the wait after the 1st, 2nd, ... failed try: initial_backoff_seconds (delivery.retry.initial_delay_seconds)
    assert [config.delivery.retry.delay(n).total_seconds() for n in range(1, 5)] == [0.3, 0.6, 1.0, 1.0]


def test_sends_batch_to_storescp_and_marks_study_delivered(
    tmp_path: Path, config: Config, db: Database, pacs_port: int
) -> None:
    uids = add_outputs(db, config, 3)
    with StoreSCP(tmp_path / "scp", port=pacs_port) as scp:
        assert Sender(config, db).run_once() == 3
        received = {pydicom.dcmread(p).SOPInstanceUID for p in scp.received()}
    assert received == set(uids)
    assert all(d.state == DeliveryState.SENT and d.sent_at and d.attempts == 1 for d in deliveries(db))
    assert study_state(db) == StudyState.DELIVERED
    assert Sender(config, db).run_once() == 0  # nothing left to send


def test_destination_down_backs_off_then_delivers_when_up(
    tmp_path: Path, config: Config, db: Database, pacs_port: int
) -> None:
    uids = add_outputs(db, config, 2)
    sender = Sender(config, db)
    assert sender.run_once() == 0
    rows = deliveries(db)
    assert all(d.state == DeliveryState.PENDING and d.attempts == 1 and d.last_error for d in rows)
    wait = (rows[0].next_attempt_at - utcnow()).total_seconds()
    assert 0.1 < wait <= 0.31  # the first wait is initial_backoff_seconds (delivery.retry.initial_delay_seconds)
    assert sender.run_once() == 0 and all(d.attempts == 1 for d in deliveries(db))  # not due yet: no new try
    wait_for(lambda: sender.run_once() == 0 and deliveries(db)[0].attempts >= 2, timeout=5, msg="second try")
    assert study_state(db) == StudyState.ANALYSED
    with StoreSCP(tmp_path / "scp", port=pacs_port) as scp:
        sender.start()
        try:
            wait_for(
                lambda: all(d.state == DeliveryState.SENT for d in deliveries(db)), timeout=10, msg="sent"
            )
        finally:
            sender.stop()
        assert {pydicom.dcmread(p).SOPInstanceUID for p in scp.received()} == set(uids)
    assert study_state(db) == StudyState.DELIVERED


def test_fails_after_max_age_with_reason_and_retry_command_requeues(
    tmp_path: Path, config: Config, db: Database, pacs_port: int
) -> None:
    add_outputs(db, config, 1)
    with db.write() as s:
        for d in s.scalars(select(Delivery)):
            d.created_at = utcnow() - timedelta(seconds=config.delivery.retry.max_age_seconds + 1)
    Sender(config, db).run_once()
    (row,) = deliveries(db)
    assert row.state == DeliveryState.FAILED and "could not connect" in row.last_error
    assert Sender(config, db).run_once() == 0
    cli = subprocess.run(
        [sys.executable, "-m", "dicom_node.cli", "retry", "--config", str(config.source), "--deliveries"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert "re-queued 1 deliveries and 0 jobs" in cli.stdout
    (row,) = deliveries(db)
    assert row.state == DeliveryState.PENDING and row.attempts == 0
    with StoreSCP(tmp_path / "scp", port=pacs_port):
        assert Sender(config, db).run_once() == 1


def test_unconfigured_destination_is_retried_with_reason(config: Config, db: Database) -> None:
    add_outputs(db, config, 1)
    with db.write() as s:
        s.scalar(select(Delivery)).destination = "gone"
    assert Sender(config, db).run_once() == 0
    (row,) = deliveries(db)
    assert row.state == DeliveryState.PENDING and "not configured" in row.last_error


def test_echo_function_and_command(tmp_path: Path, config: Config, pacs_port: int) -> None:
    with pytest.raises(DeliveryError):
        echo(config, "pacs")
    with StoreSCP(tmp_path / "scp", port=pacs_port):
        assert echo(config, "pacs") == 0x0000
        ok = subprocess.run(
            [sys.executable, "-m", "dicom_node.cli", "echo", "pacs", "--config", str(config.source)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert ok.returncode == 0 and "success" in ok.stdout, ok.stderr
    unknown = subprocess.run(
        [sys.executable, "-m", "dicom_node.cli", "echo", "nowhere", "--config", str(config.source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unknown.returncode == 2 and "pacs" in unknown.stderr


def test_orthanc_receives_outputs_and_repeat_is_harmless(tmp_path: Path) -> None:
    with OrthancServer(tmp_path / "orthanc") as pacs:
        cfg = load_config(
            write_config(
                tmp_path,
                destinations=[
                    {"name": "orthanc", "ae_title": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port}
                ],
            )
        )
        db = Database(cfg.database_url)
        uids = add_outputs(db, cfg, 2)
        files = {p: p.read_bytes() for p in cfg.storage.outbox.rglob("*.dcm")}
        assert Sender(cfg, db).run_once() == 2
        assert pacs.sop_instance_uids() == set(uids)
        assert not any(p.exists() for p in files), "every destination has them: gone from the outbox"
        studies = pacs.get("/studies")
        assert len(studies) == 1
        assert pacs.get(f"/studies/{studies[0]}")["MainDicomTags"]["StudyInstanceUID"] == STUDY_UID
        for p, data in files.items():  # deliver again, as after a crash between C-STORE response and commit
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        with db.write() as s:
            for d in s.scalars(select(Delivery)):
                d.state, d.next_attempt_at = DeliveryState.PENDING, utcnow()
        assert Sender(cfg, db).run_once() == 2
        assert len(pacs.get("/instances")) == 2
        db.dispose()


def test_a_slow_pacs_answer_never_lets_another_sender_take_the_claim(tmp_path: Path, pacs_port: int) -> None:
    """Two serve processes on one database: while one waits for a slow C-STORE answer (longer than the
    lease), its claims are renewed, so the other claims nothing and each object reaches the PACS once."""
    import threading
    import time

    from pynetdicom import AE, evt

    config = load_config(write_config(
        tmp_path, destinations=[{"name": "pacs", "ae_title": "DEMO-PACS", "host": "127.0.0.1", "port": pacs_port}],
        delivery={"lease_seconds": 0.6, "poll_seconds": 0.05}))
    db = Database(config.database_url)
    uids = add_outputs(db, config, 2)
    stored: list[str] = []
    answering = threading.Event()

    def slow_store(event: evt.Event) -> int:
        answering.set()
        time.sleep(1.5)  # 2.5 leases per answer
        stored.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="DEMO-PACS")
    ae.add_supported_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian])
    server = ae.start_server(("127.0.0.1", pacs_port), block=False, evt_handlers=[(evt.EVT_C_STORE, slow_store)])
    try:
        sent: list[int] = []
        first = threading.Thread(target=lambda: sent.append(Sender(config, db, owner="serve-a").run_once()))
        first.start()
        # serve-b starts polling once serve-a holds the claims and waits for the PACS: on a loaded machine
        # the thread may start late, and serve-b then rightly claims the work itself
        assert answering.wait(30)
        rival = Sender(config, db, owner="serve-b")
        taken = 0
        while first.is_alive():  # serve-b polls all the while serve-a waits for the PACS
            taken += rival.run_once()
            time.sleep(0.1)
        first.join()
        states = {d.state for d in deliveries(db)}
    finally:
        server.shutdown()
        db.dispose()
    assert sent == [2] and taken == 0
    assert sorted(stored) == sorted(uids)  # each once
    assert states == {DeliveryState.SENT}
