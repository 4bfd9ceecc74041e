"""HL7 v2.5 ORU^R01 for critical findings, sent over MLLP (the framing every HL7 interface engine speaks).

The message identifies the study (Study Instance UID, accession number, the PACS's patient ID, which the
receiving system needs to file the result) and carries one OBX per critical finding with its probability.
Nothing about the patient beyond the ID is sent, and nothing of it is logged. A message counts as
delivered only when the peer's ACK names its control ID (MSA-2 = MSH-10) and accepts it (MSA-1 AA or CA).
"""

from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass
from datetime import datetime

from dicom_node.db.engine import utcnow
from dicom_node.ml.analysis import StudyAnalysis
from dicom_node.runtime.safe_text import clean

log = logging.getLogger(__name__)

START, END = b"\x0b", b"\x1c\x0d"


def _escape(text: str) -> str:
    """HL7 escape sequences for the delimiters `|^~\\&` and line breaks."""
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    out = out.replace("~", "\\R\\").replace("&", "\\T\\")
    return out.replace("\r", " ").replace("\n", " ")


def oru_message(
    study_uid: str,
    accession_number: str,
    patient_id: str,
    analysis: StudyAnalysis,
    control_id: str,
    sending_facility: str = "DICOMNODE",
    now: datetime | None = None,
) -> str:
    """An ORU^R01 with one OBX per present critical finding (segments separated by CR)."""
    stamp = (now or utcnow()).strftime("%Y%m%d%H%M%S")
    model = f"{analysis.model.display_name} {analysis.model.version}"
    demo = " synthetic-demo NOT FOR CLINICAL USE" if analysis.model.synthetic_demo else ""
    segments = [
        f"MSH|^~\\&|dicom-node|{_escape(sending_facility)}|||{stamp}||ORU^R01^ORU_R01|{_escape(control_id)}|P|2.5",
        f"PID|1||{_escape(patient_id)}",
        _obr(accession_number, study_uid, analysis.model.name, stamp),
    ]
    critical = [f for f in analysis.findings if f.present and f.critical]
    for i, f in enumerate(critical, start=1):
        segments.append(
            f"OBX|{i}|NM|{_escape(f.label)}^{_escape(f.label)} probability^L||{f.probability:.4f}|1||A|||P|||{stamp}"
        )
    segments.append(
        f"NTE|1|L|AI result by {_escape(model)}, not verified by a physician.{_escape(demo)}"
    )
    return "\r".join(segments) + "\r"


def _obr(accession_number: str, study_uid: str, model: str, stamp: str) -> str:
    fields = [""] * 26
    fields[0] = "OBR"
    fields[1] = "1"
    fields[2] = _escape(accession_number)  # placer order number: the accession number
    fields[3] = _escape(study_uid)  # filler order number: the study
    fields[4] = f"AI^{_escape(model)}^L"  # universal service identifier (local code)
    fields[5] = "S"  # priority: STAT
    fields[7] = stamp  # observation date/time
    fields[22] = stamp  # results report/status change
    fields[25] = "P"  # result status: preliminary (not verified by a physician)
    return "|".join(fields)


@dataclass(frozen=True)
class Ack:
    """The MSA segment of an HL7 acknowledgement."""

    code: str  # MSA-1: AA/CA accepted, AE/CE error, AR/CR rejected
    control_id: str  # MSA-2: the MSH-10 of the message it acknowledges
    text: str = ""  # MSA-3

    def problem(self, control_id: str) -> str:
        """Why this ACK does not confirm the message whose MSH-10 is `control_id` ("" when it does)."""
        if self.control_id != control_id:
            return f"HL7 ACK names control ID {clean(self.control_id, 40)!r}, not {control_id!r}"
        if self.code not in ("AA", "CA"):
            detail = f": {clean(self.text, 120)}" if self.text else ""
            return f"HL7 peer answered {clean(self.code, 8)}{detail}"
        return ""


def parse_ack(answer: str) -> Ack:
    """The MSA segment of `answer`; ValueError when there is none."""
    for segment in re.split(r"[\r\n]+", answer):
        fields = segment.split("|")
        if fields[0] == "MSA" and len(fields) > 1:
            return Ack(fields[1], fields[2] if len(fields) > 2 else "", fields[3] if len(fields) > 3 else "")
    raise ValueError("the HL7 peer's answer has no MSA segment")


def send_mllp(host: str, port: int, message: str, timeout: float = 5.0) -> Ack:
    """Send one message framed by MLLP and return the peer's acknowledgement.

    Raises OSError on network failure and ValueError when the answer is not an HL7 ACK.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(START + message.encode("utf-8") + END)
        return parse_ack(read_mllp(sock))


def read_mllp(sock: socket.socket) -> str:
    """One MLLP-framed message from `sock` (until the end block or the peer closes), unframed."""
    data = b""
    while not data.endswith(END):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.strip(START + END).decode("utf-8", "replace")
