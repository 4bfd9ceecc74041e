"""`dicom-node status --config FILE [--json]`: studies with state, counts, findings and deliveries."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dicom_node.commands import load_config_or_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config.toml", help="configuration file (default config.toml)")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per study")
    parser.add_argument("--limit", type=int, default=None, help="only the N most recently received studies")


def run(args: argparse.Namespace) -> int:
    config = load_config_or_report(args.config)
    if config is None:
        return 1
    from dicom_node.db.engine import Database
    from dicom_node.status import study_status

    db = Database(config.database_url)
    try:
        studies = study_status(db, limit=args.limit)
    finally:
        db.dispose()
    if args.json:
        json.dump(studies, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(_table(studies))
    return 0


def _summary(counts: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(counts.items())) or "-"


def _findings(items: list[dict[str, Any]]) -> str:
    parts = []
    for f in items:
        labels = ",".join(str(p["label"]) for p in f["present"]) or ("none" if f["status"] == "analysed" else f["status"])
        parts.append(f"{f['model']}:{labels}")
    return " ".join(parts) or "-"


def _table(studies: list[dict[str, Any]]) -> str:
    header = (
        "STUDY INSTANCE UID", "STATE", "GEN", "PRIO", "SERIES", "INST", "JOBS", "FINDINGS", "DELIVERIES", "ALERTS"
    )
    rows = [
        (
            s["study_uid"],
            s["state"],
            str(s["generation"]),
            s["priority"],
            str(s["series"]),
            str(s["instances"]),
            _summary(s["jobs"]),
            _findings(s["findings"]),
            _summary(s["deliveries"]),
            " ".join(f"{t}:{n['state']}" for t, n in sorted(s["notifications"].items())) or "-",
        )
        for s in studies
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    if not rows:
        lines.append("(no studies)")
    return "\n".join(lines) + "\n"
