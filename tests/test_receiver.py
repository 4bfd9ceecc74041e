"""The receiver over real sockets: DCMTK echoscu/storescu and a pynetdicom SCU against start_receiver()."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from conftest import wait_for
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from receiver_helpers import (
    DCMTK_ENV,
    ECHOSCU,
    ct_dataset,
    ct_series,
    files_under,
    make_config,
    storescu,
    write_series,
)
from sqlalchemy import func, select

from dicom_node.config import Config
from dicom_node.db.engine import Database
from dicom_node.db.schema import Association, Instance, Series, Study, StudyState
from dicom_node.receiver import ReceiverHandle, start_receiver


@dataclass
class Running:
    config: Config
    db: Database
    handle: ReceiverHandle
    ended: list[tuple[str, bool]]

    @property
    def port(self) -> int:
        return self.handle.port

    def count(self, model: type) -> int:
        with self.db.read() as s:
            return int(s.scalar(select(func.count()).select_from(model)) or 0)


def _start(tmp_path: Path, **sections: dict) -> Iterator[Running]:
    config = make_config(tmp_path, **sections)
    db = Database(config.database_url)
    ended: list[tuple[str, bool]] = []
    handle = start_receiver(config, db, lambda aid, released: ended.append((aid, released)))
    try:
        yield Running(config, db, handle, ended)
    finally:
        handle.shutdown(grace_seconds=2)
        db.dispose()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Running]:
    yield from _start(tmp_path)


def _scu_store(port: int, datasets: list[Dataset], calling: str = "TESTSCU", called: str = "DICOMNODE",
               syntax: str = ExplicitVRLittleEndian) -> list[int]:
    """Send with a pynetdicom SCU; return each C-STORE response status (-1: no response)."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, "association not established"
    statuses = []
    try:
        for ds in datasets:
            rsp = assoc.send_c_store(ds)
            statuses.append(int(rsp.Status) if "Status" in rsp else -1)
    finally:
        assoc.release()
    return statuses


def _echo(port: int, calling: str, called: str = "DICOMNODE") -> subprocess.CompletedProcess[str]:
    cmd = [ECHOSCU, "-aet", calling, "-aec", called, "127.0.0.1", str(port)]
    return subprocess.run(cmd, check=False, env=DCMTK_ENV, capture_output=True, text=True, timeout=30)


def test_echoscu_succeeds(node: Running) -> None:
    result = _echo(node.port, "ECHOSCU")
    assert result.returncode == 0, result.stderr


def test_storescu_series_is_stored_and_indexed(node: Running, tmp_path: Path) -> None:
    datasets = ct_series(6)
    files = write_series(tmp_path / "in", datasets)
    result = storescu(node.port, files, "-v")
    assert result.returncode == 0, result.stderr
    successes = result.stderr.count("Received Store Response (Success)")
    assert successes == 6
    stored = files_under(node.config.storage.path)
    assert node.count(Instance) == len(stored) == successes
    with node.db.read() as s:
        study = s.scalars(select(Study)).one()
        series = s.scalars(select(Series)).one()
        rows = s.scalars(select(Instance).order_by(Instance.instance_number)).all()
        assoc = s.scalars(select(Association)).one()
    assert study.study_uid == datasets[0].StudyInstanceUID
    assert study.state == StudyState.RECEIVING
    assert study.patient_id == "SYNTH-0001" and study.accession_number == "ACC1"
    assert series.modality == "CT" and series.body_part == "HEAD" and series.series_description == "Head 5mm"
    first = rows[0]
    assert first.image_type == "ORIGINAL\\PRIMARY\\AXIAL"
    assert first.slice_thickness == 5.0 and first.rows == 32 and first.calling_ae == "STORESCU"
    assert first.transfer_syntax_uid == ExplicitVRLittleEndian
    assert first.association_id == assoc.id
    assert assoc.n_stored == 6 and assoc.calling_ae == "STORESCU"
    # the stored bytes are the instance as sent, pixel data intact
    back = pydicom.dcmread(node.config.storage.path / first.path)
    assert back.SOPInstanceUID == datasets[0].SOPInstanceUID
    assert back.PixelData == datasets[0].PixelData
    wait_for(lambda: node.ended, msg="association end callback")
    assert node.ended == [(assoc.id, True)]
    with node.db.read() as s:
        assoc = s.scalars(select(Association)).one()
    assert assoc.released and assoc.ended_at is not None


