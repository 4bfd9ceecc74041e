"""Claiming rows before sending them, so that two processes on one database never send the same one.

Deliveries and notifications (`db.schema.Claimed`) are sent by every `serve` process that shares the
database. Before sending, a process claims due rows: `claimed_by` = its id, `lease_until` = now + lease.
A row is free when it has no lease or its lease has run out (the claimant died or hung), so a dead
process's rows are taken over once their lease expires. Recording the outcome (`settle`) applies only
while the caller still holds the claim.

The claim runs in `Database.write()`: on SQLite that transaction holds the write lock (`BEGIN IMMEDIATE`),
so claims never interleave; on PostgreSQL the candidates are selected `FOR UPDATE SKIP LOCKED`, so
concurrent claimants skip each other's rows instead of waiting for them, and a row another claimant
committed meanwhile is re-checked against the lease condition before it is locked.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, inspect, or_, select, update
from sqlalchemy.orm import Session

from dicom_node.db.schema import Claimed

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Claimed)


def _primary_key(table: type[Claimed]) -> Any:
    return inspect(table).primary_key[0]


def is_free(table: type[Claimed], now: datetime) -> ColumnElement[bool]:
    """The SQL condition "nobody holds this row now"."""
    return or_(table.lease_until.is_(None), table.lease_until < now)


def claim(
    session: Session,
    table: type[R],
    conditions: Sequence[ColumnElement[bool]],
    order_by: Sequence[Any],
    owner: str,
    lease_seconds: float,
    now: datetime,
    limit: int,
) -> list[int]:
    """Claim up to `limit` free rows of `table` meeting `conditions`, in `order_by` order, for `owner`.

    Runs in the caller's write transaction. Returns the ids claimed (in order)."""
    ident = _primary_key(table)
    candidates = (
        select(ident)
        .where(*conditions, is_free(table, now))
        .order_by(*order_by)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = [int(i) for i in session.scalars(candidates)]
    if ids:
        session.execute(
            update(table)
            .where(ident.in_(ids))
            .values(claimed_by=owner, lease_until=now + timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        )
    return ids


def renew(session: Session, table: type[Claimed], ids: Collection[int], owner: str, until: datetime) -> set[int]:
    """Extend the lease of those of `ids` that `owner` still holds; returns their ids."""
    return _set_held(session, table, ids, owner, {"lease_until": until})


def unclaim(session: Session, table: type[Claimed], ids: Collection[int], owner: str) -> set[int]:
    """Give back those of `ids` that `owner` holds, untouched otherwise; returns their ids."""
    return _set_held(session, table, ids, owner, {"claimed_by": None, "lease_until": None})


def _set_held(
    session: Session, table: type[Claimed], ids: Collection[int], owner: str, values: dict[str, Any]
) -> set[int]:
    if not ids:
        return set()
    ident = _primary_key(table)
    changed = session.scalars(
        update(table)
        .where(ident.in_(list(ids)), table.claimed_by == owner)
        .values(**values)
        .returning(ident)
        .execution_options(synchronize_session=False)
    )
    return {int(i) for i in changed}


def settle(row: Claimed, owner: str, what: str, row_id: int) -> bool:
    """Before recording an outcome on `row`: True, with the claim cleared, when `owner` still holds it
    (nobody took it over after its lease ran out); otherwise False and a warning naming `what`."""
    if row.claimed_by != owner:
        log.warning(
            f"{what} outcome not recorded: the claim is no longer ours",
            extra={f"{what}_id": row_id, "owner": owner, "claimed_by": row.claimed_by or ""},
        )
        return False
    release(row)
    return True


def release(row: Claimed) -> None:
    """Clear the claim (the outcome is recorded in the same transaction, or the row starts over)."""
    row.claimed_by = None
    row.lease_until = None
