"""What `dicom-node serve` runs, wired together: the receiver and assembler (`Node`), the job queue
behind the assembler, the sender, the critical-finding notifier, lease and retention housekeeping, and
one local worker process.

The serve process never imports torch: it reads which modalities each enabled model reads from the
model's `manifest.json`, and the models themselves load in the worker process.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sqlalchemy.orm import Session

from dicom_node import jobs
from dicom_node.config import Config
from dicom_node.db.schema import Study
from dicom_node.delivery.sender import Sender
from dicom_node.errors import ModelError
from dicom_node.node import Node
from dicom_node.notify.sender import Notifier
from dicom_node.retention import Retention
from dicom_node.worker_process import WorkerProcess

log = logging.getLogger(__name__)


def model_modalities(config: Config) -> list[tuple[str, frozenset[str]]]:
    """(name, modalities) of every enabled model, from its manifest; refuses a model that is not there."""
    found: list[tuple[str, frozenset[str]]] = []
    for setting in config.models.enabled:
        if not setting.enabled:
            continue
        manifest = config.models.path / setting.name / setting.version / "manifest.json"
        try:
            data = json.loads(manifest.read_text())
            modality = str(data["input"]["modality"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"model {setting.name} {setting.version}: cannot read {manifest}: {exc}") from exc
        found.append((setting.name, frozenset({modality})))
    return found


def build_node(config: Config, *, log_level: str = "INFO", local_worker: bool = True) -> Node:
    """The whole node of `serve`: receiver + assembler → jobs, sender, housekeeping, local worker."""
    models = model_modalities(config)

    def on_complete(session: Session, study: Study) -> None:
        jobs.enqueue_for_study(session, study, config, models)

    node = Node(config, on_complete=on_complete)
    lease_check = max(1.0, min(30.0, config.worker.lease_seconds / 4))
    node.scheduler.add_job(
        jobs.requeue_expired, "interval", seconds=lease_check, args=[node.db], id="requeue-expired",
        max_instances=1, coalesce=True,
    )
    retention = Retention(config, node.db)
    if config.retention.delete_after_days > 0:
        node.scheduler.add_job(
            retention.run_once, "interval", minutes=10, id="retention", max_instances=1, coalesce=True
        )
    node.add_service(Sender(config, node.db))
    node.add_service(Notifier(config, node.db))
    if local_worker:
        if config.source is None:
            raise ValueError("a local worker process needs the config file's path")
        node.add_service(WorkerProcess(Path(config.source), log_level=log_level))
    return node
