"""HL7 ORU^R01 for critical findings and its MLLP exchange, against a real MLLP listener on a local socket."""

from __future__ import annotations

import pytest
from conftest import free_port
from notify_helpers import MllpListener
from outputs_helpers import ich_analysis, make_series

from dicom_node.notify.hl7 import Ack, oru_message, parse_ack, send_mllp


def test_oru_message_segments_and_escaping() -> None:
    analysis = ich_analysis(make_series("CT", n=2), positive=True)
    msg = oru_message("1.2.3", "ACC|1", "PID^7", analysis, control_id="c1")
    segments = msg.rstrip("\r").split("\r")
    assert [s[:3] for s in segments] == ["MSH", "PID", "OBR", "OBX", "OBX", "NTE"]
    assert segments[0].split("|")[8] == "ORU^R01^ORU_R01"
    assert segments[1] == "PID|1||PID\\S\\7", "delimiters in values are escaped"
    obr = segments[2].split("|")
    assert obr[2] == "ACC\\F\\1" and obr[3] == "1.2.3" and obr[25] == "P"
    labels = {s.split("|")[3].split("^")[0] for s in segments if s.startswith("OBX")}
    assert labels == {"any", "subdural"}
    assert "synthetic-demo" in segments[-1]


def test_newline_in_a_header_value_cannot_add_a_segment() -> None:
    analysis = ich_analysis(make_series("CT", n=2), positive=True)
    msg = oru_message("1.2.3\rPID|1||FORGED", "A1\nX", "P7", analysis, control_id="c1")
    assert [s[:3] for s in msg.rstrip("\r").split("\r")] == ["MSH", "PID", "OBR", "OBX", "OBX", "NTE"]


def test_ack_names_the_message_and_accepts_it() -> None:
    assert Ack("AA", "c1").problem("c1") == ""
    assert Ack("CA", "c1").problem("c1") == ""
    assert "control ID 'c2', not 'c1'" in Ack("AA", "c2").problem("c1")
    assert Ack("AE", "c1", "unknown patient").problem("c1") == "HL7 peer answered AE: unknown patient"
    assert "\n" not in Ack("AA", "c2\nFORGED").problem("c1")
    assert parse_ack("MSH|^~\\&|ris\nMSA|AR|c9|busy\n") == Ack("AR", "c9", "busy"), "LF-separated engines"
    with pytest.raises(ValueError, match="no MSA"):
        parse_ack("MSH|^~\\&|ris\r")


def test_send_mllp_returns_the_listeners_ack() -> None:
    analysis = ich_analysis(make_series("CT", n=2), positive=True)
    good, confused = MllpListener(), MllpListener(ack="AA", control_id="someone-else")
    try:
        msg = oru_message("1.2.3", "A1", "P7", analysis, control_id="ctl-1")
        assert send_mllp("127.0.0.1", good.port, msg) == Ack("AA", "ctl-1")
        assert good.messages[0].split("\r")[1] == "PID|1||P7"
        assert send_mllp("127.0.0.1", confused.port, msg).problem("ctl-1")
    finally:
        good.close()
        confused.close()
    with pytest.raises(OSError):
        send_mllp("127.0.0.1", free_port(), msg, timeout=2)
