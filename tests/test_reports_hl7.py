"""Report intake over real sockets: a node receiving DICOM (DCMTK storescu) and HL7 ORU^R01 over MLLP.

ORU messages in, ACKs out (MSA-2 naming each message); malformed ones NAKed and kept with the reason; a
correction superseding the report it corrects; a repeated message stored once; reports matched to
studies that arrive before and after them; the labeller labelling what arrived; no patient identifier
in the log above DEBUG.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, free_port, wait_for
from receiver_helpers import ct_series, make_config, storescu, write_series
from sqlalchemy import select

from dicom_node.db.schema import RadiologyReport, ReportLabel, ReportRejection, Study
from dicom_node.notify.hl7 import END, START, parse_ack, read_mllp, send_mllp
from dicom_node.runtime.node import Node
from dicom_node.runtime.services import build_node
from dicom_node.textreports import store

UID_A = "1.2.826.0.1.3680043.8.498.120001"
UID_B = "1.2.826.0.1.3680043.8.498.120002"
PATIENT = "PAT-HL7-7781"


def oru(control_id: str, text: str, accession: str = "", study_uid: str = "", status: str = "F",
        reported: str = "20240105101000", patient: str = PATIENT) -> str:
    obr = ["OBR", "1", f"ORD{control_id}", "", "CTHEAD^CT head^L", "", "", "20240105093000"] + [""] * 10 + [
        accession, "", "", "", reported, "", "", status]
    segments = [f"MSH|^~\\&|RIS|HOSP|DICOMNODE|HOSP|{reported}||ORU^R01^ORU_R01|{control_id}|P|2.5",
                f"PID|1||{patient}^^^HOSP^MR||SYNTHETIC^PATIENT", "|".join(obr)]
    if study_uid:
        segments.append(f"ZDS|{study_uid}^RIS^Application^DICOM")
    for i, line in enumerate(text.split("\n"), 1):
        segments.append(f"OBX|{i}|TX|&GDT^Report||{line}||||||{status}")
    return "\r".join(segments) + "\r"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    config = make_config(tmp_path, reports={"hl7_port": free_port(), "label_interval_seconds": 0.2,
                                            "check_interval_seconds": 0.5})
    n = build_node(config, local_worker=False)  # as `serve` wires it (report listener, labelling, monitoring)
    n.start()
    try:
        yield n
    finally:
        n.stop()


def send_study(tmp_path: Path, node: Node, uid: str, accession: str) -> None:
    series = ct_series(3, study_uid=uid)
    for ds in series:
        ds.AccessionNumber = accession
        ds.PatientID = PATIENT
    files = write_series(tmp_path / uid, series)
    assert node.port is not None
    proc = storescu(node.port, files)
    assert proc.returncode == 0, proc.stderr

    def arrived() -> bool:
        with node.db.read() as s:
            return s.scalar(select(Study.id).where(Study.study_uid == uid)) is not None
    wait_for(arrived, msg=f"study {uid} stored")


def send(node: Node, message: str) -> tuple[str, str, str]:
    """(MSA-1, MSA-2, MSA-3) of the node's answer."""
    ack = send_mllp("127.0.0.1", node.config.reports.hl7_port, message)
    return ack.code, ack.control_id, ack.text


def reports_for(node: Node, uid: str) -> tuple[list[RadiologyReport], RadiologyReport | None]:
    with node.db.read() as s:
        study = s.scalar(select(Study).where(Study.study_uid == uid))
        assert study is not None
        rows = [r for r in s.scalars(select(RadiologyReport).order_by(RadiologyReport.id))
                if study in store.studies_for(s, r)]
        return rows, store.current_reports(s, [study]).get(study.id)


