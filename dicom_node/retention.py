"""Retention: delete received pixel data of delivered studies after `retention.delete_after_days`.

Only the files go; the database keeps every row (the audit trail of what was received, analysed and
delivered), and the study records when its files were deleted. A study that is not yet delivered, or
that received an instance since, keeps its files.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

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
                paths = session.scalars(select(Instance.path).where(Instance.study_id == study_id)).all()
                removed = 0
                for rel in paths:
                    path = self.config.storage.path / rel
                    if path.exists():
                        path.unlink()
                        removed += 1
                study.pixels_deleted_at = now
                purged += 1
            log.info("retention: deleted received files", extra={"study_uid": study.study_uid, "files": removed})
        return purged
