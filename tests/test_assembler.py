"""Study assembly: quiet timer, completion on association release (at once, or after a grace period in
which a new association for the study keeps it open), late instances re-open a study."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import wait_for
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from receiver_helpers import ct_dataset, ct_series, make_config, storescu, write_series
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.config import Config
from dicom_node.db.engine import Database
from dicom_node.db.schema import Association, Study, StudyState
from dicom_node.ml.analysis import header_fields
from dicom_node.receiver import start_receiver
from dicom_node.receiver.ingest import ParsedInstance, record_instance
from dicom_node.studies.assembler import Assembler

T0 = datetime(2024, 1, 1, 12, 0, 0)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Completion at the release itself (no grace period)."""
    return make_config(tmp_path, assembly={"quiet_seconds": 30, "complete_on_release": True, "release_grace_seconds": 0})


@pytest.fixture
def db(config: Config) -> Database:
    database = Database(config.database_url)
    yield database
    database.dispose()


def _receive(db: Database, study_uid: str, index: int, at: datetime, association_id: str | None = None) -> None:
    ds = ct_dataset(study_uid, study_uid + ".1", index)
    ds.SOPInstanceUID = f"{study_uid}.1.{index + 1}"  # the same index is the same instance
    parsed = ParsedInstance(header_fields(ds), ExplicitVRLittleEndian, "P", "", "20240101")
    record_instance(db, parsed, f"x/{index}.dcm", 10, "PACS", association_id, now=at)


def _study(db: Database, uid: str) -> Study:
    with db.read() as s:
        return s.scalars(select(Study).where(Study.study_uid == uid)).one()


def _open_association(db: Database, aid: str, ended: bool = False, at: datetime = T0) -> None:
    with db.write() as s:
        s.add(Association(id=aid, calling_ae="PACS", peer_address="127.0.0.1", started_at=at,
                          ended_at=at if ended else None, released=ended))


def _end_association(db: Database, aid: str, at: datetime, released: bool = True) -> None:
    with db.write() as s:
        assoc = s.get(Association, aid)
        assert assoc is not None
        assoc.ended_at, assoc.released = at, released


def test_quiet_timer_completes_once(config: Config, db: Database) -> None:
    seen: list[tuple[str, int]] = []
    assembler = Assembler(config, db, lambda session, study: seen.append((study.study_uid, study.generation)))
    _receive(db, "1.2.3", 0, T0)
    _receive(db, "1.2.3", 1, T0 + timedelta(seconds=10))
    assert assembler.check(now=T0 + timedelta(seconds=39)) == []  # 29 s quiet: not yet
    assert _study(db, "1.2.3").state == StudyState.RECEIVING
    assert assembler.check(now=T0 + timedelta(seconds=40)) == ["1.2.3"]
    study = _study(db, "1.2.3")
    assert (study.state, study.generation, study.completed_at) == (StudyState.COMPLETE, 1, T0 + timedelta(seconds=40))
    assert seen == [("1.2.3", 1)]
    assert assembler.check(now=T0 + timedelta(seconds=400)) == []  # complete studies stay complete
    assert seen == [("1.2.3", 1)]


def test_late_instance_reopens_and_generation_increments(config: Config, db: Database) -> None:
    assembler = Assembler(config, db)
    _receive(db, "1.2.4", 0, T0)
    assembler.check(now=T0 + timedelta(seconds=31))
    with db.write() as s:  # as if analysed and delivered since
        s.scalars(select(Study)).one().state = StudyState.DELIVERED
    _receive(db, "1.2.4", 0, T0 + timedelta(seconds=60))  # a duplicate does not re-open
    assert _study(db, "1.2.4").state == StudyState.DELIVERED
    _receive(db, "1.2.4", 1, T0 + timedelta(seconds=61))  # a new instance does
    assert _study(db, "1.2.4").state == StudyState.RECEIVING
    assert assembler.check(now=T0 + timedelta(seconds=80)) == []
    assert assembler.check(now=T0 + timedelta(seconds=91)) == ["1.2.4"]
    study = _study(db, "1.2.4")
    assert (study.state, study.generation) == (StudyState.COMPLETE, 2)


def test_release_completes_unless_another_open_association_sent_to_it(config: Config, db: Database) -> None:
    assembler = Assembler(config, db)
    _open_association(db, "a1")
    _open_association(db, "a2")
    _receive(db, "5.5", 0, T0, "a1")
    _receive(db, "5.5", 1, T0, "a2")  # a2 sent the last instance; a1 is still open
    _receive(db, "6.6", 0, T0, "a2")
    with db.write() as s:
        s.get(Association, "a2").ended_at = T0  # type: ignore[union-attr]
    assert assembler.association_released("a2") == ["6.6"]  # 5.5 still has a1 sending
    assert _study(db, "5.5").state == StudyState.RECEIVING
    assert assembler.association_released("a1") == []  # a1 did not send 5.5's last instance
    assert assembler.check(now=T0 + timedelta(seconds=31)) == ["5.5"]  # the quiet timer catches it


def test_release_does_nothing_when_disabled(tmp_path: Path) -> None:
    config = make_config(tmp_path, assembly={"complete_on_release": False})
    db = Database(config.database_url)
    _open_association(db, "a1", ended=True)
    _receive(db, "7.7", 0, T0, "a1")
    assert Assembler(config, db).association_released("a1") == []
    assert _study(db, "7.7").state == StudyState.RECEIVING
    db.dispose()


def test_failing_callback_rolls_back_the_completion(config: Config, db: Database) -> None:
    def boom(session: Session, study: Study) -> None:
        raise RuntimeError("queue unavailable")

    _receive(db, "8.8", 0, T0)
    assert Assembler(config, db, boom).check(now=T0 + timedelta(seconds=60)) == []
    study = _study(db, "8.8")
    assert (study.state, study.generation) == (StudyState.RECEIVING, 0)


