"""Fuzzed input against a running `dicom-node serve`: 1,000 malformed datasets and 100 malformed PDUs.

The node never stops answering, and every study the fuzzed datasets create gets its report at the PACS
(analysed, not analysed, or analysis failed, each with the reason) — whatever its header looks like.
Bounded: a fixed seed, a fixed count, one serve, a deadline.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import time
from pathlib import Path

import pydicom
import pytest
from conftest import wait_for, write_config
from e2e_helpers import SR_CLASS, CollectingSCP, ServeProcess, e2e_sections
from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, _config
from receiver_helpers import ct_dataset
from sqlalchemy import select
from test_receiver import _echo

from dicom_node.config import load_config
from dicom_node.db.engine import Database
from dicom_node.db.schema import Study

pytestmark = [pytest.mark.timeout(900)]

N_DATASETS = 1000
N_PDUS = 100
N_BASE_STUDIES = 12
SEED = 20261201

# Header values real and hostile senders put where they should not (each keeps the dataset parseable).
ODD_VALUES: list[tuple[str, object]] = [
    ("PatientBirthDate", None), ("PatientSex", None), ("PatientName", "A" * 300), ("PatientName", "DOE\nJOHN"),
    ("StudyDate", "not-a-date"), ("StudyTime", "99:99"), ("SpecificCharacterSet", ""),
    ("SpecificCharacterSet", "ISO_IR 999"), ("SeriesDescription", "x" * 500), ("AccessionNumber", "A\r\nB"),
    ("ImageOrientationPatient", ["a", "b"]), ("PixelSpacing", "0"), ("SliceThickness", "-5"),
    ("Rows", 0), ("Columns", 7), ("BitsAllocated", 12), ("PhotometricInterpretation", "PALETTE COLOR"),
    ("Modality", ""), ("Modality", "MR"), ("BodyPartExamined", "\x00\x01"), ("PatientIdentityRemoved", "YES"),
    ("InstanceNumber", "NaN"), ("RescaleSlope", "abc"), ("ImageType", ""),
]


def _base(study: int) -> Dataset:
    root = f"1.2.826.0.1.3680043.8.498.9{study:03d}"
    return ct_dataset(root + ".1", root + ".2", study)


def _body(ds: Dataset) -> bytes:
    buf = pydicom.filebase.DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(buf, ds)
    return buf.getvalue()


def _mutate(rng: random.Random, index: int) -> tuple[Dataset, bytes]:
    """A malformed dataset: an odd header (parseable), or damaged bytes (mostly unparseable)."""
    ds = _base(index % N_BASE_STUDIES)
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.8{index:05d}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = index
    kind = rng.random()
    if kind < 0.5:
        for keyword, value in rng.sample(ODD_VALUES, rng.randint(1, 4)):
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                try:
                    setattr(ds, keyword, value)
                except (ValueError, TypeError):
                    continue
        return ds, _body(ds)
    body = bytearray(_body(ds))
    if kind < 0.7:  # flipped bytes anywhere
        for _ in range(rng.randint(1, 12)):
            body[rng.randrange(len(body))] = rng.randrange(256)
    elif kind < 0.8:  # truncated
        body = body[: rng.randrange(8, len(body))]
    elif kind < 0.9:  # a random element length
        at = rng.randrange(0, max(1, len(body) - 8))
        body[at + 6: at + 8] = struct.pack("<H", rng.randrange(65536))
    else:  # random bytes inserted
        at = rng.randrange(len(body))
        body[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return ds, bytes(body)


def _write(folder: Path, ds: Dataset, body: bytes, index: int) -> Path:
    path = folder / f"{index:05d}.dcm"
    with path.open("wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fh, ds.file_meta)
        fh.write(body)
    return path


def _send_all(port: int, paths: list[Path]) -> dict[int, int]:
    """Send each file's bytes as they are (pynetdicom chunked send); status counts (-1: no answer)."""
    statuses: dict[int, int] = {}
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.dimse_timeout = ae.network_timeout = 30
    pending = list(paths)
    try:
        while pending:
            assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
            assert assoc.is_established, "the node stopped accepting associations"
            try:
                while pending and assoc.is_established:
                    rsp = assoc.send_c_store(pending.pop(0))
                    status = int(rsp.Status) if "Status" in rsp else -1
                    statuses[status] = statuses.get(status, 0) + 1
            finally:
                if assoc.is_established:
                    assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
    return statuses


