"""Who holds a row: the id of this process, and whether the process named by such an id is gone.

An id is `host:pid:token`, the token random per process, so a process that reuses a dead one's pid (a
container restarted as pid 1) still has an id of its own. Leases (jobs, deliveries, notifications) record
it as the claimant; associations as the serve process that accepted them.
"""

from __future__ import annotations

import os
import socket
import uuid

_TOKEN = uuid.uuid4().hex[:8]


def process_id() -> str:
    """This process's id, the same for every caller in it."""
    return f"{socket.gethostname()}:{os.getpid()}:{_TOKEN}"


def new_id() -> str:
    """An id of this process that is its own (a worker, a test's second sender in one process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def is_gone(owner: str) -> bool:
    """True only when the process named by `owner` certainly no longer runs: it ran on this host and its pid
    is dead, or its pid is this process's own but the id is not (it belonged to an earlier process). A
    process on another host, or an id that cannot be read, is not known to be gone."""
    host, _, rest = owner.partition(":")
    pid_text, _, _token = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return owner != process_id()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
