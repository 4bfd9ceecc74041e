"""What `dicom-node serve` runs, wired together: the receiver and assembler (`Node`), the job queue
behind the assembler, the sender, the critical-finding notifier, lease and retention housekeeping, one
local worker process, the audit trail of association requests and the dashboard (`[web]`).

Sender, notifier and local worker are `Restartable`: when the dashboard changes the configuration
(`Node.apply_config`), each one whose settings changed restarts on the new configuration.

The serve process never imports torch: it reads which modalities each enabled model reads from the
model's `manifest.json`, and the models themselves load in the worker process.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from dicom_node.config import Config, ModelSetting
from dicom_node.db.schema import Study
from dicom_node.delivery.sender import Sender
from dicom_node.errors import ModelError
from dicom_node.jobs import queue as jobs
from dicom_node.notify.sender import Notifier
from dicom_node.runtime.audit import AssociationAudit
from dicom_node.runtime.node import Node, Service
from dicom_node.runtime.worker_process import WorkerProcess
from dicom_node.studies.retention import Retention
from dicom_node.textreports.service import ReportsService

log = logging.getLogger(__name__)

TASK_MODALITY = {"ich-ct": "CT", "sih-mr": "MR", "cmb-swi": "MR"}


def model_modalities(config: Config) -> list[tuple[str, frozenset[str]]]:
    """(name, modalities) of every enabled model, from its manifest; refuses a model that is not there."""
    return [(setting.name, model_modality(config.models.path, setting))
            for setting in config.models.enabled if setting.enabled]


def model_modality(models_path: Path, setting: ModelSetting) -> frozenset[str]:
    """The modalities one model reads, from its manifest.json alone (no torch); ModelError if unreadable."""
    manifest = models_path / setting.name / setting.version / "manifest.json"
    try:
        data = json.loads(manifest.read_text())
        # an ensemble manifest names members instead of an input: its task says the modality
        modality = str(data["input"]["modality"] if "input" in data else TASK_MODALITY[data["task"]])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"model {setting.name} {setting.version}: cannot read {manifest}: {exc}") from exc
    return frozenset({modality})


class Restartable:
    """A service rebuilt from the configuration when the settings it reads change."""

    def __init__(self, make: Callable[[Config], Service], config: Config,
                 reads: Callable[[Config], object]) -> None:
        self.make, self.config, self.reads = make, config, reads
        self.service: Service | None = None

    def start(self) -> None:
        self.service = self.make(self.config)
        self.service.start()

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None

    def reconfigure(self, config: Config) -> None:
        changed = self.reads(config) != self.reads(self.config)
        self.config = config
        if changed and self.service is not None:
            log.info("restarting on the new configuration", extra={"service": type(self.service).__name__})
            self.stop()
            self.start()


def build_node(config: Config, *, log_level: str = "INFO", local_worker: bool = True) -> Node:
    """The whole node of `serve`: receiver + assembler → jobs, sender, housekeeping, local worker."""
    models = model_modalities(config)

    def on_complete(session: Session, study: Study) -> None:
        jobs.enqueue_for_study(session, study, config, models)

    node = Node(config, on_complete=on_complete)
    lease_check = max(1.0, min(30.0, config.worker.lease_seconds / 4))
    node.scheduler.add_job(
        jobs.requeue_expired, "interval", seconds=lease_check, args=[node.db],
        kwargs={"max_lease_expiries": config.worker.max_lease_expiries}, id="requeue-expired",
        max_instances=1, coalesce=True,
    )
    retention = Retention(config, node.db)
    if config.retention.delete_after_days > 0:
        node.scheduler.add_job(
            retention.run_once, "interval", minutes=10, id="retention", max_instances=1, coalesce=True
        )
    node.receiver_observers.append(AssociationAudit(node.db))
    node.add_service(Restartable(lambda c: Sender(c, node.db), config, lambda c: (c.destinations, c.delivery)))
    node.add_service(Restartable(lambda c: Notifier(c, node.db), config, lambda c: (c.notifications, c.delivery)))
    # radiology reports: HL7 listener, labelling, AI-vs-report monitoring (numpy labeller, no torch here)
    node.add_service(Restartable(lambda c: ReportsService(c, node.db), config,
                                 lambda c: (c.reports, c.delivery, c.models.path)))
    worker: Restartable | None = None
    if local_worker:
        if config.source is None:
            raise ValueError("a local worker process needs the config file's path")
        source = Path(config.source)
        # the worker reads the file itself: models and thresholds, destinations (delivery rows), alerts
        worker = Restartable(lambda c: WorkerProcess(source, log_level=log_level), config,
                             lambda c: (c.models, c.destinations, c.notifications, c.worker))
        node.add_service(worker)
    if config.web.port:
        from dicom_node.web.server import WebService

        node.add_service(WebService(node, worker_alive=(lambda: _alive(worker)) if worker is not None else None))
    return node


def _alive(worker: Restartable) -> bool:
    process = getattr(worker.service, "process", None)
    return process is not None and process.poll() is None