def _a_associate_rq() -> bytes:
    called, calling = b"DICOMNODE".ljust(16), b"STORESCU".ljust(16)
    body = struct.pack(">HH", 1, 0) + called + calling + bytes(32)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def _malformed_pdus(port: int, rng: random.Random) -> None:
    for i in range(N_PDUS):
        kind = i % 5
        if kind == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 256)))
        elif kind == 1:  # a PDU header announcing far more than follows
            data = struct.pack(">BBI", rng.choice([1, 2, 3, 4, 5, 6, 7, 9, 0xFF]), 0, rng.randrange(2**32))
        elif kind == 2:  # a truncated A-ASSOCIATE-RQ
            rq = _a_associate_rq()
            data = rq[: rng.randrange(1, len(rq))]
        elif kind == 3:  # an A-ASSOCIATE-RQ with no items, then P-DATA before any answer (pipelined)
            data = _a_associate_rq() + struct.pack(">BBI", 0x04, 0, 6) + b"\x00\x00\x00\x02\x01\x03"
        else:  # an A-ASSOCIATE-RQ whose item lengths lie
            rq = bytearray(_a_associate_rq() + b"\x10\x00\xff\xff" + b"1.2.840.10008.3.1.1.1")
            data = bytes(rq)
        # the node may reset a hostile connection at once: that is fine (connecting must still work)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, contextlib.suppress(OSError):
            sock.sendall(data)
            sock.settimeout(0.2)
            sock.recv(1024)


def test_fuzzed_datasets_and_pdus(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    folder = tmp_path / "fuzz"
    folder.mkdir()
    paths = [_write(folder, *_mutate(rng, i), i) for i in range(N_DATASETS)]
    with CollectingSCP(tmp_path / "pacs") as pacs:
        sections = e2e_sections(pacs.port, assembly={"quiet_seconds": 5, "complete_on_release": True,
                                                     "check_interval_seconds": 0.5}, light=True)
        config = load_config(write_config(tmp_path, **sections))
        with ServeProcess(config.source, config.node.port, tmp_path / "serve.log") as serve:  # type: ignore[arg-type]
            statuses = _send_all(config.node.port, paths)
            _malformed_pdus(config.node.port, rng)
            # connections the garbage left half-open are dropped within the ACSE timeout (10 s)
            started = time.monotonic()
            wait_for(lambda: _echo(config.node.port, "ECHOSCU").returncode == 0, timeout=20, interval=0.5,
                     msg="the node answers C-ECHO again after the malformed PDUs")
            print(f"C-ECHO answered {time.monotonic() - started:.1f} s after the malformed PDUs")
            assert sum(statuses.values()) == N_DATASETS
            assert statuses.get(0, 0) > 100 and sum(n for s, n in statuses.items() if s != 0) > 50, statuses
            assert -1 not in statuses, statuses
            db = Database(config.database_url)
            with db.read() as s:
                studies = set(s.scalars(select(Study.study_uid)))
            assert studies

            def unanswered() -> set[str]:
                got = {str(ds.StudyInstanceUID) for ds in pacs.received() if ds.SOPClassUID == SR_CLASS}
                return studies - got

            try:
                wait_for(lambda: not unanswered(), timeout=600, interval=1.0,
                         msg="a report at the PACS for every fuzzed study")
            finally:
                db.dispose()
            assert serve.process is not None and serve.process.poll() is None
        log = (tmp_path / "serve.log").read_text(errors="replace")
        assert "DOE" not in log and "JOHN" not in log  # patient names never logged above DEBUG
        assert "not-a-date" not in log  # nor header values pydicom complains about
        assert "Traceback" not in log  # hostile input is a log line, not a traceback
