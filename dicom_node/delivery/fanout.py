"""Delivery fan-out: one delivery of each recorded output to every configured destination.

The worker calls `fan_out` in the transaction that records a finished job's outputs, so an output and its
deliveries are committed together. Deliveries are keyed by (output, destination): recording the same output
again adds only the destinations it lacks, and an output whose file was rewritten with new content is sent
again everywhere (`state.reset_for_new_content`). The rows' state belongs to `delivery/state.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.db.schema import Delivery
from dicom_node.delivery import state


def fan_out(
    session: Session, output_id: int, destinations: Iterable[str], now: datetime, replaced: bool = False
) -> int:
    """Queue output `output_id` for each of `destinations` it has no delivery to yet; with `replaced` (its
    file now holds new content) its existing deliveries start over first. Returns how many were added."""
    if replaced:
        state.reset_for_new_content(session, output_id, now)
    have = set(session.scalars(select(Delivery.destination).where(Delivery.output_id == output_id)))
    added = 0
    for destination in destinations:
        if destination not in have:
            session.add(state.new(output_id, destination, now))
            added += 1
    session.flush()
    return added