def test_association_release_completes_over_the_network(config: Config, db: Database, tmp_path: Path) -> None:
    assembler = Assembler(config, db)
    handle = start_receiver(config, db, lambda aid, released: released and assembler.association_released(aid))
    try:
        datasets = ct_series(4)
        result = storescu(handle.port, write_series(tmp_path / "in", datasets))
        assert result.returncode == 0, result.stderr
        uid = datasets[0].StudyInstanceUID
        wait_for(lambda: _study(db, uid).state == StudyState.COMPLETE, timeout=10, msg="study complete on release")
        assert _study(db, uid).generation == 1
    finally:
        handle.shutdown(grace_seconds=2)


def _seconds(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def test_default_grace_period_is_a_few_seconds(tmp_path: Path) -> None:
    assert make_config(tmp_path).assembly.release_grace_seconds == 2.0


@pytest.fixture
def graced(tmp_path: Path) -> Iterator[tuple[Database, Assembler]]:
    """An assembler with a 3 s release grace period and a 30 s quiet timer."""
    config = make_config(tmp_path, assembly={"quiet_seconds": 30, "release_grace_seconds": 3})
    database = Database(config.database_url)
    yield database, Assembler(config, database)
    database.dispose()


def test_release_completes_only_after_the_grace_period(graced: tuple[Database, Assembler]) -> None:
    db, assembler = graced
    _open_association(db, "a1")
    _receive(db, "5.5", 0, T0, "a1")
    _end_association(db, "a1", _seconds(1))
    assert assembler.association_released("a1") == []  # the grace period starts
    assert assembler.check(now=_seconds(3.9)) == []
    assert assembler.check(now=_seconds(4.1)) == ["5.5"]
    assert _study(db, "5.5").generation == 1


def test_association_per_series_keeps_the_study_open_until_the_last_one(graced: tuple[Database, Assembler]) -> None:
    db, assembler = graced
    for n, aid in enumerate(("scout", "axial", "bone")):  # one association per series, 2 s apart
        start = _seconds(4 * n)
        _open_association(db, aid, at=start)
        _receive(db, "6.6", n, start + timedelta(seconds=0.5), aid)
        assert assembler.check(now=start + timedelta(seconds=1)) == []  # the previous release is not due
        _end_association(db, aid, start + timedelta(seconds=2))
        assert assembler.check(now=start + timedelta(seconds=3.5)) == []  # within the grace period
    assert assembler.check(now=_seconds(8 + 2 + 3.1)) == ["6.6"]
    assert _study(db, "6.6").generation == 1


def test_aborted_association_waits_for_the_quiet_timer(graced: tuple[Database, Assembler]) -> None:
    db, assembler = graced
    _open_association(db, "a1")
    _receive(db, "7.1", 0, T0, "a1")
    _end_association(db, "a1", _seconds(1), released=False)
    assert assembler.check(now=_seconds(10)) == []
    assert assembler.check(now=_seconds(31)) == ["7.1"]


def test_grace_period_over_the_network(tmp_path: Path) -> None:
    config = make_config(tmp_path, assembly={"quiet_seconds": 300, "release_grace_seconds": 3})
    db = Database(config.database_url)
    assembler = Assembler(config, db)
    handle = start_receiver(config, db, lambda aid, released: released and assembler.association_released(aid))
    try:
        study_uid = generate_uid()
        first, second = ct_series(3, study_uid=study_uid), ct_series(3, study_uid=study_uid)
        for n, datasets in enumerate((first, second)):
            result = storescu(handle.port, write_series(tmp_path / f"in{n}", datasets))
            assert result.returncode == 0, result.stderr
            assert assembler.check() == [], "completed within the grace period"
        wait_for(lambda: assembler.check() == [study_uid] or _study(db, study_uid).state == StudyState.COMPLETE,
                 timeout=10, interval=0.1, msg="complete after the grace period")
        assert _study(db, study_uid).generation == 1
    finally:
        handle.shutdown(grace_seconds=2)
        db.dispose()


def test_a_study_completes_when_its_grace_period_ends_not_at_the_next_periodic_check(tmp_path: Path) -> None:
    """The release sets a one-shot check at the end of its grace period: with a periodic check only every
    60 s, the study is complete about `release_grace_seconds` after the release (a grace of 3 s, long
    enough to see the study still receiving right after `storescu` exits on a loaded machine)."""
    import time

    from apscheduler.schedulers.background import BackgroundScheduler

    config = make_config(tmp_path, assembly={"quiet_seconds": 300, "release_grace_seconds": 3,
                                             "check_interval_seconds": 60})
    db = Database(config.database_url)
    assembler = Assembler(config, db)
    scheduler = BackgroundScheduler(timezone="UTC")
    assembler.start(scheduler)
    scheduler.start()
    handle = start_receiver(config, db, lambda aid, released: released and assembler.association_released(aid))
    try:
        datasets = ct_series(3)
        uid = datasets[0].StudyInstanceUID
        result = storescu(handle.port, write_series(tmp_path / "in", datasets))
        released = time.monotonic()
        assert result.returncode == 0, result.stderr
        assert _study(db, uid).state == StudyState.RECEIVING  # the grace period runs
        wait_for(lambda: _study(db, uid).state == StudyState.COMPLETE, timeout=20, interval=0.02,
                 msg="complete once the grace period is over")
        assert 2.5 < time.monotonic() - released < 15  # after the grace, not at the 60 s periodic check
        assert _study(db, uid).generation == 1
    finally:
        handle.shutdown(grace_seconds=2)
        scheduler.shutdown(wait=True)
        db.dispose()
