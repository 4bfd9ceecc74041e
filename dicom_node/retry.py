"""The retry policy shared by deliveries and notifications: exponential backoff, a maximum age, and
permanent failures that end at once.

A row that is retried has `attempts`, `last_error`, `created_at` and `next_attempt_at`; its owner module
(`delivery/state.py`, `notify/state.py`) sets the state from what `count_failure` decides.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

from dicom_node.config import DeliveryConfig


class Retried(Protocol):
    state: Any
    attempts: int
    last_error: str
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None


def backoff(settings: DeliveryConfig, attempts: int) -> timedelta:
    """Wait before the next try after `attempts` failed ones: initial * 2**attempts, capped."""
    seconds = settings.initial_backoff_seconds * 2 ** min(attempts, 30)
    return timedelta(seconds=min(seconds, settings.max_backoff_seconds))


def count_success(row: Retried, sent: Any, now: datetime) -> None:
    """The try that delivered `row`: its state becomes `sent`."""
    row.state = sent
    row.attempts += 1
    row.sent_at = now
    row.last_error = ""


def count_failure(
    row: Retried, settings: DeliveryConfig, error: str, now: datetime, permanent: bool = False
) -> bool:
    """Count a failed try on `row`. True when it has failed for good (permanent, or older than `max_age`);
    otherwise its next try is scheduled after the backoff."""
    row.attempts += 1
    row.last_error = error
    if permanent or now - row.created_at >= timedelta(seconds=settings.max_age_seconds):
        return True
    row.next_attempt_at = now + backoff(settings, row.attempts)
    return False


def start_over(row: Retried, now: datetime) -> None:
    """A fresh `max_age` window from now, due at once (`dicom-node retry`, new content)."""
    row.attempts = 0
    row.next_attempt_at = now
    row.created_at = now
    row.last_error = ""


def start_all_over(rows: Iterable[Retried], pending: Any, now: datetime) -> int:
    """`start_over` for each of `rows`, setting its `state` to `pending`; returns how many."""
    count = 0
    for row in rows:
        row.state = pending
        start_over(row, now)
        count += 1
    return count
