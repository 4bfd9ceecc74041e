"""The study state machine: the only module that writes `studies.state`.

    RECEIVING ──(quiet timer / release; assembler)──▶ COMPLETE ──(last job of the generation; worker)──▶
    ANALYSED ──(every delivery of the generation sent; delivery state)──▶ DELIVERED

A new instance of a COMPLETE, ANALYSED or DELIVERED study re-opens it: back to RECEIVING (the receiver).
Each transition is a small function that applies the guard its caller relies on and runs in the caller's
transaction; the callers decide *when* (the receiver, `studies/assembler.py`, `jobs/worker.py`,
`delivery/state.py`), this module decides *whether* and *what*.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from dicom_node.db.schema import Study, StudyState
from dicom_node.jobs import queue as jobs

REOPENED_FROM = (StudyState.COMPLETE, StudyState.ANALYSED, StudyState.DELIVERED)


def arrival() -> dict[str, StudyState]:
    """The state column of a study row created for its first instance (the receiver's Core insert)."""
    return {"state": StudyState.RECEIVING}


def receiving(state: StudyState, new_instance: bool) -> dict[str, StudyState]:
    """The state change a received instance makes to a study in `state`, as Core update values: a new
    instance re-opens a study that was COMPLETE, ANALYSED or DELIVERED; otherwise nothing."""
    return {"state": StudyState.RECEIVING} if new_instance and state in REOPENED_FROM else {}


def complete(study: Study, now: datetime) -> bool:
    """RECEIVING -> COMPLETE as a new generation; False (nothing changed) when the study is not RECEIVING."""
    if study.state != StudyState.RECEIVING:
        return False
    _new_generation(study, now)
    return True


def reanalysed(study: Study, now: datetime) -> bool:
    """A re-analysis (dashboard request): COMPLETE as a new generation, from any state but RECEIVING
    (a study still receiving is analysed when complete anyway); False then, and nothing changed."""
    if study.state == StudyState.RECEIVING:
        return False
    _new_generation(study, now)
    return True


def _new_generation(study: Study, now: datetime) -> None:
    study.state = StudyState.COMPLETE
    study.generation += 1
    study.completed_at = now


def analysed(session: Session, study: Study, generation: int) -> bool:
    """-> ANALYSED once no job of the current generation is open; never while RECEIVING (new instances
    arrived, a new generation will follow) nor for a stale generation. True when the state changed."""
    if (
        generation != study.generation
        or study.state == StudyState.RECEIVING
        or jobs.open_jobs(session, study.id, study.generation) != 0
    ):
        return False
    study.state = StudyState.ANALYSED
    session.flush()
    return True


def delivered(study: Study) -> bool:
    """ANALYSED -> DELIVERED (the caller has checked that every delivery of the generation is sent)."""
    if study.state != StudyState.ANALYSED:
        return False
    study.state = StudyState.DELIVERED
    return True
