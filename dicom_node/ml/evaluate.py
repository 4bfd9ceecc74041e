"""Evaluation of a loaded pipeline on a labelled folder: metrics.json, ROC/PR PNGs, a printable table.

ICH: per-slice metrics over the labelled slices of the selected series (as in the RSNA challenge,
with its weighted log loss; AUROC CIs resample studies, not slices), plus study-level metrics (study
label: any labelled slice positive; study probability: the pipeline's own `series_outputs`, i.e. the
worker's selection, preprocessing and study aggregation, then the worker's final verdicts
(`verdicts.reconcile`), so a served SR states the same probabilities), and each study's probabilities and
present findings under `studies`. SIH: per-study metrics of the probability `analyse` gives (the
worker's call), and, when the folder holds the signs' SEG annotations, `localisation`: for each true
present finding, whether its mark is inside the head and on a sign, and the Dice of its masks.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dicom_node.errors import PixelDataError, SelectionError
from dicom_node.ml.analysis import AnalysisStatus, Finding, InstanceRef, StudyAnalysis
from dicom_node.ml.annotations import annotation_segs, sih_annotations
from dicom_node.ml.datasets import by_study, read_rsna_labels, read_study_labels, scan_dicom
from dicom_node.ml.ich import IchPipeline
from dicom_node.ml.ich_ensemble import IchEnsemblePipeline
from dicom_node.ml.localise import mask_dice, near, signal_head_mask
from dicom_node.ml.metrics import label_metrics, plot_curves, rsna_weighted_log_loss
from dicom_node.ml.pipeline import Pipeline
from dicom_node.ml.preprocess import read_image
from dicom_node.ml.sih import SihPipeline
from dicom_node.ml.verdicts import reconcile
from dicom_node.outputs.codes import SIH_SIGNS, sign_label, sign_named

log = logging.getLogger(__name__)


def evaluate(pipeline: Pipeline, data_dir: Path, out_dir: Path, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Run the pipeline over every labelled study under `data_dir`; write metrics.json and curves to `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(pipeline, (IchPipeline, IchEnsemblePipeline)):
        result = _evaluate_ich(pipeline, data_dir, out_dir, n_boot, seed)
    elif isinstance(pipeline, SihPipeline):
        result = _evaluate_sih(pipeline, data_dir, out_dir, n_boot, seed)
    elif pipeline.info.task == "cmb-swi":
        from dicom_node.ml.cmb_pipeline import CmbPipeline
        from dicom_node.ml.evaluate_cmb import evaluate_cmb

        assert isinstance(pipeline, CmbPipeline)
        result = evaluate_cmb(pipeline, data_dir, out_dir, n_boot, seed, _header(pipeline, data_dir))
    else:
        raise TypeError(f"no evaluation for {type(pipeline).__name__}")
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _header(pipeline: Pipeline, data_dir: Path) -> dict[str, Any]:
    info = pipeline.info
    return {"model": {"name": info.name, "version": info.version, "task": info.task,
                      "synthetic_demo": info.synthetic_demo, "manifest_sha256": info.manifest_sha256},
            "data": str(data_dir)}


def _evaluate_ich(p: IchPipeline | IchEnsemblePipeline, data_dir: Path, out_dir: Path, n_boot: int, seed: int
                  ) -> dict[str, Any]:
    labels = read_rsna_labels(data_dir / "labels.csv")
    names = p.manifest.labels
    ys: list[np.ndarray] = []
    ps: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    study_y: list[np.ndarray] = []
    study_p: list[np.ndarray] = []
    studies: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    refs_all = [r for r in scan_dicom(data_dir) if r.modality != "SEG"]  # ground-truth SEGs are not input
    for study_uid, refs in tqdm(sorted(by_study(refs_all).items()), desc="evaluating", unit="study"):
        try:
            out = p.series_outputs(p.select(refs))  # the worker's selection, preprocessing and aggregation
        except (SelectionError, PixelDataError) as exc:
            skipped.append({"study_uid": study_uid, "reason": str(exc)})
            continue
        keep = [i for i, r in enumerate(out.slices) if r.sop_instance_uid in labels]
        if not keep:
            continue
        y = np.array([[labels[out.slices[i].sop_instance_uid].get(n, 0) for n in names] for i in keep],
                     dtype=np.float32)
        ys.append(y)
        ps.append(out.slice_probs[keep])
        groups.append(np.full(len(keep), len(study_y)))
        study_y.append(y.max(axis=0))
        final = _final_verdicts(p, out.study)
        study_p.append(np.array([f.probability for f in final]))
        studies.append({"study_uid": study_uid, "probabilities": {f.label: f.probability for f in final},
                        "present": [f.label for f in final if f.present],
                        "labels": {n: int(v) for n, v in zip(names, y.max(axis=0), strict=True)}})
    if not ys:
        raise SelectionError(f"no labelled, analysable CT study under {data_dir}")
    y, prob, group = np.concatenate(ys), np.concatenate(ps), np.concatenate(groups)
    sy, sp = np.stack(study_y), np.stack(study_p)
    result = _header(p, data_dir)
    result.update({
        "level": "slice",
        "n_images": len(y),
        "n_studies": len(sy),
        "bootstrap": "resampling studies (slices of a study are not independent)",
        "labels": {n: label_metrics(y[:, j], prob[:, j], p.thresholds[n], n_boot, seed, groups=group)
                   for j, n in enumerate(names)},
        "rsna_weighted_log_loss": round(rsna_weighted_log_loss(y, prob, names), 6),
        "study_level": {n: label_metrics(sy[:, j], sp[:, j], p.thresholds[n], n_boot, seed) for j, n in enumerate(names)},
        "studies": studies,
        "skipped_studies": skipped,
    })
    for j, n in enumerate(names):
        plot_curves(y[:, j], prob[:, j], n, out_dir, f"{p.info.name} {p.info.version} (slices)")
        plot_curves(sy[:, j], sp[:, j], f"study_{n}", out_dir, f"{p.info.name} {p.info.version} (studies)")
    return result


def _final_verdicts(p: Pipeline, study: np.ndarray) -> list[Finding]:
    """The study's findings as the worker reports them: thresholds, then `verdicts.reconcile` (a present
    subtype makes "any" present with at least its probability)."""
    names = p.manifest.labels
    findings = [Finding(label=n, probability=float(v), threshold=p.thresholds[n], present=bool(v >= p.thresholds[n]),
                        critical=n in p.manifest.critical_labels) for n, v in zip(names, study, strict=True)]
    return reconcile(StudyAnalysis(model=p.info, status=AnalysisStatus.ANALYSED, findings=findings)).findings


def _evaluate_sih(p: SihPipeline, data_dir: Path, out_dir: Path, n_boot: int, seed: int) -> dict[str, Any]:
    """Each labelled study through `analyse`, as the worker runs it; with the signs' SEG annotations in
    `data_dir` (`synth --kind mr-sih` writes them), also where the true present findings are marked."""
    labels = read_study_labels(data_dir / "labels.csv")
    refs_all = scan_dicom(data_dir)
    truth, signs = sih_annotations(ref.path for ref in annotation_segs(refs_all))  # signs: where the SEGs have them
    ys, ps, skipped, marks = [], [], [], []
    for study_uid, refs in tqdm(sorted(by_study(refs_all).items()), desc="evaluating", unit="study"):
        if study_uid not in labels:
            continue
        analysis = p.analyse([r for r in refs if r.modality != "SEG"])
        if analysis.status is not AnalysisStatus.ANALYSED:
            skipped.append({"study_uid": study_uid, "reason": analysis.reason})
            continue
        finding = analysis.findings[0]
        ys.append(labels[study_uid])
        ps.append(finding.probability)
        if truth and labels[study_uid] and finding.present:
            marks.append(_sih_mark(analysis, finding, refs, truth, signs))
    if not ys:
        raise SelectionError(f"no labelled, analysable MR study under {data_dir}")
    y, prob = np.asarray(ys, dtype=np.float32), np.asarray(ps)
    label = p.manifest.labels[0]
    result = _header(p, data_dir)
    result.update({"level": "study", "n_studies": len(y),
                   "labels": {label: label_metrics(y, prob, p.thresholds[label], n_boot, seed)},
                   "skipped_studies": skipped})
    if marks:
        dice = [m["dice"] for m in marks if m["dice"] is not None]
        result["localisation"] = {
            label: {"n": len(marks), "in_head": sum(m["in_head"] for m in marks),
                    "on_sign": sum(m["on_sign"] for m in marks),
                    "rule": "the mark's centre on a sign of the SEG annotation, or within one pixel of one",
                    "dice_mean": round(float(np.mean(dice)), 4) if dice else None, "dice_n": len(dice)}}
        named = [m["named"] for m in marks if m["named"] is not None]
        if named:  # a localiser that names the signs, and SEG annotations that tell them apart
            result["localisation"][label].update({
                "named": sum(named), "named_n": len(named),
                "named_rule": "the sign the report names at the mark is one of the annotated signs within one pixel",
                "signs": {s: {"dice_mean": round(float(np.mean(d)), 4) if d else None, "dice_n": len(d),
                              "named_when_shown": sum(s in m["named_signs"] for m in marks if s in m["signs"]),
                              "named_when_not_shown": sum(s in m["named_signs"] for m in marks if s not in m["signs"])}
                          for s in SIH_SIGNS for d in [[m["signs"][s] for m in marks if s in m["signs"]]]}})
    plot_curves(y, prob, label, out_dir, f"{p.info.name} {p.info.version}")
    return result


def _sih_mark(analysis: StudyAnalysis, finding: Finding, refs: list[InstanceRef], truth: dict[str, np.ndarray],
              signs: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """Is a true SIH finding's mark inside the head (a check: the pipeline keeps it there) and on a sign;
    the Dice of its masks over the three analysed images (None without masks: a model without a localiser).
    With a localiser that names the signs and annotations per sign: does the sign named at the mark lie
    there ("named", None when the mark is on no annotated sign), and each annotated sign's Dice (a sign the
    study shows on the analysed images and the model did not mark counts 0)."""
    key = next(r for r in refs if r.sop_instance_uid == finding.key_sop_instance_uid)
    assert finding.region_center is not None
    row, col = finding.region_center
    found = analysis.masks.get(finding.label, {})
    dice = mask_dice(found, truth, analysis.evaluated_sop_instance_uids) if found else None
    sign = truth.get(key.sop_instance_uid)
    on_sign = sign is not None and near(sign, row, col)
    named, per_sign = None, {}
    if finding.signs:
        evaluated = analysis.evaluated_sop_instance_uids
        under = [s for s in SIH_SIGNS if key.sop_instance_uid in signs[s] and near(signs[s][key.sop_instance_uid], row, col)]
        named = sign_named(finding.detail) in under if under else None
        for s in SIH_SIGNS:
            if any(uid in signs[s] for uid in evaluated):
                per_sign[s] = mask_dice(analysis.masks.get(sign_label(s), {}), signs[s], evaluated) or 0.0
    return {"in_head": bool(signal_head_mask(read_image(key.path))[round(row), round(col)]),
            "on_sign": on_sign, "dice": dice, "named": named, "signs": per_sign, "named_signs": finding.signs}


def format_table(result: dict[str, Any]) -> str:
    """A readable table of the per-label metrics (and, for ICH, the study-level AUROC, sensitivity and
    specificity at the threshold, which are what the node's verdicts are)."""
    if result.get("model", {}).get("task") == "cmb-swi":
        from dicom_node.ml.evaluate_cmb import format_cmb_table

        return format_cmb_table(result)

    def f(v: Any) -> str:
        return "  n/a" if v is None else f"{v:.3f}"

    study = result.get("study_level", {})
    head = f"{'label':<18}{'AUROC':>7}  {'95% CI':<15}{'sens':>7}{'spec':>7}{'logloss':>9}{'thr':>7}{'pos/n':>11}"
    if study:
        head += f"{'study AUROC':>13}{'study sens':>12}{'study spec':>12}{'pos/n':>8}"
    lines = [f"{result['model']['name']} {result['model']['version']} on {result['data']} ({result['level']} level)",
             head]
    for label, m in result["labels"].items():
        ci = f"[{f(m['auroc_ci'][0])}, {f(m['auroc_ci'][1])}]"
        line = (f"{label:<18}{f(m['auroc']):>7}  {ci:<15}{f(m['sensitivity']):>7}{f(m['specificity']):>7}"
                f"{f(m['log_loss']):>9}{m['threshold']:>7.3f}{str(m['n_positive']) + '/' + str(m['n']):>11}")
        if study:
            st = study[label]
            line += (f"{f(st['auroc']):>13}{f(st['sensitivity']):>12}{f(st['specificity']):>12}"
                     f"{str(st['n_positive']) + '/' + str(st['n']):>8}")
        lines.append(line)
    if "rsna_weighted_log_loss" in result:
        lines.append(f"RSNA weighted log loss: {result['rsna_weighted_log_loss']:.4f}")
    for label, loc in result.get("localisation", {}).items():
        dice = f", mean Dice of its masks {loc['dice_mean']:.3f} ({loc['dice_n']})" if loc["dice_mean"] is not None else ""
        lines.append(f"{label}: {loc['n']} true present findings, mark inside the head {loc['in_head']}, on a sign "
                     f"(or within one pixel) {loc['on_sign']}{dice}")
        if "named" in loc:
            lines.append(f"{label}: the sign named at the mark is the one there for {loc['named']} of {loc['named_n']}; "
                         "per sign, Dice (studies showing it), named when shown / when not: " + ", ".join(
                             f"{s} {f(v['dice_mean'])} ({v['dice_n']}) {v['named_when_shown']}/{v['named_when_not_shown']}"
                             for s, v in loc["signs"].items()))
    if result.get("skipped_studies"):
        lines.append(f"{len(result['skipped_studies'])} studies skipped (see metrics.json for reasons)")
    if result["model"].get("synthetic_demo"):
        lines.append("synthetic-demo model: figures describe generated phantoms, not patients")
    return "\n".join(lines)
