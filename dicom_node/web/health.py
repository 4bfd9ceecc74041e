"""`/healthz`: can the node take and process studies right now?

One entry per part, each with `ok` and what was seen: the receiver listening, the database writable (a
write lock taken and released within `PROBE_SECONDS` on a fresh connection, so a pooled connection to a
file that is gone or locked does not hide the problem), the scheduler running (study completion), a
worker (the local worker process alive, or workers elsewhere), free disk above `storage.min_free_mb`.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from dicom_node.config import Config
from dicom_node.runtime.safe_text import clean

PROBE_SECONDS = 2.0


@dataclass(frozen=True)
class NodeParts:
    """What health reads from the running node; callables so each check sees the present state."""

    config: Callable[[], Config]
    receiver_port: Callable[[], int | None]
    scheduler_running: Callable[[], bool]
    worker_alive: Callable[[], bool | None]  # None: no local worker (workers run elsewhere)


def check(parts: NodeParts) -> tuple[bool, dict[str, Any]]:
    """(healthy, the JSON document)."""
    config = parts.config()
    port = parts.receiver_port()
    checks: dict[str, dict[str, Any]] = {
        "receiver": {"ok": port is not None, "port": port, "ae_title": config.node.ae_title},
        "database": database(config.database_url),
        "scheduler": {"ok": parts.scheduler_running()},
        "worker": _worker(parts.worker_alive()),
        "disk": disk(config),
    }
    healthy = all(c["ok"] for c in checks.values())
    return healthy, {"status": "ok" if healthy else "unavailable", **checks}


def _worker(alive: bool | None) -> dict[str, Any]:
    if alive is None:
        return {"ok": True, "local": False, "detail": "no local worker: workers run elsewhere"}
    return {"ok": alive, "local": True, "detail": "local worker running" if alive else "local worker not running"}


def database(url: str) -> dict[str, Any]:
    """Take the database's write lock on a new connection and give it back at once."""
    try:
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[1]
            connection = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=PROBE_SECONDS)
            try:
                connection.isolation_level = None
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("ROLLBACK")
            finally:
                connection.close()
        else:
            engine = create_engine(url, connect_args={"connect_timeout": int(PROBE_SECONDS)}, poolclass=None)
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            finally:
                engine.dispose()
    except (sqlite3.Error, SQLAlchemyError, OSError) as exc:
        return {"ok": False, "detail": clean(f"{type(exc).__name__}: {exc}", 300)}
    return {"ok": True}


def disk(config: Config) -> dict[str, Any]:
    storage = config.storage
    try:
        free_mb = shutil.disk_usage(storage.path).free / (1024 * 1024)
    except OSError as exc:
        return {"ok": False, "detail": clean(exc, 300), "min_free_mb": storage.min_free_mb}
    ok = free_mb >= storage.min_free_mb
    out: dict[str, Any] = {"ok": ok, "free_mb": round(free_mb), "min_free_mb": storage.min_free_mb}
    if not ok:
        out["detail"] = "free disk under storage.min_free_mb: new associations are refused"
    return out
