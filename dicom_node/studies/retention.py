"""Retention: delete received pixel data of delivered studies after `retention.delete_after_days`.

Only the files go; the database keeps every row (the audit trail of what was received, analysed and
delivered), and the study records when its files were deleted. A study that is not yet delivered, or
that received an instance since, keeps its files.

The decision is committed first (`pixels_deleted_at`, and `pixels_unlink_pending` set), so nothing reads
the files any more; the files are unlinked after the commit, with no transaction open (on SQLite the write
lock would keep the receiver waiting). `pixels_unlink_pending` is cleared once every file is gone: a file
that cannot be unlinked (logged), or a process that stops half-way, leaves it set, and the next pass
unlinks what is left.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from dicom_node.config import Config
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Instance, Study, StudyState

log = logging.getLogger(__name__)


class Retention:
    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db

    def run_once(self, now: datetime | None = None) -> int:
        """Delete the files of every expired delivered study; returns how many studies were purged."""
        days = self.config.retention.delete_after_days
        if days <= 0:
            return 0
        now = now or utcnow()
        cutoff = now - timedelta(days=days)
        with self.db.read() as session:
            study_ids = session.scalars(
                select(Study.id).where(
                    Study.state == StudyState.DELIVERED,
                    Study.last_received_at <= cutoff,
                    Study.pixels_deleted_at.is_(None),
                )
            ).all()
        purged = 0
        for study_id in study_ids:
            with self.db.write() as session:
                study = session.get(Study, study_id)
                if study is None or study.state != StudyState.DELIVERED or study.last_received_at > cutoff:
                    continue  # re-opened meanwhile
                study.pixels_deleted_at = now
                study.pixels_unlink_pending = True
            purged += 1
        self.unlink_pending()
        return purged

    def unlink_pending(self) -> int:
        """Unlink the files of every study whose deletion is committed but not finished; returns how many
        studies are now done. A file that cannot be removed keeps its study pending for the next pass."""
        with self.db.read() as session:
            pending = session.execute(
                select(Study.id, Study.study_uid).where(Study.pixels_unlink_pending.is_(True))
            ).all()
        done = 0
        for study_id, study_uid in pending:
            with self.db.read() as session:
                paths = session.scalars(select(Instance.path).where(Instance.study_id == study_id)).all()
            removed, failed = _unlink_all(self.config.storage.path / rel for rel in paths)
            if failed:
                log.warning("retention: files not deleted, tried again next pass",
                            extra={"study_uid": study_uid, "files": failed})
                continue
            with self.db.write() as session:
                study = session.get(Study, study_id)
                if study is not None:
                    study.pixels_unlink_pending = False
            done += 1
            log.info("retention: deleted received files", extra={"study_uid": study_uid, "files": removed})
        return done


def _unlink_all(paths: Iterable[Path]) -> tuple[int, int]:
    """Unlink each path (one already gone counts as done); returns (removed, failed)."""
    removed = failed = 0
    for path in paths:
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            continue
        except OSError as exc:
            failed += 1
            log.debug("retention: unlink failed", extra={"file": str(path), "reason": str(exc)})
    return removed, failed
