"""The notifier: sends queued critical-finding alerts (`notify/state.py`), one thread per target.

A service object (`start()`/`stop()`) that `serve` runs beside the DICOM sender; `run_once()` does one
pass over both targets and is what tests call. The webhook counts as delivered on HTTP 2xx; the HL7 ORU
when the MLLP peer's ACK names the message's control ID (MSA-2 = MSH-10) and accepts it (AA or CA).

Each alert is claimed before it is sent (`state.claim_due`, in the name of `owner`, this process by
default), one at a time, so that several `serve` processes on one database send each alert once.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request

from dicom_node.config import Config
from dicom_node.db.engine import Database, utcnow
from dicom_node.notify import state
from dicom_node.notify.hl7 import send_mllp
from dicom_node.notify.state import HL7, TARGETS, WEBHOOK, DueNotification
from dicom_node.runtime import ownership
from dicom_node.runtime.loops import ServiceLoops
from dicom_node.runtime.safe_text import clean

log = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS = 5.0  # per HTTP request or MLLP exchange
_RETRYABLE_HTTP = {408, 425, 429}  # 4xx statuses that say "later", not "never"


class Notifier:
    def __init__(
        self, config: Config, db: Database, timeout: float = SEND_TIMEOUT_SECONDS, owner: str | None = None
    ) -> None:
        self.config = config
        self.settings = config.notifications
        self.db = db
        self.owner = owner or ownership.process_id()  # `claimed_by` of the alerts this notifier holds
        self.lease_seconds = max(config.delivery.lease_seconds, 3 * timeout)
        self.timeout = timeout
        self._loops = ServiceLoops("notifier", config.delivery.poll_seconds)

    # -- service -------------------------------------------------------------------------------------
    def start(self) -> None:
        self._loops.start(list(TARGETS), self.run_target)

    def stop(self, timeout: float = 30.0) -> None:
        self._loops.stop(timeout)

    # -- passes --------------------------------------------------------------------------------------
    def run_once(self) -> int:
        """One pass over every target; returns how many alerts were delivered."""
        return sum(self.run_target(target) for target in TARGETS)

    def run_target(self, target: str) -> int:
        """Claim and send the due alerts to `target`, one at a time; returns how many were delivered."""
        with self.db.read() as session:  # a cheap look first: claiming takes the write lock
            if not state.due(session, utcnow(), target, limit=1):
                return 0
        missing = self._not_configured(target)
        sent = 0
        while not self._loops.stopping:
            with self.db.write() as session:
                items = state.claim_due(session, self.owner, self.lease_seconds, utcnow(), target,
                                        limit=100 if missing else 1)
                for item in items if missing else ():
                    state.mark_skipped(session, item.notification_id, missing, self.owner)
            if not items:
                break
            if missing:
                continue
            item = items[0]
            error, permanent = self._send(item)
            with self.db.write() as session:
                if error:
                    state.mark_attempt_failed(
                        session, self.config.notify_retry, item.notification_id, error, utcnow(), self.owner, permanent
                    )
                else:
                    state.mark_sent(session, item.notification_id, utcnow(), self.owner)
            if not error:
                sent += 1
                log.info("critical-finding alert sent", extra={"target": target, "study_uid": clean(item.study_uid)})
        return sent

    def _not_configured(self, target: str) -> str:
        if target == WEBHOOK and not self.settings.webhook_url:
            return "notifications.webhook_url is not set"
        if target == HL7 and not (self.settings.hl7_host and self.settings.hl7_port):
            return "notifications.hl7_host / hl7_port are not set"
        return ""

    def _send(self, item: DueNotification) -> tuple[str, bool]:
        """("", False) when delivered, else (why, whether retrying cannot help)."""
        if item.target == WEBHOOK:
            return self._post(item.body)
        try:
            ack = send_mllp(self.settings.hl7_host, self.settings.hl7_port, item.body, self.timeout)
        except (OSError, ValueError) as exc:
            return f"HL7 {self.settings.hl7_host}:{self.settings.hl7_port}: {clean(exc)}", False
        return ack.problem(item.control_id), False

    def _post(self, body: str) -> tuple[str, bool]:
        return post_json(self.settings.webhook_url, body, self.timeout)


def post_json(url: str, body: str, timeout: float = SEND_TIMEOUT_SECONDS) -> tuple[str, bool]:
    """POST a JSON document: ("", False) on HTTP 2xx, else (why, whether retrying cannot help: a 4xx other
    than 408/425/429)."""
    request = urllib.request.Request(url, data=body.encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"webhook: {clean(exc)}", False
    if 200 <= status < 300:
        return "", False
    return f"webhook answered HTTP {status}", 400 <= status < 500 and status not in _RETRYABLE_HTTP
