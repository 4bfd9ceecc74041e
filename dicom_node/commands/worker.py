"""`dicom-node worker --config FILE`: one inference worker against the shared database and store."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from dicom_node.commands import load_config_or_report
from dicom_node.errors import ModelError
from dicom_node.runtime.extras import install_hint, missing_extra
from dicom_node.runtime.worker_process import EXIT_CANNOT_LOAD_MODELS, die_with_parent

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config.toml", help="configuration file (default config.toml)")
    parser.add_argument(
        "--id", default=None, help="worker id recorded on claimed jobs (default host:pid:random)"
    )


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("stopping worker", extra={"signal": signal.Signals(signum).name})
        stop.set()

    # first thing: a SIGTERM while models load must still end the worker cleanly
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    die_with_parent()
    config = load_config_or_report(args.config)
    if config is None:
        return 1

    from dicom_node.db.engine import Database
    from dicom_node.jobs.worker import Worker

    db = Database(config.database_url)
    try:
        worker = Worker(config, db, worker_id=args.id)
    except ModelError as exc:
        print(f"cannot load models: {exc}", file=sys.stderr)
        return EXIT_CANNOT_LOAD_MODELS
    except ModuleNotFoundError as exc:  # installed without the [worker] extra: restarting will not help
        if missing_extra(exc, "worker") is None:
            raise
        print(install_hint("worker", "worker"), file=sys.stderr)
        return EXIT_CANNOT_LOAD_MODELS
    try:
        worker.run_forever(stop)
    finally:
        db.dispose()
    return 0
