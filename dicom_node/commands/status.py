"""`dicom-node status --config FILE [--json]`: per study, who and when (accession, patient ID, received),
state and priority, what each model made of it (with the reason when it was not analysed or failed),
deliveries and critical-finding alerts.

The table has one row per study; under a row, one indented line per problem (a model that did not
analyse the study, a delivery or alert that failed or is being retried) with its reason. `--json` gives
the same as a list of objects. Values from DICOM headers are escaped (`safe_text.clean`): a value with a
newline stays on its line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dicom_node.commands import load_config_or_report

# The study's processing state in words an operator reads without the schema at hand.
_STAGE = {"receiving": "receiving", "complete": "analysing", "analysed": "sending", "delivered": "delivered"}
_MODEL_STATE = {"not_analysed": "not analysed"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config.toml", help="configuration file (default config.toml)")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per study")
    parser.add_argument("--limit", type=int, default=None, help="only the N most recently received studies")


def run(args: argparse.Namespace) -> int:
    config = load_config_or_report(args.config)
    if config is None:
        return 1
    from dicom_node.db.engine import Database
    from dicom_node.studies.status import study_status

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


def _model_cell(m: dict[str, Any]) -> str:
    if m["state"] == "analysed":
        return f"{m['model']}:" + (",".join(str(p["label"]) for p in m["present"]) or "none")
    return f"{m['model']}:{_MODEL_STATE.get(m['state'], m['state'])}"


def _problems(s: dict[str, Any]) -> list[str]:
    """One line per thing an operator may need to act on, with its reason."""
    lines = []
    for m in s["models"]:
        if m["state"] != "analysed" and m["reason"]:
            what = _MODEL_STATE.get(m["state"], m["state"])
            retry = f" (attempt {m['attempts']}, will retry)" if m["state"] in ("queued", "running") else ""
            lines.append(f"{m['model']}: {what}{retry}: {m['reason']}")
    for d in s["delivery_problems"]:
        when = "failed" if d["state"] == "failed" else f"retrying after {d['attempts']} attempts"
        lines.append(f"delivery to {d['destination']} ({d['objects']} objects): {when}: {d['reason']}")
    for target, n in sorted(s["notifications"].items()):
        if n["state"] != "sent" and n["last_error"]:
            when = "failed" if n["state"] == "failed" else f"retrying after {n['attempts']} attempts"
            lines.append(f"{target} alert: {when}: {n['last_error']}")
    return lines


def _table(studies: list[dict[str, Any]]) -> str:
    header = (
        "RECEIVED", "ACCESSION", "PATIENT ID", "PRIO", "STATE", "SERIES", "INST", "MODELS", "DELIVERIES",
        "ALERTS", "STUDY INSTANCE UID",
    )
    rows = [
        (
            (s["first_received_at"] or "-").replace("T", " "),
            s["accession_number"] or "-",
            s["patient_id"] or "-",
            s["priority"],
            _STAGE.get(s["state"], s["state"]),
            str(s["series"]),
            str(s["instances"]),
            " ".join(_model_cell(m) for m in s["models"]) or "-",
            _summary(s["deliveries"]),
            " ".join(f"{t}:{n['state']}" for t, n in sorted(s["notifications"].items())) or "-",
            s["study_uid"],
        )
        for s in studies
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()

    lines = [line(header)]
    for row, s in zip(rows, studies, strict=True):
        lines.append(line(row))
        lines.extend(f"    {p}" for p in _problems(s))
    if not rows:
        lines.append("(no studies)")
    return "\n".join(lines) + "\n"
