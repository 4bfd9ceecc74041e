"""Output files in the outbox: written before the transaction that records them, strays reconciled after.

The worker writes each output (atomically and durably: `store.write_durable`) before it opens the write
transaction that records the rows, so on SQLite the write lock the receiver needs is never held over file
I/O. A file's name is deterministic: `<study>/<sop instance>+<sha256 of the bytes, 16 hex>.dcm`. So

- the same output with the same bytes always has the same name: a re-run finds it written and skips it;
- different bytes for one SOP Instance UID (a re-run whose report changed, or a worker that lost its lease
  while another finished the job) get another name, and never overwrite a file a row names;
- a file is sent only once a row names it. A crash between writing and recording leaves files no row
  names: harmless (never sent), and removed when that output is next recorded (`strays`, after the commit)
  or, when the recording transaction fails, at once (`jobs/worker.py`).

Files the previous release wrote (`<study>/<sop instance>.dcm`) keep their names until replaced.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from dicom_node.errors import TransientError
from dicom_node.receiver.store import make_dirs_durable, sanitise_uid, write_durable

log = logging.getLogger(__name__)

WriteFile = Callable[[Path, bytes], None]  # writes the bytes to the path atomically and durably

_DIGEST_CHARS = 16


class FileGone(TransientError):
    """A file written for a row was removed before the row was recorded (the sender had delivered the same
    bytes everywhere, or another worker's sweep): written again and recorded again."""


def relpath(study_uid: str, sop_instance_uid: str, data: bytes) -> str:
    """The outbox-relative name of an output's file with these bytes."""
    digest = hashlib.sha256(data).hexdigest()[:_DIGEST_CHARS]
    return f"{sanitise_uid(study_uid)}/{sanitise_uid(sop_instance_uid)}+{digest}.dcm"


def write(outbox: Path, rel: str, data: bytes, write_file: WriteFile = write_durable) -> None:
    """Write `data` as `rel` unless it is there already (the name holds the digest of its bytes)."""
    target = outbox / rel
    if target.is_file():
        return
    make_dirs_durable(target.parent)
    write_file(target, data)


def strays(outbox: Path, study_uid: str, sop_instance_uid: str, keep: str) -> list[Path]:
    """The files of one output other than `keep` (the one its row names): earlier content, or files of an
    attempt that crashed or was dropped before it recorded them."""
    stem = sanitise_uid(sop_instance_uid)
    folder = outbox / sanitise_uid(study_uid)
    if not folder.is_dir():
        return []
    # '+' never occurs in a sanitised UID, so another output's name never matches
    return sorted(p for p in folder.iterdir()
                  if (p.name == f"{stem}.dcm" or (p.name.startswith(f"{stem}+") and p.suffix == ".dcm"))
                  and p != outbox / keep)


def remove(paths: Iterable[Path]) -> int:
    """Unlink each path; one that cannot be removed is logged and left for the next reconciliation."""
    removed = 0
    for path in paths:
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("outbox file not removed", extra={"file": path.name, "reason": str(exc)})
    return removed
