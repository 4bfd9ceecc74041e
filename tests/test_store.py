"""The durable file store: safe paths from UIDs, atomic durable writes, quarantine, free-disk watermark."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dicom_node.config import StorageConfig
from dicom_node.errors import StoreError
from dicom_node.receiver.store import InstanceStore, instance_relpath, sanitise_uid


@pytest.fixture
def store(tmp_path: Path) -> InstanceStore:
    return InstanceStore(StorageConfig(path=tmp_path / "store", quarantine=tmp_path / "q", outbox=tmp_path / "o"))


@pytest.mark.parametrize(
    ("uid", "expected"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2"),  # conformant: its own name, as before
        ("../../etc/passwd", ".._..___________-"),
        ("1.2/3\\4 ", "1.2_3_4-"),
        ("", "-"),
        ("..", "..-"),
        (".", ".-"),
    ],
)
def test_sanitise_uid(uid: str, expected: str) -> None:
    safe = sanitise_uid(uid)
    if expected.endswith("-"):  # a non-conformant UID: its sanitised form, '-', a 12-digit hash
        assert safe.startswith(expected) and len(safe) == len(expected) + 12
    else:
        assert safe == expected
    assert "/" not in safe and safe not in ("", ".", "..")


def test_sanitised_names_are_unique_for_any_uid() -> None:
    uids = ["1.2.840.abc", "1.2.840.abd", "1.2.840.ABC", "1.2.840.___", "1.2.840.", "1.2.840", "1.2.840 ",
            "1" * 64 + "a", "1" * 64 + "b", "1" * 65, "a3f9c2e1b4d5", "A3F9C2E1B4D5", ".", "..", "", "_", "__"]
    names = [sanitise_uid(u) for u in uids]
    assert len(set(names)) == len(uids), names
    assert all(len(n) <= 64 + 1 + 12 for n in names)


def test_relpath_stays_inside_the_store(store: InstanceStore) -> None:
    rel = instance_relpath("../..", "1.2/../..", "/etc/passwd")
    target = store.path(rel).resolve()
    assert target.is_relative_to(store.root.resolve())
    assert rel.count("/") == 2 and rel.endswith(".dcm")


def test_write_is_complete_and_leaves_no_temporary(store: InstanceStore) -> None:
    rel = instance_relpath("1.2.3", "1.2.3.4", "1.2.3.4.5")
    data = os.urandom(100_000)
    path = store.write(rel, data)
    assert path == store.root / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm"
    assert path.read_bytes() == data
    assert [p.name for p in path.parent.iterdir()] == ["1.2.3.4.5.dcm"]
    assert store.exists(rel)
    store.write(rel, b"second")  # a duplicate replaces atomically
    assert path.read_bytes() == b"second"


def test_failed_fsync_keeps_the_old_file_and_no_temporary(store: InstanceStore, monkeypatch: pytest.MonkeyPatch) -> None:
    rel = instance_relpath("1.2", "1.2.3", "1.2.3.4")
    store.write(rel, b"original")

    def broken_fsync(_fd: int) -> None:
        raise OSError(5, "I/O error (injected)")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StoreError, match="injected"):
        store.write(rel, b"replacement")
    monkeypatch.undo()
    assert store.path(rel).read_bytes() == b"original"
    assert [p.name for p in store.path(rel).parent.iterdir()] == ["1.2.3.4.dcm"]


def test_write_recreates_a_removed_folder(store: InstanceStore) -> None:
    rel = instance_relpath("9.8", "9.8.7", "9.8.7.1")
    store.write(rel, b"a")
    shutil.rmtree(store.root / "9.8")  # e.g. retention removed the study
    store.write(instance_relpath("9.8", "9.8.7", "9.8.7.2"), b"b")
    assert (store.root / "9.8" / "9.8.7" / "9.8.7.2.dcm").read_bytes() == b"b"


def test_remove(store: InstanceStore) -> None:
    rel = instance_relpath("1", "2", "3")
    store.write(rel, b"x")
    store.remove(rel)
    assert not store.exists(rel)
    store.remove(rel)  # removing twice is harmless


def test_quarantine_keeps_bytes_and_reason(store: InstanceStore) -> None:
    path = store.quarantine(b"not dicom", "cannot parse dataset: test", calling_ae="PACS")
    assert path.read_bytes() == b"not dicom"
    reason = path.with_name(path.stem + ".reason.txt").read_text()
    assert "cannot parse dataset: test" in reason and "calling_ae: PACS" in reason


def test_free_disk_watermark(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free // (1024 * 1024)
    roomy = InstanceStore(StorageConfig(path=tmp_path / "a", quarantine=tmp_path / "q", outbox=tmp_path / "o", min_free_mb=1))
    full = InstanceStore(StorageConfig(path=tmp_path / "b", quarantine=tmp_path / "q", outbox=tmp_path / "o",
                                       min_free_mb=free + 10_000))
    assert roomy.has_room()
    assert not full.has_room()


def test_sweep_removes_only_temporaries(store: InstanceStore) -> None:
    rel = instance_relpath("1.2", "1.2.3", "1.2.3.4")
    kept = store.write(rel, b"complete")
    (kept.parent / ".tmp-0123456789abcdef").write_bytes(b"half")  # what a SIGKILL mid-write leaves
    (store.root / ".tmp-fedcba9876543210").write_bytes(b"half")
    store.quarantine_dir.mkdir(parents=True, exist_ok=True)
    (store.quarantine_dir / ".tmp-00").write_bytes(b"half")
    assert store.sweep_temporaries() == 3
    assert kept.read_bytes() == b"complete"
    left = sorted(p.name for p in [*store.root.rglob("*"), *store.quarantine_dir.rglob("*")] if p.is_file())
    assert left == ["1.2.3.4.dcm"]
    assert store.sweep_temporaries() == 0
