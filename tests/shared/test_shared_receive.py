"""Every storage object in ../shared/data, sent with DCMTK storescu, is accepted, indexed and stored as
sent; its pixel data decode from our store (pydicom + pylibjpeg) exactly as from the original, except the
files INVENTORY.md documents as undecodable, which fail with a clear error.

How each kind of file is handled (see INVENTORY.md for the files themselves):
- compressed files are sent in their own transfer syntax: storescu proposes only uncompressed syntaxes
  by default and has no decoders, so each file is sent with the `--propose-*` flag for its syntax;
- a file whose SOP Class/Instance UIDs are encoded with VR UN (odd/compressed/explicit_VR-UN.dcm) cannot
  be sent by storescu ("missing SOP class (or instance)"); it is sent with a pynetdicom SCU instead;
- files without file meta (odd/no_preamble_no_meta/) are not storage objects: they carry no SOP Class /
  Instance UID, storescu refuses to send them, and nothing reaches the node.

Path from DICOM_NODE_SHARED_DATA, default <repo>/../shared/data; the suite fails, with what to do, when that folder is absent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from receiver_helpers import make_config, storescu
from shared_data import DATA, require_data
from sqlalchemy import func, select

from dicom_node.config import Config
from dicom_node.db.engine import Database
from dicom_node.db.schema import Instance
from dicom_node.receiver import ReceiverHandle, start_receiver

pytestmark = pytest.mark.shared_data


# storescu flag that proposes each transfer syntax (uncompressed ones are proposed by default)
PROPOSE = {
    "1.2.840.10008.1.2.1.99": "-xd",  # deflated explicit VR little endian
    "1.2.840.10008.1.2.4.50": "-xy",  # JPEG baseline (8 bit lossy)
    "1.2.840.10008.1.2.4.51": "-xx",  # JPEG extended (12 bit lossy)
    "1.2.840.10008.1.2.4.70": "-xs",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "-xt",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "-xu",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "-xv",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "-xw",  # JPEG 2000
    "1.2.840.10008.1.2.5": "-xr",  # RLE lossless
}

UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}

# INVENTORY.md: pixel data that pydicom + pylibjpeg cannot decode (12-bit lossy JPEG, NEMA WG04)
UNDECODABLE = {
    "brain_mr/nema_wg04_mr1_toshiba_t2_brain_slice/MR1_JPLY.dcm",
    "brain_mr/nema_wg04_mr4_philips_stir_brain_slice/MR4_JPLY.dcm",
}
NOT_STORAGE_OBJECTS = {
    "odd/no_preamble_no_meta/fodicom_GH340_MR.dcm",
    "odd/no_preamble_no_meta/pydicom_no_meta_CT.dcm",
}
UN_UIDS = {"odd/compressed/explicit_VR-UN.dcm"}


def _files() -> list[str]:
    if not DATA.is_dir():
        return []
    return sorted(str(p.relative_to(DATA)) for p in DATA.rglob("*") if p.is_file() and p.suffix.lower() != ".md")


FILES = _files()
require_data()


@dataclass
class Node:
    config: Config
    db: Database
    handle: ReceiverHandle

    def row(self, sop_instance_uid: str) -> Instance | None:
        with self.db.read() as s:
            return s.scalars(select(Instance).where(Instance.sop_instance_uid == sop_instance_uid)).one_or_none()

    def count(self) -> int:
        with self.db.read() as s:
            return int(s.scalar(select(func.count()).select_from(Instance)) or 0)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("shared-node")
    config = make_config(tmp, node={"max_pdu": 0})
    db = Database(config.database_url)
    handle = start_receiver(config, db)
    yield Node(config, db, handle)
    handle.shutdown(grace_seconds=2)
    db.dispose()


def _send_with_pynetdicom(port: int, path: Path) -> int:
    ds = pydicom.dcmread(path)
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def _pixels(ds: Dataset) -> np.ndarray:
    return ds.pixel_array


@pytest.mark.parametrize("rel", FILES)
def test_shared_file_is_received(node: Node, rel: str) -> None:
    path = DATA / rel
    if rel in NOT_STORAGE_OBJECTS:
        before = node.count()
        result = storescu(node.handle.port, path, "-R")
        assert result.returncode != 0
        assert "missing SOP class" in result.stderr or "Bad DICOM file" in result.stderr, result.stderr
        assert node.count() == before
        return

    original = pydicom.dcmread(path)
    tsyntax = str(original.file_meta.TransferSyntaxUID)
    if rel in UN_UIDS:
        probe = storescu(node.handle.port, path, "-R")
        assert probe.returncode != 0 and "missing SOP class" in probe.stderr, probe.stderr
        assert _send_with_pynetdicom(node.handle.port, path) == 0x0000
    else:
        flags = [PROPOSE[tsyntax]] if tsyntax in PROPOSE else []
        result = storescu(node.handle.port, path, "-R", *flags, "-v")
        assert result.returncode == 0, result.stderr
        assert "Received Store Response (Success)" in result.stderr

    row = node.row(str(original.SOPInstanceUID))
    assert row is not None, "not indexed"
    compressed = tsyntax in PROPOSE
    if compressed:  # sent in its own syntax and stored as sent (storescu may re-encode uncompressed ones)
        assert row.transfer_syntax_uid == tsyntax
    else:
        assert row.transfer_syntax_uid in UNCOMPRESSED
    assert row.sop_class_uid == str(original.SOPClassUID)
    stored = pydicom.dcmread(node.config.storage.path / row.path)
    assert stored.SOPInstanceUID == original.SOPInstanceUID
    if "PixelData" not in original:
        return
    if compressed:
        assert stored.PixelData == original.PixelData, "compressed pixel data stored byte for byte"
    if rel in UNDECODABLE:
        with pytest.raises(RuntimeError, match="Unable to decode"):
            _pixels(stored)
        return
    np.testing.assert_array_equal(_pixels(stored), _pixels(original))


def test_no_quarantine_and_counts_match(node: Node) -> None:
    """After every file: nothing quarantined, one row per distinct SOP Instance UID, one file per row."""
    if not node.config.storage.quarantine.exists():
        quarantined = []
    else:
        quarantined = list(node.config.storage.quarantine.iterdir())
    assert quarantined == []
    uids = set()
    for rel in FILES:
        if rel not in NOT_STORAGE_OBJECTS:
            uids.add(str(pydicom.dcmread(DATA / rel, stop_before_pixels=True).SOPInstanceUID))
    assert node.count() == len(uids)
    stored = [p for p in node.config.storage.path.rglob("*.dcm") if not p.name.startswith(".")]
    assert len(stored) == len(uids)


def test_storescu_proposal_flags_cover_every_compressed_file() -> None:
    """Guard for the table above: a new compressed syntax in the data needs a flag here."""
    for rel in FILES:
        if rel in NOT_STORAGE_OBJECTS:
            continue
        ts = str(pydicom.dcmread(DATA / rel, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        assert ts in UNCOMPRESSED or ts in PROPOSE, f"{rel}: no storescu flag for {ts}"
