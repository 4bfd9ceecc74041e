"""What `serve` needs beyond a well-formed config: models that load, storage it can write, a database it
can open, ports it can bind. One line per problem, naming the key, for `config check` and `serve`.

`config.py` checks the file's shape and values; this module checks them against the machine. Where `serve`
runs a local worker (`[worker] local`), models are loaded exactly as a worker loads them (`ml.registry.load_pipeline`, on the CPU), so a model name or
version that does not exist, a manifest or weight file whose checksum is wrong and a threshold override
for a label the model lacks are all refused here instead of in a worker restart loop.
"""

from __future__ import annotations

import errno
import logging
import socket
import uuid
from pathlib import Path

from dicom_node.config import Config
from dicom_node.runtime.extras import missing_extra


def problems(config: Config, ports: bool = False, local_worker: bool | None = None) -> list[str]:
    """Every problem found; `ports` also tries to bind the listening ports (for `serve`, not while a
    node is running on them). `local_worker` (default `[worker] local`): whether `serve` runs a worker
    here, which loads the models; without one, only the manifests the receiver reads are checked, and
    neither torch nor any other library of the [worker] extra is imported."""
    worker_here = config.worker.local if local_worker is None else local_worker
    models = _models(config) if worker_here else _manifests(config)
    found = _storage(config) + _database(config) + models + _report_labeller(config)
    if ports:
        found += _ports(config)
    return found


def _storage(config: Config) -> list[str]:
    found = []
    for key in ("path", "quarantine", "outbox"):
        folder = Path(getattr(config.storage, key))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".tmp-preflight-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            found.append(f"storage.{key}: cannot create and write {folder}: {exc.strerror or exc}")
    return found


def _database(config: Config) -> list[str]:
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from dicom_node.db.engine import Database

    try:
        db = Database(config.database_url)
    except (SQLAlchemyError, OSError, ValueError) as exc:
        return [f"database.url: cannot open the database: {type(exc).__name__}: {str(exc).splitlines()[0]}"]
    try:
        with db.read() as session:
            session.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        return [f"database.url: cannot open the database: {type(exc).__name__}: {str(exc).splitlines()[0]}"]
    finally:
        db.dispose()
    return []


def _models(config: Config) -> list[str]:
    enabled = [(i, s) for i, s in enumerate(config.models.enabled) if s.enabled]
    if not enabled:
        return []
    try:
        from dicom_node.errors import ModelError
        from dicom_node.ml.registry import load_pipelines
    except ModuleNotFoundError as exc:
        if missing_extra(exc, "worker") is None:
            raise
        return [(f"worker.local: the local worker needs the [worker] extra ({exc.name} is not installed): "
                 "pip install 'dicom-node[worker]', or set [worker] local = false where workers run elsewhere")]
    found = []
    quiet = logging.getLogger("dicom_node.ml")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # "model loaded" lines belong to a worker's start, not to a check
    for index, setting in enabled:
        one = config.replace(models=config.models.replace(enabled=(setting,)),
                             worker=config.worker.replace(device="cpu", torch_threads=1, batch_size=1))
        try:
            load_pipelines(one)  # exactly what a worker does, one model at a time, on the CPU
        except ModelError as exc:
            found.append(f"models.enabled[{index}] ({setting.name} {setting.version}): {exc}")
    quiet.setLevel(level)
    return found


def _manifests(config: Config) -> list[str]:
    """What a `serve` without a local worker needs of each enabled model: its manifest, read as JSON."""
    from dicom_node.errors import ModelError
    from dicom_node.runtime.services import model_modality

    found = []
    for index, setting in enumerate(config.models.enabled):
        if not setting.enabled:
            continue
        try:
            model_modality(config.models.path, setting)
        except ModelError as exc:
            found.append(f"models.enabled[{index}] ({setting.name} {setting.version}): {exc}")
    return found


def _report_labeller(config: Config) -> list[str]:
    """The report labeller, when reports are taken in (hl7_port) or monitored (a floor set)."""
    settings = config.reports
    if not (settings.hl7_port or settings.min_sensitivity or settings.min_specificity):
        return []
    from dicom_node.errors import ModelError
    from dicom_node.textreports.model import load_labeller

    try:
        load_labeller(config.models.path, settings.model, settings.version)
    except ModelError as exc:
        return [f"reports.model ({settings.model} {settings.version or 'newest'}): {exc}"]
    return []


def _ports(config: Config) -> list[str]:
    wanted = [("node.port", config.node.host, config.node.port)]
    if config.web.port:
        wanted.append(("web.port", config.web.host, config.web.port))
    if config.reports.hl7_port:
        wanted.append(("reports.hl7_port", config.reports.host, config.reports.hl7_port))
    found = []
    for key, host, port in wanted:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                reason = "already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
                found.append(f"{key}: cannot listen on {host}:{port}: {reason}")
    return found

