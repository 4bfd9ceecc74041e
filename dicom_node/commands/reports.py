"""`dicom-node reports …`: radiology reports - import, label, train, evaluate, export-labels, monitor, list.

    reports import FILE --config CFG            CSV/JSONL reports from the RIS into the node's database
    reports label --in FILE --out labels.csv    label reports (`id,text` CSV or JSONL), no database
    reports train --data DIR --out DIR          train the labeller (DIR: reports.csv + labels.csv)
    reports evaluate --data DIR --out DIR       metrics.json, ROC/PR curves, table
    reports export-labels --config CFG --model ich|sih --out DIR   training folder for `dicom-node train`
    reports monitor --config CFG [--json]       AI vs the final reports, per model version and label
    reports list --config CFG [--json]          stored reports, their matches, and refused messages
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def model_args(p: argparse.ArgumentParser, flag: str = "--model") -> None:
        p.add_argument(flag, dest="labeller", default="report-labels", help="labeller model name (default report-labels)")
        p.add_argument("--version", default="", help="labeller version (default: the newest)")
        p.add_argument("--models-dir", type=Path, default=None,
                       help="models folder (default: the config's models.path, else ./models)")

    p = sub.add_parser("import", help="store reports from a CSV/JSONL export")
    p.add_argument("file", type=Path)
    p.add_argument("--config", required=True)

    p = sub.add_parser("label", help="label reports: CSV id,text (or JSONL) -> CSV with 0/1 and _p per label")
    p.add_argument("--in", dest="input", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    model_args(p)

    p = sub.add_parser("train", help="train the labeller on reports.csv + labels.csv")
    p.add_argument("--data", required=True, type=Path, help="folder with reports.csv (or .jsonl) and labels.csv")
    p.add_argument("--out", required=True, type=Path, help="model folder, e.g. models/report-labels/0.2.0")
    p.add_argument("--name", default="", help="model name (default: the folder's parent name)")
    p.add_argument("--version", default="", help="model version (default: the folder's name)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--hidden", type=int, default=0, help="hidden units per sentence part (0: linear, the default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--synthetic-demo", action="store_true", help="tag the model as trained on generated reports")
    p.add_argument("--training-data", default="", help="description of the training data for the manifest")

    p = sub.add_parser("evaluate", help="metrics.json and ROC/PR curves on labelled reports")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--record", action="store_true", help="also record the figures in the model's manifest.json")
    model_args(p)

    p = sub.add_parser("export-labels", help="a training folder (DICOM + labels.csv) from reports")
    p.add_argument("--config", required=True)
    p.add_argument("--model", required=True, choices=["ich", "sih"], help="the image model to train")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--files", default="link", choices=["link", "copy", "none"],
                   help="DICOM files: symbolic links into the store (default), copies, or none")
    model_args(p, "--labeller")

    p = sub.add_parser("monitor", help="AI verdicts vs the final reports")
    p.add_argument("--config", required=True)
    p.add_argument("--days", type=float, default=None, help="window (default [reports] window_days)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--discordant", type=int, default=20, help="discordant studies listed per label (text output)")

    p = sub.add_parser("list", help="stored reports with their studies, and refused messages")
    p.add_argument("--config", required=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=50)


def run(args: argparse.Namespace) -> int:
    from dicom_node.errors import ModelError

    handler = {"import": _import, "label": _label, "train": _train, "evaluate": _evaluate,
               "export-labels": _export, "monitor": _monitor, "list": _list}[args.action]
    try:
        return handler(args)
    except (ModelError, ValueError, TypeError, OSError) as exc:
        print(f"reports {args.action}: {exc}", file=sys.stderr)
        return 1


def _config(args: argparse.Namespace) -> Any:
    from dicom_node.commands import load_config_or_report

    return load_config_or_report(args.config)


def _labeller(args: argparse.Namespace, config: Any = None) -> Any:
    from dicom_node.textreports.model import load_labeller

    models = args.models_dir or (config.models.path if config is not None else Path("models"))
    name = args.labeller if args.labeller != "report-labels" or config is None else config.reports.model
    version = args.version or (config.reports.version if config is not None and name == config.reports.model else "")
    return load_labeller(models, name, version)


def _import(args: argparse.Namespace) -> int:
    from dicom_node.db.engine import Database
    from dicom_node.textreports.importer import import_file

    config = _config(args)
    if config is None:
        return 2
    db = Database(config.database_url)
    try:
        result = import_file(db, args.file)
    finally:
        db.dispose()
    print(f"{result.imported} reports imported, {result.repeated} already stored, {len(result.rejected)} refused")
    for line, reason in result.rejected[:20]:
        print(f"  {args.file.name}:{line}: {reason}")
    return 1 if result.rejected else 0


def _label(args: argparse.Namespace) -> int:
    import time

    from dicom_node.textreports.files import read_texts, write_labels

    labeller = _labeller(args)
    ids, texts = read_texts(args.input)
    start = time.perf_counter()
    probs = labeller.probabilities(texts)
    elapsed = time.perf_counter() - start
    write_labels(args.out, ids, probs, labeller.verdicts(probs))
    demo = " (synthetic-demo model)" if labeller.manifest.synthetic_demo else ""
    print(f"{len(ids)} reports labelled by {labeller.name} {labeller.version}{demo} in {elapsed:.1f} s, "
          f"written to {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch

    from dicom_node.textreports.files import read_labelled
    from dicom_node.textreports.training import LabellerOptions, train_labeller

    torch.set_num_threads(max(1, args.threads))
    out = args.out.resolve()
    _, texts, y = read_labelled(args.data)
    opts = LabellerOptions(out=out, name=args.name or out.parent.name, version=args.version or out.name,
                           epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                           hidden=args.hidden,
                           val_fraction=args.val_fraction, synthetic_demo=args.synthetic_demo,
                           training_data=args.training_data or f"{len(texts)} reports from {args.data}")
    folder = train_labeller(texts, y, opts)
    print(f"model written to {folder} (name {opts.name}, version {opts.version})")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dicom_node.textreports.evaluation import evaluate_labeller, format_table

    labeller = _labeller(args)
    result = evaluate_labeller(labeller, args.data, args.out, args.bootstrap, args.seed)
    print(format_table(result))
    print(f"metrics and curves written to {args.out}")
    if args.record:
        path = labeller.manifest.folder / "manifest.json"
        manifest = json.loads(path.read_text())
        keep = ("auroc", "auroc_ci", "sensitivity", "specificity", "f1", "accuracy", "log_loss", "threshold", "n",
                "n_positive")
        manifest["metrics"] = {"held_out_data": str(args.data), "level": "report",
                               "labels": {k: {m: v[m] for m in keep} for k, v in result["labels"].items()}}
        path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        print(f"metrics recorded in {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from dicom_node.db.engine import Database
    from dicom_node.textreports.export import export_labels

    config = _config(args)
    if config is None:
        return 2
    labeller = _labeller(args, config)
    db = Database(config.database_url)
    try:
        result = export_labels(config, db, labeller, args.out, args.model, args.files)
    finally:
        db.dispose()
    positives = ", ".join(f"{k} {v}" for k, v in result.positives.items())
    print(f"{result.studies} studies exported to {args.out} ({result.files} files; positives: {positives}); "
          f"{result.without_report} without a labelled report, {result.pixels_deleted} with pixel data deleted")
    print(f"train with: dicom-node train --model {args.model} --data {args.out} --out models/{args.model}/<version>")
    return 0 if result.studies else 1


def _monitor(args: argparse.Namespace) -> int:
    from dicom_node.db.engine import Database
    from dicom_node.textreports import monitor
    from dicom_node.textreports.model import load_labeller
    from dicom_node.textreports.service import label_pending

    config = _config(args)
    if config is None:
        return 2
    labeller = load_labeller(config.models.path, config.reports.model, config.reports.version)
    days = args.days if args.days is not None else config.reports.window_days
    db = Database(config.database_url)
    try:
        label_pending(db, labeller)
        since, until = monitor.window(days)
        with db.read() as session:
            found = monitor.agreement(session, labeller.name, labeller.version, since, until)
            alerts = [{"model": a.model_name, "version": a.model_version, "label": a.label, "metric": a.metric,
                       "value": round(a.value, 4), "floor": a.floor, "cases": a.cases, "webhook": a.state.value,
                       "since": a.created_at.isoformat(timespec="seconds")} for a in monitor.open_alerts(session)]
    finally:
        db.dispose()
    doc = {"window_days": days, "since": since.isoformat(timespec="seconds"),
           "until": until.isoformat(timespec="seconds"), "labeller": {"name": labeller.name,
                                                                      "version": labeller.version},
           "agreement": [a.to_json() for a in found], "open_alerts": alerts}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"AI vs final reports, {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC "
          f"(report labels: {labeller.name} {labeller.version})")
    if not found:
        print("no study has both an AI result and a labelled report in this window")
    for a in found:
        j = a.to_json()
        print(f"{a.model} {a.version} {a.label} (report: {a.report_label}): n={a.n} TP={a.tp} FP={a.fp} FN={a.fn} "
              f"TN={a.tn}")
        for metric in ("sensitivity", "specificity", "ppv", "npv"):
            value, ci = j[metric], j[f"{metric}_ci"]
            shown = "n/a" if value is None else f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
            print(f"    {metric:<12}{shown}")
        for d in a.discordant[: args.discordant]:
            print(f"    review: {d['kind']:<28} study {d['study_uid']} accession {d['accession_number']} "
                  f"AI p={d['ai_probability']:.3f} report p={d['report_probability']:.3f}")
    for alert in alerts:
        print(f"ALERT {alert['model']} {alert['version']} {alert['label']} {alert['metric']} {alert['value']:.3f} "
              f"below {alert['floor']:.3f} (n={alert['cases']}, since {alert['since']}, webhook {alert['webhook']})")
    return 0


def _list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from dicom_node.db.engine import Database
    from dicom_node.db.schema import RadiologyReport, ReportRejection
    from dicom_node.runtime.safe_text import clean
    from dicom_node.textreports import store

    config = _config(args)
    if config is None:
        return 2
    db = Database(config.database_url)
    try:
        with db.read() as session:
            reports = list(session.scalars(select(RadiologyReport).order_by(RadiologyReport.id.desc())
                                           .limit(args.limit)))
            rows: list[dict[str, Any]] = [{"id": r.id, "source": r.source, "accession_number": r.accession_number, "study_uid": r.study_uid,
                     "status": r.status, "received_at": r.received_at.isoformat(timespec="seconds"),
                     "superseded_by": r.superseded_by,
                     "studies": [s.study_uid for s in store.studies_for(session, r)]} for r in reports]
            refused = [{"id": x.id, "received_at": x.received_at.isoformat(timespec="seconds"), "source": x.source,
                        "control_id": x.control_id, "reason": x.reason}
                       for x in session.scalars(select(ReportRejection).order_by(ReportRejection.id.desc())
                                                .limit(args.limit))]
    finally:
        db.dispose()
    if args.json:
        print(json.dumps({"reports": rows, "rejections": refused}, indent=2))
        return 0
    print(f"{'ID':>6}  {'RECEIVED':<19}  {'SRC':<6} {'ST':<2} {'ACCESSION':<16} {'STATE':<16} STUDY")
    for r in rows:
        state = f"superseded by {r['superseded_by']}" if r["superseded_by"] else "current"
        study = ", ".join(r["studies"]) or f"(waiting for {r['study_uid'] or r['accession_number']})"
        print(f"{r['id']:>6}  {r['received_at']:<19}  {r['source']:<6} {r['status']:<2} "
              f"{clean(r['accession_number'], 16):<16} {state:<16} {clean(study, 120)}")
    if refused:
        print("refused:")
        for x in refused:
            print(f"  {x['id']:>5}  {x['received_at']}  {clean(x['source'], 40)}  {clean(x['control_id'], 20)}: "
                  f"{clean(x['reason'], 160)}")
    return 0
