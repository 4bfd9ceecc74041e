"""The database engine: readers never hold the SQLite write lock; writers take it at BEGIN."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import func, select

from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Study


def _add_study(db: Database, uid: str) -> None:
    now = utcnow()
    with db.write() as session:
        session.add(Study(study_uid=uid, first_received_at=now, last_received_at=now))


def test_open_read_transaction_does_not_block_a_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    reader_db, writer_db = Database(url), Database(url)  # two processes' worth of engines
    _add_study(writer_db, "1.2.3")
    done = threading.Event()
    with reader_db.read() as session:
        assert session.scalar(select(func.count()).select_from(Study)) == 1  # snapshot taken, still open
        writer = threading.Thread(target=lambda: (_add_study(writer_db, "1.2.4"), done.set()), daemon=True)
        writer.start()
        assert done.wait(5), "a writer waited for an open read transaction (reads must not take the write lock)"
        # the reader keeps its snapshot until it ends
        assert session.scalar(select(func.count()).select_from(Study)) == 1
    with reader_db.read() as session:
        assert session.scalar(select(func.count()).select_from(Study)) == 2


def test_writers_serialise_from_begin(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    first, second = Database(url), Database(url)
    entered = threading.Event()
    with first.write() as session:
        session.scalar(select(func.count()).select_from(Study))
        writer = threading.Thread(target=lambda: (_add_study(second, "1.2.5"), entered.set()), daemon=True)
        writer.start()
        assert not entered.wait(0.5), "a second writer got in while the first held the write lock"
    assert entered.wait(10)
