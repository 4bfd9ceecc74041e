"""`/metrics` in Prometheus text format (prometheus_client), one registry per node.

Two sources:
- `ReceiverMetrics`, a receiver observer in the serve process: associations accepted and rejected (by
  reason), instances received and rejected (by reason), ingest latency (the C-STORE handler's time:
  parse, fsync, index).
- `DatabaseCollector`, read at each scrape from the state the other processes write: studies by state
  and completions, jobs by state and model, deliveries and notifications by state, time to result per
  model (study complete → result stored, a histogram fed by new result rows since the last scrape),
  workers holding jobs, enabled models, free disk against the watermark.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from dicom_node.config import Config
from dicom_node.db.engine import Database
from dicom_node.db.schema import Delivery, Job, JobState, Notification, Output, Result, Study

log = logging.getLogger(__name__)

INGEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RESULT_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
_STORE_REASONS = {0x0000: "", 0xA700: "out_of_resources", 0xC210: "cannot_understand"}


def rejection_reason(reason: str) -> str:
    """A short label value for why an association was rejected (from `receiver.access.check_association`'s
    wording; `test_web_metrics` pins each)."""
    if "called AE title" in reason:
        return "called_ae"
    if "is not configured" in reason:
        return "calling_ae"
    if "not allowed from" in reason:
        return "host"
    if "free disk" in reason:
        return "disk"
    return "other"


class ReceiverMetrics:
    """Counters of the receiver (a `receiver.scp.ReceiverObserver`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.associations = Counter(
            "dicom_node_associations", "Association requests, by result and reason for a rejection",
            ["result", "reason"], registry=registry,
        )
        self.received = Counter("dicom_node_instances_received", "Instances stored (C-STORE Success)",
                                registry=registry)
        self.rejected = Counter("dicom_node_instances_rejected", "C-STOREs not stored, by reason", ["reason"],
                                registry=registry)
        self.ingest = Histogram("dicom_node_ingest_seconds", "C-STORE handling time: parse, fsync, index",
                                buckets=INGEST_BUCKETS, registry=registry)
        for reason in ("calling_ae", "called_ae", "host", "disk"):
            self.associations.labels("rejected", reason)
        self.associations.labels("accepted", "")
        for reason in ("out_of_resources", "cannot_understand"):
            self.rejected.labels(reason)

    def association(self, accepted: bool, calling_ae: str, called_ae: str, peer: str, reason: str) -> None:
        if accepted:
            self.associations.labels("accepted", "").inc()
        else:
            self.associations.labels("rejected", rejection_reason(reason)).inc()

    def stored(self, status: int, seconds: float) -> None:
        self.ingest.observe(seconds)
        if status == 0:
            self.received.inc()
        else:
            self.rejected.labels(_STORE_REASONS.get(status, f"0x{status:04X}")).inc()


class DatabaseCollector(Collector):
    """Metrics read from the database (and the store's disk) at scrape time."""

    def __init__(self, db: Database, config: Callable[[], Config]) -> None:
        self.db = db
        self.config = config
        self._lock = threading.Lock()
        self._last_result_id = 0
        self._ttr_counts: dict[str, list[int]] = {}  # model -> cumulative bucket counts, +Inf last
        self._ttr_sum: dict[str, float] = {}

    def describe(self) -> list[Metric]:
        return []  # collected on demand: registering must not query the database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("dicom_node_database_up", "1 when the last scrape could read the database")
        try:
            metrics = list(self._from_database())
        except SQLAlchemyError as exc:
            log.warning("metrics: database not readable", extra={"error": str(exc)})
            up.add_metric([], 0.0)
            metrics = []
        else:
            up.add_metric([], 1.0)
        yield up
        yield from metrics
        yield from self._disk()

    def _from_database(self) -> Iterator[Metric]:
        with self.db.read() as session:
            studies = GaugeMetricFamily("dicom_node_studies", "Studies by processing state", labels=["state"])
            for study_state, n in session.execute(select(Study.state, func.count()).group_by(Study.state)):
                studies.add_metric([study_state.value], n)
            completed = CounterMetricFamily(
                "dicom_node_studies_completed", "Study completions (each generation: quiet, released or re-analysis)"
            )
            completed.add_metric([], float(session.scalar(select(func.coalesce(func.sum(Study.generation), 0))) or 0))
            jobs = GaugeMetricFamily("dicom_node_jobs", "Analysis jobs by state and model", labels=["state", "model"])
            for job_state, model, n in session.execute(
                select(Job.state, Job.model_name, func.count()).group_by(Job.state, Job.model_name)
            ):
                jobs.add_metric([job_state.value, model], n)
            workers = GaugeMetricFamily("dicom_node_workers_busy", "Workers holding a running job's lease")
            workers.add_metric([], float(session.scalar(
                select(func.count(func.distinct(Job.worker_id))).where(Job.state == JobState.RUNNING)) or 0))
            deliveries = GaugeMetricFamily(
                "dicom_node_deliveries", "Deliveries of output objects by state and destination",
                labels=["state", "destination"],
            )
            for delivery_state, dest, n in session.execute(
                select(Delivery.state, Delivery.destination, func.count()).group_by(Delivery.state, Delivery.destination)
            ):
                deliveries.add_metric([delivery_state.value, dest], n)
            outputs = CounterMetricFamily("dicom_node_outputs", "Output objects written (SR, overlay, SEG)",
                                          labels=["kind"])
            for kind, n in session.execute(select(Output.kind, func.count()).group_by(Output.kind)):
                outputs.add_metric([kind], n)
            alerts = GaugeMetricFamily("dicom_node_notifications", "Critical-finding alerts by state and target",
                                       labels=["state", "target"])
            for alert_state, target, n in session.execute(
                select(Notification.state, Notification.target, func.count())
                .group_by(Notification.state, Notification.target)
            ):
                alerts.add_metric([alert_state.value, target], n)
            new = [tuple(row) for row in session.execute(
                select(Result.id, Result.model_name, Result.created_at, Study.completed_at)
                .join(Study, Study.id == Result.study_id)
                .where(Result.id > self._last_result_id)
                .order_by(Result.id)
            )]
        self._add_results(new)
        models = GaugeMetricFamily("dicom_node_model_enabled", "Models enabled in the configuration",
                                   labels=["model", "version"])
        for setting in self.config().models.enabled:
            models.add_metric([setting.name, setting.version], 1.0 if setting.enabled else 0.0)
        yield from (studies, completed, jobs, workers, deliveries, outputs, alerts, models, self._ttr_metric())

    def _add_results(self, rows: list[tuple[Any, ...]]) -> None:
        with self._lock:
            for result_id, model, created, completed in rows:
                self._last_result_id = max(self._last_result_id, result_id)
                if completed is None:
                    continue
                seconds = max(0.0, (created - completed).total_seconds())
                counts = self._ttr_counts.setdefault(model, [0] * (len(RESULT_BUCKETS) + 1))
                for i, bound in enumerate(RESULT_BUCKETS):
                    if seconds <= bound:
                        counts[i] += 1
                counts[-1] += 1
                self._ttr_sum[model] = self._ttr_sum.get(model, 0.0) + seconds

    def _ttr_metric(self) -> Metric:
        family = HistogramMetricFamily(
            "dicom_node_time_to_result_seconds",
            "Study complete (association released or quiet) to result stored, per model (since this process started)",
            labels=["model"],
        )
        with self._lock:
            for model, counts in sorted(self._ttr_counts.items()):
                buckets = [(repr(float(b)), float(c)) for b, c in zip(RESULT_BUCKETS, counts, strict=False)]
                buckets.append(("+Inf", float(counts[-1])))
                family.add_metric([model], buckets, sum_value=self._ttr_sum[model])
        return family

    def _disk(self) -> Iterator[Metric]:
        storage = self.config().storage
        free = GaugeMetricFamily("dicom_node_disk_free_bytes", "Free space where received instances are stored")
        watermark = GaugeMetricFamily("dicom_node_disk_min_free_bytes",
                                      "storage.min_free_mb: below it new associations are refused")
        try:
            free.add_metric([], float(shutil.disk_usage(storage.path).free))
        except OSError:
            return
        watermark.add_metric([], float(storage.min_free_mb) * 1024 * 1024)
        yield free
        yield watermark


def node_registry(db: Database, config: Callable[[], Config]) -> tuple[CollectorRegistry, ReceiverMetrics]:
    """A registry of its own (not prometheus_client's global one) with both sources registered."""
    registry = CollectorRegistry(auto_describe=False)
    receiver = ReceiverMetrics(registry)
    registry.register(DatabaseCollector(db, config))
    return registry, receiver
