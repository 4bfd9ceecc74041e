"""`reports evaluate`: the labeller on a labelled folder -> metrics.json, ROC/PR curves, a table.

Per label: AUROC with a bootstrap 95 % CI (resampling reports, i.e. studies), sensitivity, specificity,
PPV, F1 and accuracy at the manifest threshold, log loss, counts - the same figures and curve files as
the image models' `evaluate` (`dicom_node.ml.metrics`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dicom_node.ml.metrics import label_metrics, plot_curves
from dicom_node.textreports import LABELS
from dicom_node.textreports.files import read_labelled
from dicom_node.textreports.model import ReportLabeller


def _r(v: float) -> float | None:
    return None if math.isnan(v) else round(float(v), 6)


def evaluate_labeller(labeller: ReportLabeller, data: Path, out: Path, n_boot: int = 1000, seed: int = 0
                      ) -> dict[str, Any]:
    ids, texts, y = read_labelled(data)
    if not ids:
        raise ValueError(f"no labelled reports in {data}")
    p = labeller.probabilities(texts)
    verdict = labeller.verdicts(p)
    out.mkdir(parents=True, exist_ok=True)
    m = labeller.manifest
    result: dict[str, Any] = {
        "model": {"name": m.name, "version": m.version, "task": "report-labels", "synthetic_demo": m.synthetic_demo,
                  "manifest_sha256": m.sha256},
        "data": str(data), "level": "report", "n_reports": len(ids), "labels": {},
    }
    for j, label in enumerate(LABELS):
        yj, pj, vj = y[:, j], p[:, j], verdict[:, j].astype(bool)
        metrics = label_metrics(yj, pj, float(labeller.thresholds[j]), n_boot, seed)
        tp = int((vj & (yj > 0)).sum())
        metrics["ppv"] = _r(tp / vj.sum()) if vj.sum() else None
        metrics["f1"] = _r(2 * tp / (vj.sum() + (yj > 0).sum())) if vj.sum() + (yj > 0).sum() else None
        metrics["accuracy"] = _r(float((vj == (yj > 0)).mean()))
        result["labels"][label] = metrics
        plot_curves(yj, pj, label, out, f"{m.name} {m.version} (reports)")
    result["all_labels_correct"] = _r(float((verdict == y.astype(np.int8)).all(axis=1).mean()))
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def format_table(result: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        return "  n/a" if v is None else f"{v:.3f}"

    lines = [(f"{result['model']['name']} {result['model']['version']} on {result['data']} "
             f"({result['n_reports']} reports)"),
             f"{'label':<27}{'AUROC':>7}  {'95% CI':<15}{'sens':>7}{'spec':>7}{'F1':>7}{'acc':>7}{'thr':>7}{'pos/n':>11}"]
    for label, m in result["labels"].items():
        ci = f"[{f(m['auroc_ci'][0])}, {f(m['auroc_ci'][1])}]"
        lines.append(f"{label:<27}{f(m['auroc']):>7}  {ci:<15}{f(m['sensitivity']):>7}{f(m['specificity']):>7}"
                     f"{f(m['f1']):>7}{f(m['accuracy']):>7}{m['threshold']:>7.3f}"
                     f"{str(m['n_positive']) + '/' + str(m['n']):>11}")
    lines.append(f"all 16 labels right: {f(result['all_labels_correct'])} of reports")
    if result["model"].get("synthetic_demo"):
        lines.append("synthetic-demo model: trained on generated reports")
    return "\n".join(lines)
