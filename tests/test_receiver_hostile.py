"""Hostile and inconsistent input gets the right DICOM status, one log line, and changes nothing:
a dataset whose SOP Class is not its presentation context's, a deflate bomb, a series or instance UID
reused in another study, and connections that hold association slots without associating; and files
a killed receiver left without a row are indexed at the next start."""

from __future__ import annotations

import logging
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from conftest import wait_for
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE, _config
from receiver_helpers import ct_dataset, ct_series, files_under, make_config
from test_receiver import Running, _echo, _scu_store, _start

from dicom_node.db.engine import Database
from dicom_node.db.schema import Instance, Series
from dicom_node.receiver import ingest, start_receiver


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Running]:
    yield from _start(tmp_path)


def _send_file(port: int, path: Path, syntax: str = ExplicitVRLittleEndian) -> int:
    """Send a file's dataset bytes exactly as written (pynetdicom chunked send), context from its meta."""
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta if syntax != DeflatedExplicitVRLittleEndian \
        else None
    sop_class = meta.MediaStorageSOPClassUID if meta is not None else CTImageStorage
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(sop_class, [syntax])
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()
        _config.STORE_SEND_CHUNKED_DATASET = old


def test_dataset_not_matching_its_presentation_context_is_refused(
    node: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ds = ct_series(1)[0]
    ds.SOPClassUID = MRImageStorage  # the dataset says MR; the file meta (and so the context) says CT
    path = tmp_path / "mismatch.dcm"
    ds.preamble = b"\x00" * 128
    pydicom.dcmwrite(path, ds, enforce_file_format=False)
    assert pydicom.dcmread(path).file_meta.MediaStorageSOPClassUID == CTImageStorage
    with caplog.at_level(logging.WARNING, logger="dicom_node.receiver.scp"):
        assert _send_file(node.port, path) == 0xA900
    assert node.count(Instance) == 0 and files_under(node.config.storage.path) == []
    assert [r for r in caplog.records if "does not match the presentation context" in r.getMessage()]


def _deflate_bomb(path: Path, inflated_bytes: int) -> None:
    """A CT file, deflated transfer syntax, whose pixel data is `inflated_bytes` of zeros (~0.1 % of that
    on disk). Built in streamed chunks so the test itself never holds the inflated size."""
    ds = ct_dataset("1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", 0)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    del ds.PixelData
    head = pydicom.filebase.DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(head, ds)
    element = b"\xe0\x7f\x10\x00OB\x00\x00" + inflated_bytes.to_bytes(4, "little")  # (7FE0,0010) OB
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunk = bytes(8 * 1024 * 1024)
    with path.open("wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fh, ds.file_meta)
        fh.write(deflater.compress(head.getvalue() + element))
        for _ in range(inflated_bytes // len(chunk)):
            fh.write(deflater.compress(chunk))
        fh.write(deflater.compress(bytes(inflated_bytes % len(chunk))))
        fh.write(deflater.flush())


def test_deflate_bomb_is_refused_without_inflating_it(
    node: Running, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "MAX_INFLATED_BYTES", 64 * 1024 * 1024)  # the same code path, a smaller limit
    path = tmp_path / "bomb.dcm"
    _deflate_bomb(path, 80 * 1024 * 1024)
    assert path.stat().st_size < 1024 * 1024
    with caplog.at_level(logging.WARNING, logger="dicom_node.receiver.scp"):
        assert _send_file(node.port, path, DeflatedExplicitVRLittleEndian) == 0xA700
    assert node.count(Instance) == 0 and files_under(node.config.storage.path) == []
    assert [r for r in caplog.records if "inflates beyond" in r.getMessage()]
    # a deflated dataset under the limit is accepted
    small = tmp_path / "small.dcm"
    _deflate_bomb(small, 1024 * 1024)
    assert _send_file(node.port, small, DeflatedExplicitVRLittleEndian) == 0x0000
    assert node.count(Instance) == 1


def test_a_series_reused_in_another_study_is_refused(node: Running, caplog: pytest.LogCaptureFixture) -> None:
    first = ct_dataset("1.2.826.0.1.3680043.8.498.10", "1.2.826.0.1.3680043.8.498.11", 0)
    other = ct_dataset("1.2.826.0.1.3680043.8.498.20", "1.2.826.0.1.3680043.8.498.11", 1)  # same series UID
    moved = ct_dataset("1.2.826.0.1.3680043.8.498.30", "1.2.826.0.1.3680043.8.498.31", 2)
    moved.SOPInstanceUID = first.SOPInstanceUID  # same instance UID in a third study
    with caplog.at_level(logging.WARNING, logger="dicom_node.receiver.scp"):
        assert _scu_store(node.port, [first, other, moved]) == [0x0000, 0xC212, 0xC212]
    assert node.count(Instance) == 1 and node.count(Series) == 1
    with node.db.read() as s:
        assert s.query(Instance).one().sop_instance_uid == first.SOPInstanceUID
    assert len(files_under(node.config.storage.path)) == 1
    assert len([r for r in caplog.records if "belongs to another study" in r.getMessage()]) == 2


@pytest.fixture
def small_node(tmp_path: Path) -> Iterator[Running]:
    yield from _start(tmp_path, node={"max_associations": 2, "acse_timeout": 1})


def test_idle_connections_time_out_and_slot_exhaustion_is_logged(
    small_node: Running, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dicom_node.receiver.scp"):
        idle = [socket.create_connection(("127.0.0.1", small_node.port)) for _ in range(3)]
        try:
            wait_for(lambda: [r for r in caplog.records if "all association slots in use" in r.getMessage()],
                     timeout=5, msg="slot exhaustion logged")
            time.sleep(1.5)  # past acse_timeout: the idle connections are dropped
            assert _echo(small_node.port, "ECHOSCU").returncode == 0
        finally:
            for s in idle:
                s.close()


def test_start_up_indexes_complete_files_without_a_row(tmp_path: Path) -> None:
    """A receiver killed between fsync and commit leaves a complete file without a row; the next start
    indexes it (or quarantines it when it does not parse)."""
    from dicom_node.receiver.store import instance_relpath

    config = make_config(tmp_path)
    ds = ct_series(1)[0]
    relpath = instance_relpath(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    orphan = config.storage.path / relpath
    orphan.parent.mkdir(parents=True)
    pydicom.dcmwrite(orphan, ds, enforce_file_format=True)
    garbage = config.storage.path / "1.2.3" / "4.5.6" / "7.8.9.dcm"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"\x00" * 200)
    db = Database(config.database_url)
    handle = start_receiver(config, db)
    try:
        with db.read() as s:
            row = s.query(Instance).one()
            assert row.sop_instance_uid == ds.SOPInstanceUID and row.path == relpath
            assert row.calling_ae == "(recovered)"
        assert not garbage.exists()
        assert len(list(config.storage.quarantine.glob("*.reason.txt"))) == 1
    finally:
        handle.shutdown(grace_seconds=1)
        db.dispose()
