"""The dashboard as a service of `dicom-node serve`: uvicorn in a thread of the node's process, on
`[web] host:port` (HTTPS with `[web.tls]`), reading the node's live state.

The socket is bound in `start()`, so a port in use fails `serve` at start with the reason instead of
leaving a node without its dashboard. uvicorn's access log is off: a one-time login link's token is in
its path.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import uvicorn

from dicom_node.web.app import create_app
from dicom_node.web.context import WebContext
from dicom_node.web.health import NodeParts
from dicom_node.web.metrics import node_registry

if TYPE_CHECKING:
    from dicom_node.runtime.node import Node

log = logging.getLogger(__name__)


class WebService:
    def __init__(self, node: Node, worker_alive: Callable[[], bool | None] | None = None) -> None:
        self.node = node
        registry, receiver_metrics = node_registry(node.db, lambda: node.config)
        node.receiver_observers.append(receiver_metrics)
        parts = NodeParts(
            config=lambda: node.config,
            receiver_port=lambda: node.port,
            scheduler_running=lambda: bool(node.scheduler.running),
            worker_alive=worker_alive or (lambda: None),
        )
        self.context = WebContext(
            db=node.db, config=lambda: node.config, parts=parts, registry=registry,
            apply_config=node.apply_config, reanalyse=node.assembler.reanalyse,
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port: int | None = None

    def start(self) -> None:
        web = self.node.config.web
        family = socket.AF_INET6 if ":" in web.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((web.host, web.port))
        except OSError as exc:
            sock.close()
            raise OSError(f"dashboard: cannot listen on {web.host}:{web.port} ([web] host/port): {exc}") from exc
        sock.listen(128)
        sock.set_inheritable(True)
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        tls = web.tls
        config = uvicorn.Config(
            create_app(self.context), log_config=None, access_log=False, server_header=False, proxy_headers=False,
            lifespan="off", timeout_graceful_shutdown=5,
            ssl_certfile=str(tls.cert) if tls.enabled and tls.cert else None,
            ssl_keyfile=str(tls.key) if tls.enabled and tls.key else None,
            ssl_ca_certs=str(tls.ca) if tls.enabled and tls.ca else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls.enabled and tls.ca and tls.require_client_cert else ssl.CERT_NONE,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            raise RuntimeError("dashboard did not start (see the log)")
        log.info("dashboard listening", extra={"host": web.host, "port": self.port, "tls": tls.enabled})

    def _run(self) -> None:
        assert self._server is not None and self._socket is not None
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
        log.info("dashboard stopped")
