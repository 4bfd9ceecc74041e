"""`reports export-labels`: a training folder for `dicom-node train`, from the studies the node holds and
the labels of their reports.

For `--model ich` every study with a CT series and a labelled current report; for `--model sih` every
study with an MR series. The folder holds:

- `labels.csv`: ICH study-level `StudyInstanceUID,any,epidural,intraparenchymal,intraventricular,
  subarachnoid,subdural` (`any` is the report's `hemorrhage`), which `train` reads by giving each slice its
  study's labels; SIH `StudyInstanceUID,sih`, the format `train` already reads;
- `reports.csv`: where each label came from (report ID and status, labeller name and version, the label
  probabilities) - no patient identifiers;
- the studies' DICOM files under `<study>/<series>/`, as symbolic links into the store (`--files link`,
  the default), copies (`copy`), or not at all (`none`: point `train --data` elsewhere).

Studies whose pixel data retention has deleted are left out, and counted.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from dicom_node.config import Config
from dicom_node.db.engine import Database
from dicom_node.db.schema import Instance, Series, Study
from dicom_node.receiver.store import sanitise_uid
from dicom_node.textreports import store
from dicom_node.textreports.model import ReportLabeller
from dicom_node.textreports.service import label_pending

log = logging.getLogger(__name__)

TASKS = {
    "ich": ("CT", {"any": "hemorrhage", "epidural": "epidural", "intraparenchymal": "intraparenchymal",
                   "intraventricular": "intraventricular", "subarachnoid": "subarachnoid", "subdural": "subdural"}),
    "sih": ("MR", {"sih": "sih"}),
}
FILE_MODES = ("link", "copy", "none")


@dataclass
class ExportResult:
    studies: int = 0
    files: int = 0
    without_report: int = 0
    pixels_deleted: int = 0
    positives: dict[str, int] = field(default_factory=dict)


def export_labels(config: Config, db: Database, labeller: ReportLabeller, out: Path, task: str,
                  files: str = "link") -> ExportResult:
    if task not in TASKS or files not in FILE_MODES:
        raise ValueError(f"task must be one of {sorted(TASKS)} and files one of {FILE_MODES}")
    modality, mapping = TASKS[task]
    label_pending(db, labeller)
    result = ExportResult(positives=dict.fromkeys(mapping, 0))
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[Study, list[int], dict[str, object]]] = []
    with db.read() as session:
        studies = list(session.scalars(select(Study).where(Study.id.in_(
            select(Series.study_id).where(Series.modality == modality))).order_by(Study.id)))
        reports = store.current_reports(session, studies)
        labels = store.labels_for(session, (r.id for r in reports.values()), labeller.name, labeller.version)
        for study in studies:
            report = reports.get(study.id)
            if report is None or report.id not in labels:
                result.without_report += 1
                continue
            if study.pixels_deleted_at is not None:
                result.pixels_deleted += 1
                continue
            positive = set(labels[report.id].positive)
            values = [int(mapping[k] in positive) for k in mapping]
            provenance = {"report_id": report.id, "status": report.status, "labeller": labeller.name,
                          "labeller_version": labeller.version,
                          **{f"{k}_p": labels[report.id].probabilities.get(v, 0.0) for k, v in mapping.items()}}
            rows.append((study, values, provenance))
            if files != "none":
                instances = session.execute(
                    select(Instance.path, Series.series_uid, Instance.sop_instance_uid)
                    .join(Series, Series.id == Instance.series_id).where(Instance.study_id == study.id)).all()
                for path, series_uid, sop in instances:
                    target = out / sanitise_uid(study.study_uid) / sanitise_uid(series_uid) / f"{sanitise_uid(sop)}.dcm"
                    _place(config.storage.path / path, target, files)
                    result.files += 1
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["StudyInstanceUID", *mapping])
        for study, values, _ in rows:
            w.writerow([study.study_uid, *values])
            for k, v in zip(mapping, values, strict=True):
                result.positives[k] += v
    with open(out / "reports.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        header = ["StudyInstanceUID", *rows[0][2]] if rows else ["StudyInstanceUID"]
        w.writerow(header)
        for study, _, provenance in rows:
            w.writerow([study.study_uid, *provenance.values()])
    result.studies = len(rows)
    log.info("training labels exported", extra={"task": task, "studies": result.studies, "files": result.files,
                                                "without_report": result.without_report})
    return result


def _place(source: Path, target: Path, mode: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    if mode == "copy":
        shutil.copy2(source, target)
    else:
        os.symlink(source.resolve(), target)
