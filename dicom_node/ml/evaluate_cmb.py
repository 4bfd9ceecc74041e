"""Evaluation of a microbleed model on a labelled folder (`dicom-node evaluate --model cmb`).

Per study the pipeline's own steps run (selection, reading, detection, merging, location, FLAIR extent,
class) at the manifest's threshold, and the reported bleeds are matched to the ground-truth SEG (`cmb_metrics`). Written
to metrics.json: bleed detection and segmentation (IoU, Dice, recall per bleed and per study, false bleeds
per study, count error), lobar/deep agreement of the matched bleeds, the class (weighted-average AUC,
accuracy, weighted F1 with study-bootstrap 95 % CIs, confusion matrix) and, under `labels`, one-vs-rest
figures per class and for "microbleeds" (any bleed; probability: the study's, as the SR reports it) in the form
`evaluate --record` copies into the manifest. ROC/PR curves per class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dicom_node.ml.cmb_data import load_cmb
from dicom_node.ml.cmb_metrics import bleed_metrics, class_metrics, match
from dicom_node.ml.cmb_pipeline import CmbPipeline
from dicom_node.ml.metrics import label_metrics, plot_curves
from dicom_node.ml.microbleeds import CLASSES

SEED_PAPER = {  # seed paper 003, external test set
    "iou": "0.523 +- 0.319", "dice": "0.627 +- 0.296", "recall": "0.706 +- 0.365",
    "weighted_auc": "0.908 (0.895-0.921)", "accuracy": "0.819", "weighted_f1": "0.829",
}


def evaluate_cmb(p: CmbPipeline, data_dir: Path, out_dir: Path, n_boot: int = 1000, seed: int = 0,
                 header: dict[str, Any] | None = None) -> dict[str, Any]:
    studies = load_cmb(data_dir, p.model.settings.percentiles, rules=p.rules, dtype=np.float32)
    threshold = p.thresholds["microbleeds"]
    matches, probs, ys, any_y, any_p = [], [], [], [], []
    location_agree = location_total = 0
    for st in studies:
        candidates, _, peak = p.model.candidates(st.volume, st.norm)
        result = p.model.result(candidates, threshold, st.flair, peak)
        m = match(st.bleeds, [b.masks for b in result.bleeds])
        matches.append(m)
        for t, r, _, _ in m.matched:
            if st.locations[t] in ("lobar", "deep"):
                location_total += 1
                location_agree += st.locations[t] == result.bleeds[r].location
        probs.append([result.class_probabilities[c] for c in CLASSES])
        ys.append(st.svd_class)
        any_y.append(1.0 if st.bleeds else 0.0)
        any_p.append(result.probability)
    y, prob = np.asarray(ys), np.asarray(probs)
    labels = {"microbleeds": label_metrics(np.asarray(any_y), np.asarray(any_p), threshold, n_boot, seed)}
    for k, c in enumerate(CLASSES):
        labels[c] = label_metrics((y == k).astype(np.float32), prob[:, k], 0.5, n_boot, seed)
        plot_curves((y == k).astype(np.float32), prob[:, k], c, out_dir, f"{p.info.name} {p.info.version}")
    result_json = dict(header or {})
    result_json.update({
        "level": "study",
        "n_studies": len(studies),
        "threshold": threshold,
        "bleeds": bleed_metrics(matches),
        "location_agreement": round(location_agree / location_total, 4) if location_total else None,
        "classification": class_metrics(y, prob, n_boot, seed),
        "classes": list(CLASSES),
        "labels": labels,
        "seed_paper": SEED_PAPER,
    })
    return result_json


def format_cmb_table(result: dict[str, Any]) -> str:
    """The seed paper's figures beside ours."""
    b, c = result["bleeds"], result["classification"]

    def ms(v: dict[str, Any]) -> str:
        return "n/a" if v["mean"] is None else f"{v['mean']:.3f} +- {v['sd']:.3f}"

    def ci(name: str) -> str:
        low, high = c[f"{name}_ci"]
        value = c[name]
        return "n/a" if value is None else f"{value:.3f} ({low:.3f}-{high:.3f})" if low is not None else f"{value:.3f}"

    paper = result.get("seed_paper", SEED_PAPER)
    rows = [
        ("microbleed IoU (per study)", ms(b["per_study"]["iou"]), paper["iou"]),
        ("microbleed Dice (per study)", ms(b["per_study"]["dice"]), paper["dice"]),
        ("microbleed recall (per study)", ms(b["per_study"]["recall"]), paper["recall"]),
        ("recall per bleed", f"{b['per_bleed']['recall']:.3f}", ""),
        ("IoU / Dice per bleed (misses 0)", f"{ms(b['per_bleed']['iou'])} / {ms(b['per_bleed']['dice'])}", ""),
        ("false bleeds per study", f"{b['false_bleeds_per_study']:.2f}", ""),
        ("count within +-1 / exact", f"{b['count_error']['within_1']:.3f} / {b['count_error']['exact']:.3f}", ""),
        ("count error (mean absolute)", f"{b['count_error']['mean_absolute']:.2f}", ""),
        ("lobar/deep agreement", "n/a" if result.get("location_agreement") is None
         else f"{result['location_agreement']:.3f}", ""),
        ("class weighted-average AUC", ci("weighted_auc"), paper["weighted_auc"]),
        ("class accuracy", ci("accuracy"), paper["accuracy"]),
        ("class weighted F1", ci("weighted_f1"), paper["weighted_f1"]),
    ]
    model = result.get("model", {})
    lines = [(f"{model.get('name', 'cmb')} {model.get('version', '')} on {result.get('data', '')}: "
             f"{result['n_studies']} studies, {b['n_bleeds']} bleeds, threshold {result['threshold']:.2f}"),
             f"{'metric':<34}{'this model':<30}{'seed paper (external test)'}"]
    lines += [f"{name:<34}{ours:<30}{theirs}" for name, ours, theirs in rows]
    lines.append("confusion (rows truth, columns predicted; " + ", ".join(result["classes"]) + "): "
                 + str(c["confusion"]))
    if model.get("synthetic_demo"):
        lines.append("synthetic-demo model: figures describe generated phantoms, not patients")
    return "\n".join(lines)
