"""Inbound HL7 v2 ORU^R01: the report a RIS sends, parsed; and the acknowledgement we answer with.

`parse_oru(text)` returns a `ParsedReport` or raises `Malformed` with the reason (and the control ID
when the MSH had one). What is read, in order of preference:

- separators from MSH-1/MSH-2 (any encoding characters), segments split on CR (LF and CRLF tolerated);
- message type MSH-9 must be ORU^R01, MSH-10 (control ID) must be set;
- accession number: OBR-18 (placer field 1, IHE Scheduled Workflow), else OBR-3 (filler order number),
  else OBR-2 (placer order number); a value that looks like a DICOM UID is not taken as an accession;
- Study Instance UID: ZDS-1, else an OBX whose identifier is DCM 113014 or names "Study Instance UID",
  else IPC-3, else OBR-3 when it looks like a UID;
- patient ID: PID-3 (first repetition, first component), stored with the report, never logged;
- result status: OBR-25 (P preliminary, F final, C correction, X cancelled; default F);
- report time: OBR-22, else OBR-7, else MSH-7;
- text: every OBX of type TX, FT, ST or CF, in order, with a section header line whenever the OBX
  identifier changes ("&IMP", LOINC 19005-8 -> "IMPRESSION:"; "&GDT"/18782-3 -> "FINDINGS:"; otherwise
  the identifier's text), then NTE comments; HL7 escapes undone, repetitions and \\.br\\ as line breaks.

A message with neither accession number nor Study Instance UID, or without report text, is refused: it
could never be matched or labelled.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from dicom_node.db.engine import utcnow
from dicom_node.notify.hl7 import _escape
from dicom_node.textreports.store import IncomingReport

_UID = re.compile(r"^[0-2](\.(0|[1-9]\d*))+$")
_TEXT_TYPES = {"TX", "FT", "ST", "CF"}
_SECTIONS = {
    "&IMP": "IMPRESSION", "19005-8": "IMPRESSION", "IMP": "IMPRESSION", "IMPRESSION": "IMPRESSION",
    "&GDT": "FINDINGS", "18782-3": "FINDINGS", "59776-5": "FINDINGS", "GDT": "FINDINGS", "FINDINGS": "FINDINGS",
    "&ADT": "ADDENDUM", "ADT": "ADDENDUM", "55752-0": "CLINICAL INFORMATION", "18785-6": "INDICATION",
    "59768-2": "INDICATION", "18834-2": "COMPARISON", "55111-9": "TECHNIQUE",
}
_STUDY_UID_CODES = {"113014", "STUDY INSTANCE UID", "STUDYINSTANCEUID", "STUDY_INSTANCE_UID"}


class Malformed(ValueError):
    """The message cannot be accepted: `reject` True when structurally unusable (answered AR), else a content
    problem (AE); `code` is the HL7 error code (table 0357: 100 segment sequence, 101 required field
    missing, 200 unsupported message type)."""

    def __init__(self, reason: str, control_id: str = "", reject: bool = False, code: str = "101") -> None:
        super().__init__(reason)
        self.reason = reason
        self.control_id = control_id
        self.reject = reject
        self.code = code


@dataclass(frozen=True)
class ParsedReport:
    control_id: str
    sending_application: str
    sending_facility: str
    report: IncomingReport  # source "hl7", keyed by sender and control ID (a repeat is the same report)


@dataclass(frozen=True)
class _Encoding:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    def unescape(self, value: str) -> str:
        if self.escape not in value:
            return value
        e = re.escape(self.escape)

        def sub(m: re.Match[str]) -> str:
            code = m.group(1)
            table = {"F": self.field, "S": self.component, "R": self.repetition, "E": self.escape,
                     "T": self.subcomponent, ".br": "\n", "H": "", "N": ""}
            if code in table:
                return table[code]
            if code.startswith("X") and re.fullmatch(r"X([0-9A-Fa-f]{2})+", code):
                try:
                    return bytes.fromhex(code[1:]).decode("utf-8", "replace")
                except ValueError:
                    return ""
            if code.startswith(".sp"):
                return "\n"
            return ""

        return re.sub(f"{e}([^{e}]*){e}", sub, value)

    def components(self, value: str) -> list[str]:
        return value.split(self.component)


def _field(fields: list[str], n: int) -> str:
    return fields[n] if n < len(fields) else ""


def hl7_time(value: str) -> datetime | None:
    """HL7 TS/DTM (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]) as naive UTC when it has an offset, else as is."""
    m = re.match(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$", value.strip())
    if not m:
        return None
    parts = [int(p) if p else d for p, d in zip(m.groups()[:6], (0, 1, 1, 0, 0, 0), strict=True)]
    try:
        t = datetime(*parts)  # type: ignore[arg-type]
    except ValueError:
        return None
    if m.group(7):
        sign = 1 if m.group(7)[0] == "+" else -1
        t -= sign * timedelta(hours=int(m.group(7)[1:3]), minutes=int(m.group(7)[3:5]))
    return t


def split_segments(text: str) -> list[str]:
    return [s for s in re.split(r"\r\n|\r|\n", text) if s.strip()]


def header(text: str) -> tuple[_Encoding, list[str]]:
    """The encoding and MSH fields (index n = MSH-n); Malformed when there is no usable MSH."""
    segments = split_segments(text)
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 8:
        raise Malformed("the message does not start with an MSH segment", reject=True, code="100")
    msh = segments[0]
    sep = msh[3]
    chars = msh[4:8]
    if sep.isalnum() or len(set(chars + sep)) != 5:
        raise Malformed("MSH-1/MSH-2 do not define five distinct separators", reject=True, code="102")
    enc = _Encoding(sep, chars[0], chars[1], chars[2], chars[3])
    fields = ["MSH", sep, *msh[4:].split(sep)]  # fields[n] = MSH-n
    return enc, fields


def parse_oru(text: str) -> ParsedReport:
    enc, msh = header(text)
    control_id = enc.unescape(_field(msh, 10)).strip()
    message_type = enc.components(_field(msh, 9))
    if not control_id:
        raise Malformed("MSH-10 (message control ID) is empty", reject=True)
    if message_type[:2] != ["ORU", "R01"]:
        raise Malformed(f"message type {'^'.join(message_type[:2])!r} is not supported (only ORU^R01)",
                        control_id, reject=True, code="200")
    segments = [s.split(enc.field) for s in split_segments(text)[1:]]
    obr = next((s for s in segments if s[0] == "OBR"), None)
    if obr is None:
        raise Malformed("no OBR segment (the order the report belongs to)", control_id, code="100")

    def first(value: str) -> str:
        return enc.unescape(enc.components(value.split(enc.repetition)[0])[0]).strip()

    candidates = [first(_field(obr, n)) for n in (18, 3, 2)]
    accession = next((c for c in candidates if c and not _UID.match(c)), "")
    study_uid = _study_uid(segments, enc) or next((c for c in candidates[1:2] if _UID.match(c)), "")
    pid = next((s for s in segments if s[0] == "PID"), [])
    patient_id = first(_field(pid, 3))
    status = (first(_field(obr, 25)) or "F")[:1].upper()
    reported_at = hl7_time(first(_field(obr, 22))) or hl7_time(first(_field(obr, 7))) or hl7_time(
        first(_field(msh, 7)))
    body = _text(segments, enc)
    if not accession and not study_uid:
        raise Malformed("no accession number (OBR-18/OBR-3/OBR-2) and no Study Instance UID (ZDS-1, OBX 113014): "
                        "the report could never be matched to a study", control_id)
    if not body.strip() and status != "X":
        raise Malformed("no report text (no OBX of type TX/FT/ST/CF, no NTE)", control_id)
    if len(accession) > 64 or len(study_uid) > 64 or len(patient_id) > 64:
        raise Malformed("accession number, Study Instance UID or patient ID longer than 64 characters", control_id)
    application, facility = first(_field(msh, 3)), first(_field(msh, 4))
    return ParsedReport(control_id, application, facility, IncomingReport(
        "hl7", f"hl7:{application}|{facility}|{control_id}", accession, study_uid, patient_id, status, reported_at,
        body))


def _study_uid(segments: list[list[str]], enc: _Encoding) -> str:
    for seg in segments:
        if seg[0] == "ZDS" and _UID.match(enc.components(_field(seg, 1))[0].strip()):
            return enc.components(_field(seg, 1))[0].strip()
    for seg in segments:
        if seg[0] == "OBX":
            ident = [c.strip().upper() for c in enc.components(_field(seg, 3))[:2]]
            value = enc.components(_field(seg, 5))[0].strip()
            if set(ident) & _STUDY_UID_CODES and _UID.match(value):
                return value
    for seg in segments:
        if seg[0] == "IPC":
            value = enc.components(_field(seg, 3))[0].strip()
            if _UID.match(value):
                return value
    return ""


def _text(segments: list[list[str]], enc: _Encoding) -> str:
    lines: list[str] = []
    section = None
    for seg in segments:
        if seg[0] == "OBX" and _field(seg, 2).strip().upper() in _TEXT_TYPES:
            ident = enc.components(_field(seg, 3))
            code, name = (ident + ["", ""])[:2]
            key = code.strip().upper() or name.strip().upper()
            if {c.strip().upper() for c in ident[:2]} & _STUDY_UID_CODES:
                continue
            title = _SECTIONS.get(code.strip().upper()) or _SECTIONS.get(name.strip().upper()) or (
                enc.unescape(name).strip().upper() or None)
            if key != section:
                section = key
                if title:
                    lines.append(f"{title}:")
            value = _field(seg, 5)
            for rep in value.split(enc.repetition):
                lines.append(enc.unescape(rep.replace(enc.component, " ")))
        elif seg[0] == "NTE" and _field(seg, 3):
            lines.append(enc.unescape(_field(seg, 3)))
    return "\n".join(lines).strip()


def ack(control_id: str, code: str = "AA", text: str = "", error_code: str = "", receiving: str = "DICOMNODE",
        to_application: str = "", to_facility: str = "", now: datetime | None = None) -> str:
    """An ACK^R01 with MSA-1 `code` (AA accepted, AE error, AR rejected) naming `control_id`; an ERR segment
    with the HL7 error code (table 0357) and `text` when not accepted."""
    stamp = (now or utcnow()).strftime("%Y%m%d%H%M%S")
    own_id = f"ACK{uuid.uuid4().hex[:16]}"
    segments = [
        (f"MSH|^~\\&|dicom-node|{_escape(receiving)}|{_escape(to_application)}|{_escape(to_facility)}|{stamp}||"
         f"ACK^R01^ACK|{own_id}|P|2.5"),
        f"MSA|{code}|{_escape(control_id)}" + (f"|{_escape(text[:80])}" if text else ""),
    ]
    if code != "AA":
        # ERR-3 HL7 error code (table 0357), ERR-4 severity, ERR-8 user message
        segments.append(f"ERR|||{error_code or '207'}^{_escape(text[:80])}^HL70357|E||||{_escape(text[:250])}")
    return "\r".join(segments) + "\r"