def test_uids_differing_only_in_letters_are_both_stored_intact(node: Running, tmp_path: Path) -> None:
    # Real senders use letters (hex) in UIDs; sanitised alike ('1.2.___'), they must still get two files.
    study, series = "1.2.826.0.1.3680043.9.4245.a1b2c3", "1.2.826.0.1.3680043.9.4245.a1b2c3.1"
    datasets = [ct_dataset(study, series, i, seed=i * 7) for i in range(2)]
    for ds, uid in zip(datasets, ("1.2.826.0.1.3680043.9.4245.abc", "1.2.826.0.1.3680043.9.4245.abd"), strict=True):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    result = storescu(node.port, write_series(tmp_path / "in", datasets), "-v")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Received Store Response (Success)") == 2
    with node.db.read() as s:
        rows = {r.sop_instance_uid: r.path for r in s.scalars(select(Instance))}
    assert len(set(rows.values())) == 2, rows
    assert len(files_under(node.config.storage.path)) == 2
    for ds in datasets:  # each file holds its own instance, pixel data intact, not the other one
        back = pydicom.dcmread(node.config.storage.path / rows[ds.SOPInstanceUID])
        assert back.SOPInstanceUID == ds.SOPInstanceUID and back.PixelData == ds.PixelData
    assert datasets[0].PixelData != datasets[1].PixelData


