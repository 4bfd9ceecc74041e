"""Real receivers for critical-finding alerts on local sockets: an HTTP webhook and an MLLP (HL7) listener.

Both can be started on a port chosen before (a receiver that is down, then comes up), and answer as told:
the webhook with an HTTP status, the MLLP listener with an ACK code and, optionally, a wrong control ID.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from dicom_node.notify.hl7 import END, START, read_mllp


class Webhook:
    """A local HTTP server recording the JSON bodies POSTed to it and answering `status`."""

    def __init__(self, port: int = 0, status: int = 204) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TcpServer:
    """Accepts connections on 127.0.0.1:`port` (0: any free port) and hands each to `handle` in turn."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = int(self.sock.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        conn.close()

    def close(self) -> None:
        self.sock.close()


class MllpListener(TcpServer):
    """Keeps each HL7 message and answers an ACK with MSA-1 = `ack` and MSA-2 = its control ID (MSH-10),
    or `control_id` when that is set (a confused interface engine)."""

    def __init__(self, port: int = 0, ack: str = "AA", control_id: str | None = None) -> None:
        self.ack = ack
        self.control_id = control_id
        self.messages: list[str] = []
        super().__init__(port)

    def handle(self, conn: socket.socket) -> None:
        with conn:
            message = read_mllp(conn)
            self.messages.append(message)
            control = message.split("\r")[0].split("|")[9]
            answer = self.control_id if self.control_id is not None else control
            ack = f"MSH|^~\\&|ris||dicom-node||20260101||ACK|{control}|P|2.5\rMSA|{self.ack}|{answer}\r"
            conn.sendall(START + ack.encode() + END)


def control_id(message: str) -> str:
    """MSH-10 of an HL7 message."""
    return message.split("\r")[0].split("|")[9]