def test_oru_in_ack_out_matching_corrections_and_refusals(tmp_path: Path, node: Node,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    # study A arrives first, its report after it
    send_study(tmp_path, node, UID_A, "ACC-A")
    assert send(node, oru("M1", "CT head. No acute intracranial hemorrhage.", accession="ACC-A")) == ("AA", "M1", "")
    rows, current = reports_for(node, UID_A)
    assert [r.source_key for r in rows] == ["hl7:RIS|HOSP|M1"] and current is not None
    assert current.patient_id == PATIENT and current.text == "FINDINGS:\nCT head. No acute intracranial hemorrhage."

    # report B arrives before its study (matched by Study Instance UID); the study comes later
    assert send(node, oru("M2", "Acute right subdural hematoma, 7 mm.", accession="ACC-B", study_uid=UID_B))[0] == "AA"
    with node.db.read() as s:
        waiting = s.scalar(select(RadiologyReport).where(RadiologyReport.source_key == "hl7:RIS|HOSP|M2"))
        assert waiting is not None and store.studies_for(s, waiting) == []
    send_study(tmp_path, node, UID_B, "ACC-B")
    rows, current = reports_for(node, UID_B)
    assert [r.source_key for r in rows] == ["hl7:RIS|HOSP|M2"] and current is not None

    # a correction for A supersedes the original; an older message arriving late does not
    assert send(node, oru("M3", "Addendum: small acute left subdural hematoma along the falx.", accession="ACC-A",
                          status="C", reported="20240105120000"))[0] == "AA"
    assert send(node, oru("M0", "Preliminary: no bleed.", accession="ACC-A", status="P",
                          reported="20240105090000"))[0] == "AA"
    rows, current = reports_for(node, UID_A)
    assert [r.source_key.rsplit("|", 1)[1] for r in rows] == ["M1", "M3", "M0"]
    assert current is not None and current.source_key.endswith("|M3") and current.status == "C"
    assert rows[0].superseded_by == current.id and rows[2].superseded_by == current.id

    # the same message again (an ACK the RIS did not get): answered AA, stored once
    assert send(node, oru("M1", "CT head. No acute intracranial hemorrhage.", accession="ACC-A")) == ("AA", "M1", "")
    assert len(reports_for(node, UID_A)[0]) == 3

    # malformed messages: NAKed with the reason, kept with it
    no_obr = "\r".join(s for s in oru("M4", "Text.", accession="ACC-C").split("\r") if not s.startswith("OBR"))
    code, control, text = send(node, no_obr)
    assert (code, control) == ("AE", "M4") and "no OBR" in text
    code, control, text = send(node, oru("M5", "Text.").replace("|ORDM5|", "||"))  # nothing to match on
    assert (code, control) == ("AE", "M5") and "accession" in text
    code, _, text = send(node, oru("M6", "Text.", accession="X").replace("ORU^R01^ORU_R01", "ADT^A08"))
    assert code == "AR" and "not supported" in text
    with socket.create_connection(("127.0.0.1", node.config.reports.hl7_port), timeout=5) as sock:
        sock.sendall(START + b"this is not HL7" + END)
        assert parse_ack(read_mllp(sock)).code == "AR"
    with node.db.read() as s:
        kept = {r.control_id: r for r in s.scalars(select(ReportRejection))}
    assert set(kept) == {"M4", "M5", "M6", ""}
    assert "no OBR" in kept["M4"].reason and kept["M4"].raw == no_obr
    assert kept[""].raw == "this is not HL7"

    # several messages on one connection, each acknowledged in turn
    with socket.create_connection(("127.0.0.1", node.config.reports.hl7_port), timeout=5) as sock:
        sock.sendall(b"".join(START + oru(f"N{i}", "Normal.", accession=f"ACC-N{i}").encode() + END
                              for i in range(3)))
        acks = [parse_ack(read_mllp(sock)) for _ in range(3)]
    assert [(a.code, a.control_id) for a in acks] == [("AA", "N0"), ("AA", "N1"), ("AA", "N2")]

    # the labeller labels the current reports: A's correction and B say subdural
    def labelled() -> dict[int, list[str]]:
        with node.db.read() as s:
            return {r.report_id: r.positive for r in s.scalars(select(ReportLabel))}
    wait_for(lambda: len(labelled()) >= 5, msg="current reports labelled")
    labels = labelled()
    with node.db.read() as s:
        ids = {r.source_key.rsplit("|", 1)[1]: r.id for r in s.scalars(select(RadiologyReport))}
    assert "subdural" in labels[ids["M3"]] and "subdural" in labels[ids["M2"]]
    assert ids["M0"] not in labels  # superseded on arrival: never current, never labelled
    assert labels[ids["N0"]] == []

    # no patient identifier in the log above DEBUG
    shown = [r for r in caplog.records if r.levelno > logging.DEBUG
             if PATIENT in r.getMessage() or PATIENT in str(vars(r))]
    assert shown == []

    # the operator's view
    proc = subprocess.run([sys.executable, "-m", "dicom_node.cli", "reports", "list", "--config",
                           str(node.config.source)], capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "superseded by" in proc.stdout and UID_B in proc.stdout and "no OBR segment" in proc.stdout
