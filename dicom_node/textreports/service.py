"""What `serve` runs for reports: the HL7 listener, the labelling pass and the monitoring check.

`ReportsService.start()` starts the MLLP listener (when `[reports] hl7_port` is set) and one thread that,
every `label_interval_seconds`, labels the current reports the configured labeller has not labelled
(numpy, no torch in serve) and, every `check_interval_seconds`, computes AI-vs-report agreement over
`window_days`, opens or clears alerts and sends their webhooks. `run_once()` is one such pass (tests).
"""

from __future__ import annotations

import logging
import threading
import time

from dicom_node.config import Config
from dicom_node.db.engine import Database, utcnow
from dicom_node.errors import ModelError
from dicom_node.runtime import ownership
from dicom_node.runtime.safe_text import clean
from dicom_node.textreports import LABELS, monitor, store
from dicom_node.textreports.listener import ReportListener
from dicom_node.textreports.model import ReportLabeller, load_labeller

log = logging.getLogger(__name__)


def label_pending(db: Database, labeller: ReportLabeller, batch: int = 256) -> int:
    """Label every current report `labeller` has not labelled yet; returns how many."""
    done = 0
    while True:
        with db.read() as session:
            pending = [(r.id, r.text) for r in store.unlabelled(session, labeller.name, labeller.version, batch)]
        if not pending:
            return done
        probs = labeller.probabilities([t for _, t in pending])
        verdicts = labeller.verdicts(probs)
        with db.write() as session:
            now = utcnow()
            for (rid, _), p, v in zip(pending, probs, verdicts, strict=True):
                store.save_labels(session, rid, labeller.name, labeller.version, labeller.manifest.sha256,
                                  {k: round(float(x), 4) for k, x in zip(LABELS, p, strict=True)},
                                  [k for k, x in zip(LABELS, v, strict=True) if x], now)
        done += len(pending)


def run_monitor(config: Config, db: Database, labeller: ReportLabeller) -> list[monitor.Agreement]:
    """Agreement over the configured window; opens/clears alerts and sends their webhooks."""
    settings = config.reports
    since, until = monitor.window(settings.window_days)
    with db.write() as session:
        found = monitor.agreement(session, labeller.name, labeller.version, since, until)
        monitor.check_alerts(session, found, {"sensitivity": settings.min_sensitivity,
                                              "specificity": settings.min_specificity},
                             settings.min_cases, settings.window_days, bool(settings.alert_webhook_url), utcnow())
    if settings.alert_webhook_url:
        monitor.send_alerts(db, settings.alert_webhook_url, config.notify_retry, ownership.process_id(),
                            config.delivery.lease_seconds)
    return found


class ReportsService:
    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db
        self.listener: ReportListener | None = None
        self._labeller: ReportLabeller | None = None
        self._labeller_error_at = 0.0
        self._next_check = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        settings = self.config.reports
        if settings.hl7_port:
            self.listener = ReportListener(self.db, settings.host, settings.hl7_port, self.config.node.ae_title)
            self.listener.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="reports", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.listener is not None:
            self.listener.stop(timeout)
            self.listener = None

    def labeller(self) -> ReportLabeller | None:
        if self._labeller is None and time.monotonic() - self._labeller_error_at > 60:
            settings = self.config.reports
            try:
                self._labeller = load_labeller(self.config.models.path, settings.model, settings.version)
            except ModelError as exc:
                self._labeller_error_at = time.monotonic()
                log.error("report labeller not loaded; reports are stored but not labelled",
                          extra={"model": settings.model, "version": settings.version, "reason": clean(exc)})
        return self._labeller

    def run_once(self, check: bool = True) -> int:
        labeller = self.labeller()
        if labeller is None:
            return 0
        labelled = label_pending(self.db, labeller)
        if check:
            run_monitor(self.config, self.db, labeller)
        return labelled

    def _loop(self) -> None:
        while not self._stop.wait(self.config.reports.label_interval_seconds):
            due = time.monotonic() >= self._next_check
            try:
                self.run_once(check=due)
            except Exception:  # a pass that fails is logged and tried again at the next interval
                log.exception("report labelling/monitoring pass failed")
            if due:
                self._next_check = time.monotonic() + self.config.reports.check_interval_seconds
