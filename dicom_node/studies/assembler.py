"""Study assembly: decide when a study being received is complete.

A RECEIVING study becomes COMPLETE when it has been quiet for `assembly.quiet_seconds`, or (with
`assembly.complete_on_release`) when the association that brought its last instance was released at least
`assembly.release_grace_seconds` ago and no other open association has contributed to it. The grace
period is for senders that open one association per series: the next series' association brings an
instance within it, becomes the study's last association, and keeps the study open; the quiet timer stays
the fallback (an aborted association, a sender that pauses longer). With a grace of 0 the study completes
in the release callback itself (`association_released`); with one, the release also sets a one-shot check
for the moment the grace period ends, so the study completes then rather than at the next periodic check
(up to `check_interval_seconds` later). Both live in the database (association
`ended_at`, study `last_association_id`), so a restart loses no pending completion. Each completion increments the study's `generation` and
calls `on_complete(session, study)` inside the same transaction, so whatever it queues is committed
together with the state change or not at all.

`in_grace_period` names the studies waiting out a grace period, so that a worker with nothing else to do can
analyse them ahead of completion (`jobs/early.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import Select, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, aliased

from dicom_node.config import Config
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Association, Instance, Study, StudyState
from dicom_node.studies import state as study_state

log = logging.getLogger(__name__)

OnComplete = Callable[[Session, Study], None]
JOB_ID = "assembler-check"
GRACE_JOB_PREFIX = "assembler-grace-"
GRACE_MARGIN_SECONDS = 0.05  # the one-shot check runs this long after the grace period, to be past it


def _released_studies(released_by: datetime | None = None) -> Select[int, datetime, int]:
    """(id, last_received_at, generation) of the RECEIVING studies whose last association was released (by
    `released_by`, if given) and to which no open association has sent; the most urgent first (priority,
    then the earliest release). `Assembler.check` completes those released a grace period ago; the
    others wait out their grace period (`in_grace_period`)."""
    sender = aliased(Association)
    open_sender = (
        select(Instance.id)
        .join(sender, sender.id == Instance.association_id)
        .where(Instance.study_id == Study.id, sender.ended_at.is_(None))
        .exists()
    )
    query = (
        select(Study.id, Study.last_received_at, Study.generation)
        .join(Association, Association.id == Study.last_association_id)
        .where(Study.state == StudyState.RECEIVING, Association.released.is_(True),
               Association.ended_at.is_not(None), ~open_sender)
        .order_by(Study.priority.desc(), Association.ended_at, Study.id)
    )
    return query if released_by is None else query.where(Association.ended_at <= released_by)


def in_grace_period(session: Session) -> list[tuple[int, datetime, int]]:
    """(id, last_received_at, generation) of the studies waiting out a grace period, most urgent first
    (`_released_studies`): unless another association adds to them, `Assembler.check` completes them as
    generation + 1 when it ends (a study just past it and not yet checked is among them)."""
    return [(int(row[0]), row[1], int(row[2])) for row in session.execute(_released_studies()).all()]


class Assembler:
    def __init__(self, config: Config, db: Database, on_complete: OnComplete | None = None) -> None:
        self.config = config
        self.db = db
        self.on_complete = on_complete
        self._scheduler: BaseScheduler | None = None

    def check(self, now: datetime | None = None) -> list[str]:
        """Complete every RECEIVING study quiet for `quiet_seconds`, or whose last association was released
        `release_grace_seconds` ago (see the module). Returns their Study Instance UIDs."""
        now = now or utcnow()
        cutoff = now - timedelta(seconds=self.config.assembly.quiet_seconds)
        quiet = select(Study.id).where(Study.state == StudyState.RECEIVING, Study.last_received_at <= cutoff)
        done = self._complete_all(quiet, now, "quiet", lambda s: s.last_received_at <= cutoff)
        assembly = self.config.assembly
        if assembly.complete_on_release and assembly.release_grace_seconds > 0:
            released_by = now - timedelta(seconds=assembly.release_grace_seconds)
            released = _released_studies(released_by).with_only_columns(Study.id)
            done += self._complete_all(released, now, "association released, grace period over",
                                       lambda s: self._released_before(s, released_by))
        return done

    def association_released(self, association_id: str, now: datetime | None = None) -> list[str]:
        """With no grace period, complete at once the studies whose last instance came with this (released)
        association; with one, `check()` completes them once it has passed, run for this release when the
        grace period ends (on the scheduler `start` was given)."""
        assembly = self.config.assembly
        if not assembly.complete_on_release:
            return []
        if assembly.release_grace_seconds > 0:
            self._check_when_grace_ends(association_id, assembly.release_grace_seconds)
            return []
        candidates = select(Study.id).where(
            Study.state == StudyState.RECEIVING, Study.last_association_id == association_id
        )
        return self._complete_all(
            candidates,
            now or utcnow(),
            "association released",
            lambda s: s.last_association_id == association_id and not self._other_open_senders(s, association_id),
        )

    def reanalyse(self, study_uid: str, now: datetime | None = None) -> int | None:
        """Analyse a received study again (a dashboard request): a new generation, its jobs queued in the
        same transaction. Returns the new generation; None when the study is unknown or still receiving
        (it will be analysed when complete anyway)."""
        now = now or utcnow()
        with self.db.write() as session:
            study = session.scalars(select(Study).where(Study.study_uid == study_uid).with_for_update()).one_or_none()
            if study is None or not study_state.reanalysed(study, now):
                return None
            self._queue_jobs(session, study)
            generation = study.generation
        log.info("study queued for re-analysis", extra={"study_uid": study_uid, "generation": generation})
        return generation

    def start(self, scheduler: BaseScheduler) -> None:
        """Run `check()` every `assembly.check_interval_seconds` on the given scheduler, and once more at the
        end of each release's grace period."""
        self._scheduler = scheduler
        scheduler.add_job(
            self.check,
            "interval",
            seconds=self.config.assembly.check_interval_seconds,
            id=JOB_ID,
            max_instances=1,
            coalesce=True,
            replace_existing=True,
        )

    def _check_when_grace_ends(self, association_id: str, grace_seconds: float) -> None:
        """A one-shot `check()` just after this release's grace period (the association's `ended_at` is
        already recorded, so the check finds the study due). A missed one costs only latency: the periodic
        check completes the study anyway."""
        scheduler = self._scheduler
        if scheduler is None or not scheduler.running:
            return
        at = datetime.now(UTC) + timedelta(seconds=grace_seconds + GRACE_MARGIN_SECONDS)
        try:
            scheduler.add_job(self.check, "date", run_date=at, id=GRACE_JOB_PREFIX + association_id,
                              replace_existing=True, misfire_grace_time=None)
        except Exception as exc:  # noqa: BLE001 - a scheduler shutting down: the periodic check still runs
            log.debug("no grace-period check scheduled", extra={"error": f"{type(exc).__name__}: {exc}"})

    def _complete_all(
        self, candidates: Select[Any], now: datetime, why: str, still_due: Callable[[Study], bool]
    ) -> list[str]:
        try:
            with self.db.read() as session:
                study_ids = session.scalars(candidates).all()
        except SQLAlchemyError as exc:
            log.error("assembler cannot read studies", extra={"error": str(exc), "trigger": why})
            return []
        done: list[str] = []
        for study_id in study_ids:
            uid = self._complete_one(study_id, now, why, still_due)
            if uid:
                done.append(uid)
        return done

    def _released_before(self, study: Study, released_by: datetime) -> bool:
        """The association that brought the study's last instance was released by `released_by`, and no
        other association that sent to the study is still open."""
        session = Session.object_session(study)
        assert session is not None
        assoc = session.get(Association, study.last_association_id) if study.last_association_id else None
        if assoc is None or not assoc.released or assoc.ended_at is None or assoc.ended_at > released_by:
            return False
        return not self._other_open_senders(study, assoc.id)

    def _other_open_senders(self, study: Study, association_id: str) -> bool:
        """True if another association that is still open has sent instances of this study."""
        session = Session.object_session(study)
        assert session is not None
        hit = session.execute(
            select(Instance.id)
            .join(Association, Association.id == Instance.association_id)
            .where(
                Instance.study_id == study.id,
                Association.ended_at.is_(None),
                Association.id != association_id,
            )
            .limit(1)
        ).first()
        return hit is not None

    def _complete_one(
        self, study_id: int, now: datetime, why: str, still_due: Callable[[Study], bool]
    ) -> str | None:
        try:
            with self.db.write() as session:
                study = session.scalars(select(Study).where(Study.id == study_id).with_for_update()).one_or_none()
                if study is None or study.state != StudyState.RECEIVING or not still_due(study):
                    return None
                study_state.complete(study, now)
                self._queue_jobs(session, study)
                uid, generation = study.study_uid, study.generation
        except Exception as exc:  # noqa: BLE001 - one study's failure (DB or callback) must not stop the others
            log.error(
                "cannot complete study", extra={"study_id": study_id, "error": f"{type(exc).__name__}: {exc}"}
            )
            return None
        log.info("study complete", extra={"study_uid": uid, "generation": generation, "trigger": why})
        return uid

    def _queue_jobs(self, session: Session, study: Study) -> None:
        """The study is COMPLETE as a new generation (`studies/state.py`): the jobs it needs, in `session`."""
        session.flush()
        if self.on_complete is not None:
            self.on_complete(session, study)
