"""Retention: received files of delivered studies go after the configured age; rows and other studies stay."""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from io import BytesIO
from pathlib import Path

import pytest
from receiver_helpers import ct_series, make_config
from sqlalchemy import func, select

from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Instance, Study, StudyState
from dicom_node.receiver.ingest import parse_instance, record_instance
from dicom_node.receiver.store import InstanceStore, instance_relpath
from dicom_node.studies.retention import Retention


def _receive(config, db: Database, n: int) -> tuple[str, list[Path]]:  # type: ignore[no-untyped-def]
    store = InstanceStore(config.storage)
    paths = []
    study_uid = ""
    for ds in ct_series(n):
        buf = BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        data = buf.getvalue()
        parsed = parse_instance(data)
        rel = instance_relpath(parsed.study_uid, parsed.series_uid, parsed.sop_instance_uid)
        paths.append(store.write(rel, data))
        record_instance(db, parsed, rel, len(data), "STORESCU", None)
        study_uid = parsed.study_uid
    return study_uid, paths


def _set(db: Database, study_uid: str, state: StudyState, age_days: float) -> None:
    with db.write() as session:
        study = session.scalar(select(Study).where(Study.study_uid == study_uid))
        assert study is not None
        study.state = state
        study.last_received_at = utcnow() - timedelta(days=age_days)


def test_deletes_files_of_old_delivered_studies_only(tmp_path: Path) -> None:
    config = make_config(tmp_path, retention={"delete_after_days": 7})
    db = Database(config.database_url)
    old_delivered, old_files = _receive(config, db, 3)
    young_delivered, young_files = _receive(config, db, 2)
    old_analysed, analysed_files = _receive(config, db, 2)
    _set(db, old_delivered, StudyState.DELIVERED, 8)
    _set(db, young_delivered, StudyState.DELIVERED, 6)
    _set(db, old_analysed, StudyState.ANALYSED, 30)  # not yet delivered: keeps its files

    assert Retention(config, db).run_once() == 1
    assert not any(p.exists() for p in old_files)
    assert all(p.exists() for p in young_files + analysed_files)
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 7, "rows are the audit trail"
        purged = session.scalar(select(Study).where(Study.study_uid == old_delivered))
        assert purged is not None and purged.pixels_deleted_at is not None
    assert Retention(config, db).run_once() == 0, "a purged study is not purged again"


def test_zero_days_keeps_everything(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    db = Database(config.database_url)
    study_uid, files = _receive(config, db, 2)
    _set(db, study_uid, StudyState.DELIVERED, 365)
    assert Retention(config, db).run_once() == 0
    assert all(p.exists() for p in files)


def test_a_failed_unlink_is_logged_and_retried_next_pass(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The deletion is committed first, the files unlinked after it: a file that cannot be unlinked (here a
    directory in its place, which even root cannot unlink) keeps the study pending, and the next pass
    finishes it once the file can go. Readers see the pixels as deleted from the commit on."""
    config = make_config(tmp_path, retention={"delete_after_days": 7})
    db = Database(config.database_url)
    study_uid, files = _receive(config, db, 3)
    _set(db, study_uid, StudyState.DELIVERED, 8)
    stuck = files[1]
    stuck.unlink()
    stuck.mkdir()
    (stuck / "inside").write_bytes(b"x")

    with caplog.at_level(logging.WARNING, logger="dicom_node.studies.retention"):
        assert Retention(config, db).run_once() == 1
    assert [r.getMessage() for r in caplog.records if r.name == "dicom_node.studies.retention"] == [
        "retention: files not deleted, tried again next pass"]
    assert not files[0].exists() and not files[2].exists() and stuck.is_dir()
    with db.read() as session:
        study = session.scalar(select(Study).where(Study.study_uid == study_uid))
        assert study is not None and study.pixels_deleted_at is not None and study.pixels_unlink_pending

    shutil.rmtree(stuck)
    stuck.write_bytes(b"the file is back and can go")
    assert Retention(config, db).run_once() == 0, "no new study to purge: only the pending one is finished"
    assert not stuck.exists()
    with db.read() as session:
        study = session.scalar(select(Study).where(Study.study_uid == study_uid))
        assert study is not None and not study.pixels_unlink_pending


def test_a_pass_that_stopped_after_its_commit_is_finished_by_the_next(tmp_path: Path) -> None:
    """A process that dies between committing a deletion and unlinking the files leaves the study pending;
    the next pass (here a new `Retention`) unlinks them."""
    config = make_config(tmp_path, retention={"delete_after_days": 7})
    db = Database(config.database_url)
    study_uid, files = _receive(config, db, 2)
    with db.write() as session:  # what the first transaction of run_once commits, and nothing after it
        study = session.scalar(select(Study).where(Study.study_uid == study_uid))
        assert study is not None
        study.state, study.pixels_deleted_at, study.pixels_unlink_pending = StudyState.DELIVERED, utcnow(), True
    assert all(p.exists() for p in files)
    assert Retention(config, db).unlink_pending() == 1
    assert not any(p.exists() for p in files)
