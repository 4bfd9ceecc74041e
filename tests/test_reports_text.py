"""Report text handling: sections, negation / uncertainty / history scopes, the generator, HL7 ORU parsing."""

from __future__ import annotations

import pytest

from dicom_node.textreports import LABELS, consistent
from dicom_node.textreports.generator import generate_report
from dicom_node.textreports.hl7in import Malformed, ack, parse_oru
from dicom_node.textreports.text import normalise, sentences, tagged


def contexts(text: str) -> dict[str, set[str]]:
    """token -> the contexts it appears in."""
    out: dict[str, set[str]] = {}
    for clause in tagged(text):
        for ctx, tok in clause:
            if tok != ",":
                out.setdefault(tok, set()).add(ctx)
    return out


@pytest.mark.parametrize("text, token, context", [
    ("No acute intracranial hemorrhage, mass or infarct.", "infarct", "N"),
    ("Subdural hematoma is not seen.", "subdural", "N"),
    ("There is no evidence of SAH.", "sah", "N"),
    ("Small SDH without midline shift.", "sdh", "A"),
    ("Small SDH without midline shift.", "midline", "N"),
    ("Previously seen subdural has resolved.", "subdural", "N"),
    ("Interval resolution of the subarachnoid blood.", "subarachnoid", "N"),
    ("The SAH is no longer visible.", "sah", "N"),
    ("Resolved SAH.", "sah", "N"),
    ("A small SAH cannot be excluded.", "sah", "U"),
    ("Cannot exclude a tiny subdural.", "subdural", "U"),
    ("Possible small infarct.", "infarct", "U"),
    ("?SAH", "sah", "U"),
    ("? small hypodensity in the pons.", "hypodensity", "U"),
    ("Likely acute infarct.", "infarct", "A"),
    ("Findings consistent with subarachnoid hemorrhage.", "subarachnoid", "A"),
    ("No change in the size of the left subdural hematoma.", "subdural", "A"),  # pseudo-negation
    ("Stable left subdural hematoma.", "subdural", "A"),
    ("No hemorrhage, old left MCA infarct.", "infarct", "A"),  # a comma before a new statement ends the scope
    ("No hemorrhage, mass or infarct.", "infarct", "N"),  # a list keeps it
    ("No acute hemorrhage but there is an acute infarct.", "infarct", "A"),
    ("History of SAH.", "sah", "H"),
    ("Rule out subdural.", "subdural", "H"),
    ("Dural enhancement of uncertain significance.", "dural", "U"),
])
def test_cue_scopes(text: str, token: str, context: str) -> None:
    assert contexts(text)[token] == {context}


def test_sections_history_indication_and_comparison_say_nothing() -> None:
    text = ("CT HEAD\nCLINICAL HISTORY: Fall on warfarin. Rule out SDH.\nCOMPARISON: CT 2021 showing a left SDH.\n"
            "FINDINGS:\nNo intracranial hemorrhage.\nIMPRESSION:\nNormal.")
    found = list(sentences(normalise(text)))
    assert ("history", "fall on warfarin.") in found
    assert ("comparison", "ct 2021 showing a left sdh.") in found
    assert ("findings", "no intracranial hemorrhage.") in found
    assert ("impression", "normal.") in found
    assert contexts(text)["sdh"] == {"H"}


def test_inline_history_ends_where_findings_begin() -> None:
    # one paragraph: the indication covers its own sentence and history-like ones after it only
    found = list(sentences(normalise("Indication: headache. ?SAH. Rule out bleed. Small left SDH. Impression: SDH.")))
    assert [s for s, _ in found] == ["history", "history", "history", "findings", "impression"]
    # a header on its own line lasts until a blank line or the next header
    found = list(sentences(normalise("Clinical details:\nfall\n?SDH\n\nThere is a small SDH.")))
    assert [s for s, _ in found] == ["history", "history", "findings"]


