"""One retry policy, as data, for everything the node retries: analysis jobs (`[worker.retry]`), deliveries
(`[delivery.retry]`) and alerts (`[notifications.retry]`).

After the n-th failed try the next one waits `initial_delay_seconds * factor**(n-1)`, capped at
`max_delay_seconds`. A try fails for good when it is permanent (a refusal retrying cannot change), when
`max_attempts` tries have failed (0: no limit) or when the row is older than `max_age_seconds` (0: no
limit). There is no jitter: a retry is due at the time its row records, and several processes claim due
rows under a lease, so they do not retry in lock step.

A retried row (a delivery, a notification, a report-monitor alert) has `attempts`, `last_error`,
`created_at` and `next_attempt_at`; its owner module sets the state from what `count_failure` decides.
Jobs keep their own state machine (`jobs/queue.py`) and use `RetryPolicy.delay` and `max_attempts`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Annotated, Protocol, TypeVar

from pydantic import AfterValidator

from dicom_node.validation import Frozen, NonNegativeInt, NonNegativeNumber, Number, PositiveNumber


def _factor(value: float) -> float:
    if value < 1:
        raise ValueError(f"must be >= 1 (1: the same delay every time), got {value:g}")
    return value


class RetryPolicy(Frozen):
    """How often and how long to retry. The defaults are the deliveries' (`[delivery.retry]`)."""

    max_attempts: NonNegativeInt = 0  # failed tries before failing for good; 0: no limit
    initial_delay_seconds: PositiveNumber = 2.0  # the wait after the first failed try
    factor: Annotated[Number, AfterValidator(_factor)] = 2.0  # each further wait is this many times longer...
    max_delay_seconds: PositiveNumber = 300.0  # ...up to this
    max_age_seconds: NonNegativeNumber = 72 * 3600.0  # fail for good once the row is this old; 0: no limit

    def delay(self, failures: int) -> timedelta:
        """The wait before the next try after `failures` (>= 1) failed ones."""
        seconds = self.initial_delay_seconds * self.factor ** min(max(0, failures - 1), 64)
        return timedelta(seconds=min(seconds, self.max_delay_seconds))

    def gives_up(self, failures: int, age: timedelta) -> bool:
        """True when, after `failures` failed tries on a row this old, it fails for good."""
        if self.max_attempts and failures >= self.max_attempts:
            return True
        return bool(self.max_age_seconds) and age >= timedelta(seconds=self.max_age_seconds)


class Retried(Protocol):
    """The retry bookkeeping of a row; its `state` column belongs to the row's owner (the state module of
    deliveries or notifications), which sets it beside these calls."""

    attempts: int
    last_error: str
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None


R = TypeVar("R", bound=Retried)


def count_success(row: Retried, now: datetime) -> None:
    """Count the try that delivered `row` (its owner marks it sent)."""
    row.attempts += 1
    row.sent_at = now
    row.last_error = ""


def count_failure(row: Retried, policy: RetryPolicy, error: str, now: datetime, permanent: bool = False) -> bool:
    """Count a failed try on `row`. True when it has failed for good (permanent, or the policy gives up);
    otherwise its next try is scheduled after the policy's delay."""
    row.attempts += 1
    row.last_error = error
    if permanent or policy.gives_up(row.attempts, now - row.created_at):
        return True
    row.next_attempt_at = now + policy.delay(row.attempts)
    return False


def start_over(row: Retried, now: datetime) -> None:
    """A fresh `max_age` window from now, due at once (`dicom-node retry`, new content)."""
    row.attempts = 0
    row.next_attempt_at = now
    row.created_at = now
    row.last_error = ""


def start_all_over(rows: Iterable[R], now: datetime, reopen: Callable[[R], None]) -> int:
    """For each of `rows`: `reopen` it (the owner sets its state back to pending), then `start_over`;
    returns how many."""
    count = 0
    for row in rows:
        reopen(row)
        start_over(row, now)
        count += 1
    return count
