"""`dicom-node retry --config FILE [--deliveries] [--jobs] [--notifications] [--study UID]`: re-queue
what failed.

Without --deliveries, --jobs or --notifications, all three are retried. Failed deliveries and
critical-finding alerts get a fresh max-age window; failed jobs of each study's current generation are
queued again with their attempts reset.
"""

from __future__ import annotations

import argparse

from dicom_node.commands import load_config_or_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config.toml", help="configuration file (default config.toml)")
    parser.add_argument("--deliveries", action="store_true", help="retry failed deliveries")
    parser.add_argument("--jobs", action="store_true", help="retry failed analysis jobs")
    parser.add_argument("--notifications", action="store_true", help="retry failed critical-finding alerts")
    parser.add_argument("--study", default=None, metavar="UID", help="only this Study Instance UID")


def run(args: argparse.Namespace) -> int:
    config = load_config_or_report(args.config)
    if config is None:
        return 1
    from dicom_node.db.engine import Database
    from dicom_node.delivery import state
    from dicom_node.jobs import queue as jobs
    from dicom_node.notify import state as notify_state

    every = not (args.deliveries or args.jobs or args.notifications)
    db = Database(config.database_url)
    try:
        with db.write() as session:
            n_deliveries = state.retry_failed(session, args.study) if (every or args.deliveries) else 0
            n_jobs = jobs.retry_failed(session, args.study) if (every or args.jobs) else 0
            n_alerts = notify_state.retry_failed(session, args.study) if (every or args.notifications) else 0
    finally:
        db.dispose()
    print(f"re-queued {n_deliveries} deliveries and {n_jobs} jobs")
    if n_alerts:
        print(f"re-queued {n_alerts} critical-finding alerts")
    return 0
