"""Deliveries that end: permanent refusals fail at once with the reason, transient failures back off,
a stalled or down destination holds back no other, and outbox files go once every destination has them.

Real peers only: DCMTK storescp restricted to some SOP classes by an association profile, pynetdicom
SCPs that answer with a given status or reject the called AE title, a TCP peer that never answers.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from conftest import dcmtk_env, free_port, wait_for, write_config
from notify_helpers import TcpServer
from orthanc_helpers import STORESCP, StoreSCP, wait_listening
from pydicom.uid import Comprehensive3DSRStorage, generate_uid
from pynetdicom import AE, StoragePresentationContexts, evt
from sqlalchemy import select
from test_sender import STUDY_UID, add_outputs, deliveries, sc_dataset

from dicom_node.config import Config, load_config
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Delivery, DeliveryState, Output
from dicom_node.delivery.sender import Sender

# A storescp association profile that takes Verification and Secondary Capture only (no SR).
PROFILE = """\
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = LittleEndianImplicit
[[PresentationContexts]]
[NoSR]
PresentationContext1 = VerificationSOPClass\\Uncompressed
PresentationContext2 = SecondaryCaptureImageStorage\\Uncompressed
[[Profiles]]
[NoSR]
PresentationContexts = NoSR
"""


def sr_dataset(study_uid: str, sop_uid: str) -> pydicom.Dataset:
    """A small Comprehensive 3D SR header (generated); peers here refuse it before reading its content."""
    ds = sc_dataset(study_uid, sop_uid)
    for keyword in ("ConversionType", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
                    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelData"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = Comprehensive3DSRStorage
    ds.Modality = "SR"
    ds.SeriesInstanceUID = study_uid + ".98"
    return ds


def add_sr_output(db: Database, config: Config, study_uid: str = STUDY_UID) -> str:
    """One more output, an SR, in the study `add_outputs` made, with a pending delivery per destination."""
    uid = generate_uid()
    rel = f"{study_uid}/{uid}.dcm"
    (config.storage.outbox / rel).parent.mkdir(parents=True, exist_ok=True)
    ds = sr_dataset(study_uid, uid)
    ds.save_as(config.storage.outbox / rel, enforce_file_format=True)
    now = utcnow()
    with db.write() as s:
        first = s.scalars(select(Output).order_by(Output.id)).first()
        assert first is not None
        out = Output(study_id=first.study_id, result_id=first.result_id, kind="sr", sop_class_uid=ds.SOPClassUID,
                     sop_instance_uid=uid, series_uid=ds.SeriesInstanceUID, path=rel, created_at=now)
        s.add(out)
        s.flush()
        for dest in config.destinations:
            s.add(Delivery(output_id=out.id, destination=dest.name, next_attempt_at=now, created_at=now))
    return uid


def by_uid(db: Database) -> dict[tuple[str, str], Delivery]:
    with db.read() as s:
        rows = s.execute(select(Output.sop_instance_uid, Delivery).join(Output, Output.id == Delivery.output_id))
        return {(uid, d.destination): d for uid, d in rows}


class RestrictedStoreSCP(StoreSCP):
    """DCMTK storescp taking only Verification and Secondary Capture (association profile `NoSR`)."""

    def start(self) -> RestrictedStoreSCP:
        self.folder.mkdir(parents=True, exist_ok=True)
        cfg = self.folder.parent / "nosr.cfg"
        cfg.write_text(PROFILE)
        self.process = subprocess.Popen(
            [str(STORESCP), "--aetitle", self.aet, "--config-file", str(cfg), "NoSR",
             "--output-directory", str(self.folder), str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dcmtk_env(),
        )
        wait_listening(self.port)
        return self


class StatusSCP:
    """A pynetdicom storage SCP answering each SOP instance with the status given for it (else Success)."""

    def __init__(self, port: int, statuses: dict[str, int], ae_title: str = "PACS") -> None:
        self.statuses = statuses
        self.received: list[str] = []
        ae = AE(ae_title=ae_title)
        ae.supported_contexts = StoragePresentationContexts
        ae.require_called_aet = True  # another called AE title: A-ASSOCIATE-RJ rejected-permanent
        self.server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def _store(self, event: evt.Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        self.received.append(uid)
        return self.statuses.get(uid, 0x0000)

    def close(self) -> None:
        self.server.shutdown()


class SilentPeer(TcpServer):
    """Accepts TCP connections and never says a word (a hung PACS); closes them all on `close()`."""

    def __init__(self) -> None:
        self.conns: list[socket.socket] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        self.conns.append(conn)

    def close(self) -> None:
        super().close()
        for conn in self.conns:
            conn.close()


def make_config(tmp_path: Path, *dests: tuple[str, str, int], **node: float) -> Config:
    return load_config(
        write_config(
            tmp_path,
            node={"acse_timeout": 30.0, **node},
            destinations=[{"name": n, "ae_title": aet, "host": "127.0.0.1", "port": p} for n, aet, p in dests],
            delivery={"initial_backoff_seconds": 0.3, "max_backoff_seconds": 1.0, "poll_seconds": 0.05},
        )
    )


@pytest.fixture
def db_for() -> Iterator[list[Database]]:
    opened: list[Database] = []
    yield opened
    for db in opened:
        db.dispose()


def open_db(config: Config, opened: list[Database]) -> Database:
    db = Database(config.database_url)
    opened.append(db)
    return db


def test_sop_class_the_destination_does_not_take_fails_at_once(tmp_path: Path, db_for: list[Database]) -> None:
    port = free_port()
    config = make_config(tmp_path, ("pacs", "DEMO-PACS", port))
    db = open_db(config, db_for)
    (sc_uid,) = add_outputs(db, config, 1)
    sr_uid = add_sr_output(db, config)
    with RestrictedStoreSCP(tmp_path / "scp", port=port) as scp:
        assert Sender(config, db).run_once() == 1
        assert {pydicom.dcmread(p).SOPInstanceUID for p in scp.received()} == {sc_uid}
        rows = by_uid(db)
        assert rows[(sc_uid, "pacs")].state == DeliveryState.SENT
        sr = rows[(sr_uid, "pacs")]
        assert sr.state == DeliveryState.FAILED and sr.attempts == 1, "refused: no retry for 72 h"
        assert "Comprehensive 3D SR" in sr.last_error and "refused" in sr.last_error

        # an association for the SR alone: storescp accepts no proposed context at all
        sr_only = add_sr_output(db, config)
        assert Sender(config, db).run_once() == 0
        alone = by_uid(db)[(sr_only, "pacs")]
        assert alone.state == DeliveryState.FAILED and alone.attempts == 1
        assert "accepts none of the proposed SOP classes" in alone.last_error
        assert "Comprehensive 3D SR" in alone.last_error
    assert (config.storage.outbox / f"{STUDY_UID}/{sr_uid}.dcm").is_file(), "a failed delivery keeps its file"


def test_refusal_statuses_fail_at_once_transient_ones_back_off(tmp_path: Path, db_for: list[Database]) -> None:
    port = free_port()
    config = make_config(tmp_path, ("pacs", "PACS", port))
    db = open_db(config, db_for)
    ok, unsupported, mismatch, busy = add_outputs(db, config, 4)
    scp = StatusSCP(port, {unsupported: 0x0122, mismatch: 0xA900, busy: 0xA700})
    before = utcnow()
    try:
        assert Sender(config, db).run_once() == 1
    finally:
        scp.close()
    rows = by_uid(db)
    assert rows[(ok, "pacs")].state == DeliveryState.SENT
    for uid, code in ((unsupported, "0x0122"), (mismatch, "0xA900")):
        row = rows[(uid, "pacs")]
        assert row.state == DeliveryState.FAILED and row.attempts == 1
        assert code in row.last_error and "refused" in row.last_error
    retry = rows[(busy, "pacs")]
    assert retry.state == DeliveryState.PENDING and "0xA700" in retry.last_error
    assert (retry.next_attempt_at - before).total_seconds() >= 0.3, "out of resources: backed off initial 0.3 s"


def test_association_rejected_for_good_fails_at_once(tmp_path: Path, db_for: list[Database]) -> None:
    port = free_port()
    config = make_config(tmp_path, ("pacs", "NOT-THE-PACS", port))
    db = open_db(config, db_for)
    add_outputs(db, config, 2)
    scp = StatusSCP(port, {}, ae_title="PACS")
    try:
        assert Sender(config, db).run_once() == 0
    finally:
        scp.close()
    rows = deliveries(db)
    assert all(d.state == DeliveryState.FAILED and d.attempts == 1 for d in rows)
    assert all("rejected the association for good" in d.last_error for d in rows)
    assert all("Called AE title not recognised" in d.last_error for d in rows), rows[0].last_error
    assert scp.received == []


def test_stalled_and_down_destinations_hold_back_no_other(tmp_path: Path, db_for: list[Database]) -> None:
    silent, down, up = SilentPeer(), free_port(), free_port()
    config = make_config(
        tmp_path, ("hung", "HUNG", silent.port), ("down", "DOWN", down), ("pacs", "DEMO-PACS", up), acse_timeout=30.0
    )
    db = open_db(config, db_for)
    uids = add_outputs(db, config, 2)
    sender = Sender(config, db)
    try:
        with StoreSCP(tmp_path / "scp", port=up) as scp:
            sender.start()
            start = time.monotonic()
            wait_for(
                lambda: all(by_uid(db)[(u, "pacs")].state == DeliveryState.SENT for u in uids),
                timeout=8, msg="the PACS gets its objects while another destination hangs",
            )
            assert time.monotonic() - start < 8
            assert {pydicom.dcmread(p).SOPInstanceUID for p in scp.received()} == set(uids)
            wait_for(lambda: all(by_uid(db)[(u, "down")].attempts >= 1 for u in uids), timeout=5, msg="down tried")
            rows = by_uid(db)
            assert all(rows[(u, "hung")].state == DeliveryState.PENDING for u in uids)
            assert all(rows[(u, "hung")].attempts == 0 for u in uids), "still waiting for the hung peer"
            assert all(rows[(u, "down")].state == DeliveryState.PENDING for u in uids)
            assert all("could not connect" in rows[(u, "down")].last_error for u in uids)
    finally:
        silent.close()  # ends the hung association so the sender's thread stops promptly
        sender.stop()


def test_outbox_file_removed_once_every_destination_has_it(tmp_path: Path, db_for: list[Database]) -> None:
    pacs_port, archive_port = free_port(), free_port()
    config = make_config(tmp_path, ("pacs", "DEMO-PACS", pacs_port), ("archive", "ARCHIVE", archive_port))
    db = open_db(config, db_for)
    uids = add_outputs(db, config, 2)
    files = [config.storage.outbox / STUDY_UID / f"{u}.dcm" for u in uids]
    sender = Sender(config, db)
    with StoreSCP(tmp_path / "pacs", port=pacs_port):
        assert sender.run_once() == 2
    assert all(f.is_file() for f in files), "the archive does not have them yet"
    with StoreSCP(tmp_path / "archive", aet="ARCHIVE", port=archive_port):
        wait_for(lambda: sender.run_once() or all(d.state == DeliveryState.SENT for d in deliveries(db)),
                 timeout=5, msg="archive delivery after backoff")
        wait_for(lambda: all(d.state == DeliveryState.SENT for d in deliveries(db)), timeout=5, msg="all sent")
    assert not any(f.exists() for f in files)
    assert not (config.storage.outbox / STUDY_UID).exists(), "the empty study folder goes too"
    assert config.storage.outbox.is_dir()


def test_sender_start_sweeps_files_left_after_their_last_delivery(tmp_path: Path, db_for: list[Database]) -> None:
    config = make_config(tmp_path, ("pacs", "DEMO-PACS", free_port()))
    db = open_db(config, db_for)
    sent, waiting = add_outputs(db, config, 2)
    with db.write() as s:  # as if killed between the commit and the unlink
        rows = s.execute(select(Output.sop_instance_uid, Delivery).join(Output, Output.id == Delivery.output_id))
        for uid, d in rows:
            if uid == sent:
                d.state, d.sent_at = DeliveryState.SENT, utcnow()
            else:
                d.next_attempt_at = utcnow().replace(year=2100)
    sender = Sender(config, db)
    sender.start()
    sender.stop()
    assert not (config.storage.outbox / STUDY_UID / f"{sent}.dcm").exists()
    assert (config.storage.outbox / STUDY_UID / f"{waiting}.dcm").is_file()


def test_deliveries_to_destinations_no_longer_configured_are_tried_once_per_pass(
    tmp_path: Path, db_for: list[Database]
) -> None:
    config = make_config(tmp_path, ("pacs", "DEMO-PACS", free_port()))
    db = open_db(config, db_for)
    add_outputs(db, config, 2)
    with db.write() as s:
        for d, name in zip(s.scalars(select(Delivery).order_by(Delivery.id)), ("gone", "removed"), strict=True):
            d.destination = name
    assert Sender(config, db).run_once() == 0
    rows = deliveries(db)
    assert [(d.state, d.attempts) for d in rows] == [(DeliveryState.PENDING, 1)] * 2
    assert all("is not configured" in d.last_error for d in rows)
