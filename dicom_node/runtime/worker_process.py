"""`serve`'s local inference worker: a child process running `dicom-node worker`, restarted if it dies
(but not when it exits because it cannot load its models: it would only fail again; the node then
reports the worker down in /healthz).

Models (torch) load in the child, so the receiver's process stays small and a crashing model cannot
take the receiver down. `stop()` sends SIGTERM (the worker finishes its job in hand) and kills the
child if it has not exited within the grace period; its lease then lets another worker take the job.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

EXIT_CANNOT_LOAD_MODELS = 3  # `dicom-node worker`'s exit status when its models cannot be loaded


class WorkerProcess:
    def __init__(
        self,
        config_path: Path,
        log_level: str = "INFO",
        restart_delay: float = 5.0,
        grace_seconds: float = 30.0,
    ) -> None:
        self.config_path = Path(config_path)
        self.log_level = log_level
        self.restart_delay = restart_delay
        self.grace_seconds = grace_seconds
        self.process: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        self.gave_up = False  # the worker exited because it cannot load its models

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "dicom_node.cli",
            "--log-level",
            self.log_level,
            "worker",
            "--config",
            str(self.config_path),
        ]

    def start(self) -> None:
        self._stop.clear()
        self.gave_up = False
        self._spawn()
        self._monitor = threading.Thread(target=self._watch, name="worker-process", daemon=True)
        self._monitor.start()

    def _spawn(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            env = {**os.environ, PARENT_ENV: str(os.getpid())}
            self.process = subprocess.Popen(self.command(), env=env)
            log.info("local worker started", extra={"pid": self.process.pid})

    def _watch(self) -> None:
        while not self._stop.is_set():
            proc = self.process
            if proc is not None and proc.poll() == EXIT_CANNOT_LOAD_MODELS:
                # Restarting would fail the same way every few seconds: stay down, not ready (/healthz).
                log.error("local worker cannot load its models; not restarting until the configuration "
                          "is fixed (see `dicom-node config check`)", extra={"pid": proc.pid})
                self.gave_up = True
                return
            if proc is not None and proc.poll() is not None:
                log.error(
                    "local worker exited; restarting", extra={"pid": proc.pid, "returncode": proc.returncode}
                )
                if self._stop.wait(self.restart_delay):
                    return
                self._spawn()
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            proc = self.process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.grace_seconds)
            except subprocess.TimeoutExpired:
                log.warning("local worker did not stop in time; killing it", extra={"pid": proc.pid})
                proc.kill()
                proc.wait()
        if self._monitor is not None:
            self._monitor.join(5)
            self._monitor = None
        log.info("local worker stopped")



PARENT_ENV = "DICOM_NODE_PARENT_PID"


def die_with_parent() -> None:
    """Called by `dicom-node worker` at start: when `serve` started it (PARENT_ENV set), ask Linux for
    SIGTERM once `serve` dies, even by SIGKILL, so no orphan worker outlives its node; its job's lease
    then expires and another worker re-runs the job."""
    expected = os.environ.get(PARENT_ENV)
    if not expected or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(expected):  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