def test_generator_is_deterministic_and_labels_consistent() -> None:
    a, b = generate_report(7, 123), generate_report(7, 123)
    assert a == b and a.text
    assert generate_report(7, 124).text != a.text
    for i in range(300):
        r = generate_report(11, i)
        positive = {k for k, v in r.labels.items() if v}
        assert set(r.labels) == set(LABELS)
        assert consistent(positive) == positive, r.id


ORU_SEGMENTS = (
    "MSH|^~\\&|RIS|HOSP|DICOMNODE|HOSP|20240102101500+0100||ORU^R01^ORU_R01|MSG0001|P|2.5",
    "PID|1||PAT123^^^HOSP^MR||DOE^JANE",
    "OBR|1|ORD55|FIL77|CTHEAD^CT Head^L|||20240102093000|||||||||||ACC123||||20240102101000||CT|F",
    "ZDS|1.2.840.113619.2.55.3^RIS^Application^DICOM",
    "OBX|1|TX|&GDT^Findings||Small left SDH.~No midline shift \\T\\ no SAH.||||||F",
    "OBX|2|FT|&IMP^Impression||Acute left SDH.\\.br\\Neurosurgery informed.||||||F",
)
ORU = "\r".join(ORU_SEGMENTS)


def test_oru_fields_and_text() -> None:
    parsed = parse_oru(ORU)
    r = parsed.report
    assert (parsed.control_id, r.accession_number, r.study_uid, r.patient_id, r.status) == (
        "MSG0001", "ACC123", "1.2.840.113619.2.55.3", "PAT123", "F")
    assert r.reported_at is not None and r.reported_at.isoformat() == "2024-01-02T10:10:00"
    assert r.text == ("FINDINGS:\nSmall left SDH.\nNo midline shift & no SAH.\nIMPRESSION:\nAcute left SDH.\n"
                      "Neurosurgery informed.")
    assert r.source_key == "hl7:RIS|HOSP|MSG0001" and r.source == "hl7"


def test_oru_other_separators_and_fallbacks() -> None:
    msg = ORU.replace("|", "#").replace("MSH#^~\\&#", "MSH#^~\\&#")
    msg = msg.replace("#ACC123#", "##")  # no OBR-18: the filler order number (OBR-3) is the accession
    r = parse_oru(msg.replace("ZDS#1.2.840.113619.2.55.3^RIS^Application^DICOM",
                              "OBX#9#ST#113014^Study Instance UID^DCM##1.2.3.4")).report
    assert r.accession_number == "FIL77" and r.study_uid == "1.2.3.4"
    assert "1.2.3.4" not in r.text


@pytest.mark.parametrize("change, reason, reject", [
    (lambda m: "PID|1||x", "MSH", True),
    (lambda m: m.replace("ORU^R01^ORU_R01", "ADT^A01"), "not supported", True),
    (lambda m: m.replace("|MSG0001|", "||"), "MSH-10", True),
    (lambda m: "\r".join(s for s in m.split("\r") if not s.startswith("OBR")), "no OBR", False),
    (lambda m: "\r".join(s for s in m.split("\r") if not s.startswith("OBX")), "no report text", False),
    (lambda m: m.replace("ORD55|FIL77|", "||").replace("ACC123", "").replace("ZDS|", "ZZZ|"), "no accession", False),
])
def test_malformed_messages_are_refused_with_a_reason(change, reason: str, reject: bool) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Malformed) as info:
        parse_oru(change(ORU))
    assert reason in info.value.reason
    assert info.value.reject is reject


def test_ack_names_the_control_id() -> None:
    ok = ack("MSG0001").split("\r")
    assert ok[0].startswith("MSH|^~\\&|dicom-node|") and "ACK^R01^ACK" in ok[0]
    assert ok[1] == "MSA|AA|MSG0001"
    nak = ack("MSG0002", "AE", "no OBR segment", "100").split("\r")
    assert nak[1] == "MSA|AE|MSG0002|no OBR segment"
    assert nak[2].startswith("ERR|||100^no OBR segment^HL70357|E|")
