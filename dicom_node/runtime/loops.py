"""Background loops for the serve process's senders (deliveries, notifications): one thread per key.

One thread per destination (or notification target) means a peer that is down or stalls holds only its
own thread for its timeouts; the others keep sending.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class ServiceLoops:
    """Background threads, one per key, each calling `step(key)` until stopped; idle passes wait `poll`.

    `step` returns how much it did; a pass that did nothing waits before the next one. An exception in a
    pass (a database hiccup) is logged and never ends the thread.
    """

    def __init__(self, name: str, poll_seconds: float) -> None:
        self.name = name
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self, keys: list[str], step: Callable[[str], int]) -> None:
        self._stop.clear()
        for key in keys:
            thread = threading.Thread(
                target=self._loop, args=(key, step), name=f"{self.name}-{key}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def _loop(self, key: str, step: Callable[[str], int]) -> None:
        while not self._stop.is_set():
            try:
                done = step(key)
            except Exception:  # a database hiccup must not end the loop
                log.exception("service pass failed", extra={"service": self.name, "key": key})
                done = 0
            if not done:
                self._stop.wait(self.poll_seconds)
