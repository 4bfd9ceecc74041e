"""The durable file store for received instances.

Bytes are written exactly as received (file meta + dataset, pixel data never decoded) to a temporary
name in the target folder, fsynced, renamed into place and the folder fsynced, so a file under its final
name is always complete and survives a power cut. Paths come from sanitised UIDs only:
`<study>/<series>/<sop>.dcm`, stored relative to the store root. A conformant UID (digits and dots, at
most 64 characters) is its own file name; any other UID string gets its sanitised form plus a hash of the
raw string, so two UIDs never share a name (real senders do send letters, hex and over-long UIDs).
Temporary files a killed process left behind are removed when the store opens (`sweep_temporaries`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

from dicom_node.config import StorageConfig
from dicom_node.errors import StoreError

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^\d.]")
_CONFORMANT = re.compile(r"[\d.]{1,64}")
_TEMP_PREFIX = ".tmp-"
_HASH_CHARS = 12  # 48 bits of sha256: a collision needs ~16 million non-conformant UIDs sanitising alike


def sanitise_uid(uid: str) -> str:
    """A file name for a UID, unique for any UID string and safe (no '/', never '', '.' or '..').

    A conformant UID (digits and dots, 1-64 characters) is its own name, as before. Any other string
    becomes its first 64 characters with everything but digits and dots turned into '_', then '-' and a
    short hash of the whole raw string: '1.2.abc' and '1.2.abd' both sanitise to '1.2.___' but keep
    different names. The '-' keeps hashed names apart from every conformant one.
    """
    if _CONFORMANT.fullmatch(uid) and uid not in (".", ".."):
        return uid
    safe = _UNSAFE.sub("_", uid.strip())[:64]
    digest = hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    return f"{safe}-{digest}"


def instance_relpath(study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
    """The store-relative path of an instance, built from its sanitised UIDs."""
    return f"{sanitise_uid(study_uid)}/{sanitise_uid(series_uid)}/{sanitise_uid(sop_instance_uid)}.dcm"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(target: Path, data: bytes) -> None:
    """Write `data` to `target` atomically and durably: temp name, fsync, rename, fsync the folder.

    Raises OSError; on failure the temporary file is removed and `target` is untouched.
    """
    tmp = target.parent / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(target.parent)


def sweep_temporaries(root: Path) -> int:
    """Remove the temporary files (`write_durable`'s `.tmp-*`) left under `root` by a killed writer.

    Call it only where no writer is running under `root` (at start-up). Returns how many were removed.
    """
    removed = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(_TEMP_PREFIX):
                _unlink_quietly(Path(folder) / name)
                removed += 1
    return removed


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove file", extra={"path": str(path), "error": str(exc)})


def make_dirs_durable(folder: Path) -> None:
    """Create `folder` and any missing parents, fsyncing each parent so the new entries survive a crash."""
    missing: list[Path] = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        fsync_dir(d.parent)


class InstanceStore:
    """Received instances on disk under `storage.path`; unparseable bytes under `storage.quarantine`."""

    def __init__(self, storage: StorageConfig) -> None:
        self.root = storage.path
        self.quarantine_dir = storage.quarantine
        self.min_free_mb = storage.min_free_mb
        self._known_dirs: set[Path] = set()
        self._lock = threading.Lock()
        make_dirs_durable(self.root)

    def path(self, relpath: str) -> Path:
        return self.root / relpath

    def sweep_temporaries(self) -> int:
        """Remove temporaries a killed receiver left in the store and quarantine; before receiving starts."""
        removed = sum(sweep_temporaries(folder) for folder in (self.root, self.quarantine_dir) if folder.is_dir())
        if removed:
            log.info("removed temporary files left by a previous run", extra={"count": removed})
        return removed

    def free_mb(self) -> float:
        return shutil.disk_usage(self.root).free / (1024 * 1024)

    def has_room(self) -> bool:
        """True while free disk is at or above `storage.min_free_mb`."""
        return self.min_free_mb <= 0 or self.free_mb() >= self.min_free_mb

    def exists(self, relpath: str) -> bool:
        return self.path(relpath).is_file()

    def write(self, relpath: str, data: bytes) -> Path:
        """Durably write an instance's bytes under `relpath`. Raises StoreError (the peer gets 0xA700)."""
        target = self.path(relpath)
        try:
            self._ensure_dir(target.parent)
            try:
                write_durable(target, data)
            except FileNotFoundError:
                # the folder was removed behind our back (retention): create it again, once
                self._known_dirs.discard(target.parent)
                self._ensure_dir(target.parent)
                write_durable(target, data)
        except OSError as exc:
            raise StoreError(f"cannot write {relpath}: {exc}") from exc
        return target

    def remove(self, relpath: str) -> None:
        """Remove a stored instance (after a failed database commit, or a moved duplicate)."""
        target = self.path(relpath)
        _unlink_quietly(target)
        with contextlib.suppress(OSError):  # the folder may be gone too; nothing left to make durable
            fsync_dir(target.parent)

    def quarantine(self, data: bytes, reason: str, calling_ae: str = "") -> Path:
        """Keep bytes we could not accept, with the reason beside them. Returns the data file's path."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        name = f"{stamp}-{uuid.uuid4().hex[:12]}"
        try:
            self._ensure_dir(self.quarantine_dir)
            target = self.quarantine_dir / f"{name}.dcm"
            write_durable(target, data)
            note = f"reason: {reason}\ncalling_ae: {calling_ae}\nreceived_at: {stamp}\nsize: {len(data)}\n"
            write_durable(self.quarantine_dir / f"{name}.reason.txt", note.encode("utf-8"))
        except OSError as exc:
            raise StoreError(f"cannot quarantine: {exc}") from exc
        log.warning("quarantined received bytes", extra={"file": target.name, "reason": reason, "calling_ae": calling_ae})
        return target

    def _ensure_dir(self, folder: Path) -> None:
        if folder in self._known_dirs:
            return
        with self._lock:
            make_dirs_durable(folder)
            if len(self._known_dirs) > 10_000:
                self._known_dirs.clear()
            self._known_dirs.add(folder)
