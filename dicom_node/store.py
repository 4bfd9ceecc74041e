"""The durable file store for received instances.

Bytes are written exactly as received (file meta + dataset, pixel data never decoded) to a temporary
name in the target folder, fsynced, renamed into place and the folder fsynced, so a file under its final
name is always complete and survives a power cut. Paths come from sanitised UIDs only:
`<study>/<series>/<sop>.dcm`, stored relative to the store root.
"""

from __future__ import annotations

import contextlib
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
_TEMP_PREFIX = ".tmp-"


def sanitise_uid(uid: str) -> str:
    """A UID made safe for a file name: anything but digits and dots becomes '_' (never '', '.' or '..')."""
    safe = _UNSAFE.sub("_", uid.strip())[:64]
    if safe in ("", ".", ".."):
        safe = "_" * max(1, len(safe))
    return safe


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