def test_receiver_start_sweeps_leftover_temporaries(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    leftovers = [config.storage.path / "1.2.3" / "1.2.3.4" / ".tmp-5f0e", config.storage.quarantine / ".tmp-77aa"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half-written by a killed receiver")
    running = _start(tmp_path)
    next(running)
    try:
        assert not any(p.exists() for p in leftovers)
    finally:
        running.close()


def test_pynetdicom_scu_and_duplicates_are_idempotent(node: Running) -> None:
    datasets = ct_series(3)
    assert _scu_store(node.port, datasets, syntax=ImplicitVRLittleEndian) == [0, 0, 0]
    # the same three again, plus one new: still Success, one row per SOP Instance UID
    more = datasets + [ct_series(1, study_uid=datasets[0].StudyInstanceUID)[0]]
    assert _scu_store(node.port, more) == [0, 0, 0, 0]
    assert node.count(Instance) == 4 == len(files_under(node.config.storage.path))
    assert node.count(Study) == 1
    assert node.count(Series) == 2


@pytest.mark.parametrize(
    ("calling", "called", "reason"),
    [
        ("NOBODY", "DICOMNODE", "Calling AE Title Not Recognized"),
        ("ECHOSCU", "SOMEONEELSE", "Called AE Title Not Recognized"),
        ("FARAWAY", "DICOMNODE", "No Reason"),  # known AE, but only allowed from 10.0.0.0/8
    ],
)
def test_rejected_associations(
    node: Running, calling: str, called: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="dicom_node.receiver.access"):
        result = _echo(node.port, calling, called)
    assert result.returncode != 0
    assert "Association Rejected" in result.stderr and reason in result.stderr
    audit = [r for r in caplog.records if r.getMessage().startswith("association rejected")]
    assert len(audit) == 1
    assert audit[0].calling_ae == calling and audit[0].peer == "127.0.0.1"  # type: ignore[attr-defined]
    assert node.count(Association) == 0


def test_storescu_with_unknown_calling_ae_stores_nothing(node: Running, tmp_path: Path) -> None:
    files = write_series(tmp_path / "in", ct_series(2))
    result = storescu(node.port, files, calling="INTRUDER")
    assert result.returncode != 0
    assert node.count(Instance) == 0 and files_under(node.config.storage.path) == []


def test_low_disk_refuses_associations(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    huge = 1 << 40  # MiB: no disk has a petabyte free
    for running in _start(tmp_path, storage={"min_free_mb": huge}):
        with caplog.at_level("WARNING", logger="dicom_node.receiver.access"):
            result = _echo(running.port, "ECHOSCU")
        assert result.returncode != 0 and "Association Rejected" in result.stderr
        assert any("min_free_mb" in r.getMessage() for r in caplog.records)


def test_unparseable_dataset_is_quarantined(node: Running) -> None:
    ds = ct_series(1)[0]
    ds.StudyInstanceUID = ""  # a dataset we cannot index: no study to put it in
    statuses = _scu_store(node.port, [ds])
    assert statuses == [0xC210]
    assert node.count(Instance) == 0 and files_under(node.config.storage.path) == []
    q = node.config.storage.quarantine
    kept = sorted(p for p in q.iterdir() if p.suffix == ".dcm")
    reasons = sorted(q.glob("*.reason.txt"))
    assert len(kept) == 1 and len(reasons) == 1
    assert "study_uid" in reasons[0].read_text()
    assert pydicom.dcmread(BytesIO(kept[0].read_bytes())).SOPInstanceUID == ds.SOPInstanceUID


def test_garbage_bytes_are_quarantined(node: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydicom.filewriter import write_file_meta_info
    from pynetdicom import _config

    ds = ct_series(1)[0]
    path = tmp_path / "garbage.dcm"
    with path.open("wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fh, ds.file_meta)
        # A sequence of undefined length whose items are garbage and never end: no reader can parse it.
        fh.write(b"\x08\x00\x05\x00SQ\x00\x00\xff\xff\xff\xff" + b"\x01" * 30)
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send the bytes as they are
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOMNODE")
    assert assoc.is_established
    try:
        status = int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()
    assert 0xC000 <= status <= 0xCFFF
    assert node.count(Instance) == 0
    reasons = list(node.config.storage.quarantine.glob("*.reason.txt"))
    assert len(reasons) == 1 and "cannot parse" in reasons[0].read_text()


def test_write_failure_answers_a700_and_leaves_nothing(node: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd: int) -> None:
        calls["n"] += 1
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    statuses = _scu_store(node.port, ct_series(2))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert statuses == [0xA700, 0xA700]
    assert calls["n"] >= 2
    assert node.count(Instance) == 0
    store = node.config.storage.path
    assert [p for p in store.rglob("*") if p.is_file()] == []  # no final file, no temporary left behind
    # and the receiver carries on once the disk is writable again
    assert _scu_store(node.port, ct_series(1)) == [0]


def test_database_failure_answers_a700_and_removes_the_file(
    node: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from dicom_node.receiver import scp

    def failing_record(*_a: object, **_k: object) -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked (injected)"))

    monkeypatch.setattr(scp, "record_instance", failing_record)
    assert _scu_store(node.port, ct_series(2)) == [0xA700, 0xA700]
    assert node.count(Instance) == 0
    assert files_under(node.config.storage.path) == []


def test_counts_match_success_responses(node: Running, tmp_path: Path) -> None:
    """Instances in the DB == files on disk == Success responses, across two senders and a duplicate."""
    a = ct_series(5)
    b = ct_series(4)
    files = write_series(tmp_path / "a", a)
    result = storescu(node.port, files, "-v")
    ok_dcmtk = result.stderr.count("Received Store Response (Success)")
    ok_scu = sum(1 for s in _scu_store(node.port, b + a[:1]) if s == 0)
    unique_successes = ok_dcmtk + ok_scu - 1  # a[0] was sent twice
    assert ok_dcmtk == 5 and ok_scu == 5
    assert node.count(Instance) == len(files_under(node.config.storage.path)) == unique_successes == 9
