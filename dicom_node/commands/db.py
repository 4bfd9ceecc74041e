"""`dicom-node db upgrade|current --config FILE`: the database's schema revision (Alembic, `db/migrations.py`).

`upgrade` brings the database to this release's head, as every start of `serve` and `worker` does, and says
from what; `current` prints the revision the database is at without changing anything. A database made by a
newer release is refused in one line (exit status 1) by both.
"""

from __future__ import annotations

import argparse

from dicom_node.commands import load_config_or_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("upgrade", "current"), help="upgrade the schema, or print its revision")
    parser.add_argument("--config", default="config.toml", help="configuration file (default config.toml)")


def run(args: argparse.Namespace) -> int:
    config = load_config_or_report(args.config)
    if config is None:
        return 1
    from dicom_node.db import migrations
    from dicom_node.db.engine import Database

    db = Database(config.database_url, upgrade=False)
    try:
        if args.action == "current":
            with db.engine.connect() as conn:
                found = migrations.inspect_schema(conn)
            print(found.describe())
            found.refuse_if_newer()
            return 0
        found, now = migrations.upgrade(db)
    finally:
        db.dispose()
    if found.at_head:
        print(f"database schema already at {now} (head)")
    else:
        print(f"database schema upgraded to {now} (head), from {found.what()}")
    return 0
