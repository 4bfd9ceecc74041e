"""HL7 ORU^R01 over MLLP for critical findings, against a real MLLP listener on a local socket."""

from __future__ import annotations

import socket
import threading

from conftest import free_port
from outputs_helpers import ich_analysis, make_series

from dicom_node import triage
from dicom_node.config import NotificationsConfig
from dicom_node.hl7 import END, START, oru_message


class MllpListener:
    """Accepts MLLP connections, keeps each message, answers ACK with MSA-1 = `ack`."""

    def __init__(self, ack: str = "AA") -> None:
        self.ack = ack
        self.messages: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(END):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                message = data.strip(START + END).decode()
                self.messages.append(message)
                control = message.split("\r")[0].split("|")[9]
                ack = f"MSH|^~\\&|ris||dicom-node||20260101||ACK|{control}|P|2.5\rMSA|{self.ack}|{control}\r"
                conn.sendall(START + ack.encode() + END)

    def close(self) -> None:
        self.sock.close()


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


def test_critical_finding_sent_over_mllp_and_acknowledged() -> None:
    listener = MllpListener()
    try:
        settings = NotificationsConfig(hl7_host="127.0.0.1", hl7_port=listener.port)
        series = make_series("CT", n=2)
        assert not triage.notify_critical(settings, "1.2.3", "A1", ich_analysis(series, positive=False))
        assert triage.notify_critical(settings, "1.2.3", "A1", ich_analysis(series, positive=True), patient_id="P7")
        assert len(listener.messages) == 1
        assert listener.messages[0].split("\r")[1] == "PID|1||P7"
    finally:
        listener.close()


def test_rejected_or_unreachable_hl7_peer_is_reported_not_raised() -> None:
    listener = MllpListener(ack="AR")
    analysis = ich_analysis(make_series("CT", n=2), positive=True)
    try:
        rejected = NotificationsConfig(hl7_host="127.0.0.1", hl7_port=listener.port)
        assert not triage.notify_critical(rejected, "1.2.3", "A1", analysis)
        assert len(listener.messages) == 1
    finally:
        listener.close()
    down = NotificationsConfig(hl7_host="127.0.0.1", hl7_port=free_port())
    assert not triage.notify_critical(down, "1.2.3", "A1", analysis, timeout=2)
