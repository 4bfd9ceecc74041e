"""Fitting seed 002's weighted ensemble: members' study logits on the validation studies -> per-label
non-negative weights and an intercept (penalised log loss), thresholds at study level on out-of-fold
probabilities; writes an ensemble model folder (manifest only: the members stay in their own folders).

The studies it is fitted on are ones no member was trained on: given the members' own training data
(`--data` is the folder their manifests name), the validation studies they were validated on (each
member's manifest lists them under training.validation_study_uids; every member must list the same ones);
given any other folder (a separate, usually larger, calibration set), every labelled study in it. The
thresholds are chosen on out-of-fold probabilities pooled over repeated cross-fitting (`study_model`).
Thresholds chosen on a few hundred studies are steadier than on the members' validation split.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize
from tqdm import tqdm

from dicom_node.errors import ModelError, PixelDataError, SelectionError
from dicom_node.ml.datasets import (
    MASK_LABELS,
    by_study,
    find_annotations,
    read_rsna_labels,
    scan_dicom,
    slice_masks,
)
from dicom_node.ml.device import choose_device
from dicom_node.ml.ich import IchPipeline
from dicom_node.ml.ich_ensemble import (
    ensemble_manifest_entry,
    member_manifests,
    on_grid,
    run_members,
    study_labels_entered,
)
from dicom_node.ml.ich_findings import SeriesOutputs
from dicom_node.ml.manifest import ICH_LABELS, Manifest, write_manifest
from dicom_node.ml.metrics import auroc
from dicom_node.ml.study_model import out_of_fold, pooled_threshold

log = logging.getLogger(__name__)

PENALTY = 0.01
CLIP = 12.0


def fit_weights(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative weights w and intercept b minimising mean log loss of sigmoid(x w + b) + PENALTY |w|^2."""
    x = np.clip(x, -CLIP, CLIP)
    m = x.shape[1]

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:m], theta[m]
        z = x @ w + b
        p = 1 / (1 + np.exp(-np.clip(z, -60, 60)))
        eps = 1e-9
        loss = -np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)) + PENALTY * float(w @ w)
        g = p - y
        grad = np.concatenate([x.T @ g / len(y) + 2 * PENALTY * w, [g.mean()]])
        return float(loss), grad

    start = np.concatenate([np.full(m, 1.0 / m), [0.0]])
    res = minimize(f, start, jac=True, method="L-BFGS-B", bounds=[(0, None)] * m + [(None, None)])
    return res.x[:m], float(res.x[m])


def _predict(x: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-np.clip(np.clip(x, -CLIP, CLIP) @ w + b, -60, 60))))


def validation_logits(members: list[IchPipeline], data_dir: Path, uids: list[str], batch_size: int = 32
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S, M, L) member study logits and (S, L) study labels of the studies `uids` under `data_dir`, and
    (M, L-1) each member's mean mask Dice per subtype over the studies with that subtype (`member_mask_dice`;
    NaN without annotations under `data_dir` or for a member with no mask head)."""
    labels = read_rsna_labels(data_dir / "labels.csv")
    refs = scan_dicom(data_dir)
    studies = by_study(r for r in refs if r.modality != "SEG")
    kind, segs, boxes = find_annotations(data_dir, refs, "auto")
    xs, ys, dice = [], [], []
    device = members[0].device
    for uid in tqdm(uids, desc="members on validation studies", unit="study"):
        if uid not in studies:
            raise SelectionError(f"validation study {uid} of the members is not under {data_dir}")
        try:
            slices = members[0].select(studies[uid])
            logits, outs = run_members(members, slices, batch_size, device)
        except (SelectionError, PixelDataError) as exc:
            log.warning("validation study skipped", extra={"study_uid": uid, "reason": str(exc)})
            continue
        xs.append(np.stack(logits))
        ys.append([max(labels.get(r.sop_instance_uid, {}).get(n, 0) for r in slices) for n in ICH_LABELS])
        if kind != "none":
            dice.append(member_mask_dice(outs, segs, boxes))
    mean = np.full((len(members), len(ICH_LABELS) - 1), np.nan)
    if dice:
        with warnings.catch_warnings():  # a subtype no study has: NaN, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(np.stack(dice), axis=0)
    return np.stack(xs), np.asarray(ys, dtype=np.float64), mean


def member_mask_dice(outs: list[SeriesOutputs], segs: dict[str, dict[str, np.ndarray]],
                     boxes: dict[str, dict[str, list[tuple[int, int, int, int]]]]) -> np.ndarray:
    """(M, L-1) each member's mask Dice per subtype on one study, against its annotations, both on the finest
    member's mask grid (where the ensemble draws its mask; a coarser member's mask resampled as served, >= 0.5);
    NaN for a subtype the study does not have or a member with no mask head."""
    sizes = [o.masks.shape[-1] for o in outs if o.masks is not None]
    out = np.full((len(outs), len(MASK_LABELS)), np.nan)
    if not sizes:
        return out
    grid = max(sizes)
    first = outs[0]
    truth = np.stack([slice_masks(hu.shape, 2 * grid, segs.get(ref.sop_instance_uid), boxes.get(ref.sop_instance_uid))
                      for ref, hu in zip(first.slices, first.hu, strict=True)]) > 127  # (N, L-1, g, g)
    present = truth.any(axis=(0, 2, 3))
    for k, o in enumerate(outs):
        if o.masks is None:
            continue
        found = on_grid(o.masks, grid) >= 0.5
        for j in np.flatnonzero(present):
            total = found[:, j].sum() + truth[:, j].sum()
            out[k, j] = 2 * float((found[:, j] & truth[:, j]).sum()) / float(total)
    return out


def train_ensemble(data_dir: Path, models_dir: Path, members_spec: list[str], out: Path, name: str, version: str,
                   synthetic_demo: bool, seed: int = 0) -> Path:
    manifests = member_manifests(models_dir, members_spec)
    trained_on = {str(Path(m.raw.get("training", {}).get("data", "")).resolve()) for m in manifests}
    if str(Path(data_dir).resolve()) in trained_on:
        uid_lists = [m.raw.get("training", {}).get("validation_study_uids") for m in manifests]
        if not uid_lists[0] or any(u != uid_lists[0] for u in uid_lists):
            raise ModelError("ensemble members must record the same validation studies (train them on one --data "
                             "with one --seed and --val-fraction)")
        uids = list(uid_lists[0])
        fitted_on = f"the members' {len(uids)} validation studies of {data_dir}"
    else:
        labels = read_rsna_labels(Path(data_dir) / "labels.csv")
        studies = by_study(r for r in scan_dicom(data_dir) if r.modality != "SEG")
        uids = sorted(uid for uid, refs in studies.items() if any(r.sop_instance_uid in labels for r in refs))
        fitted_on = f"{len(uids)} calibration studies of {data_dir}, which no member was trained on"
    from dicom_node.ml.registry import load_pipeline

    device = choose_device("cpu")
    members = [load_pipeline(models_dir, m.name, m.version, device) for m in manifests]
    if not all(isinstance(m, IchPipeline) for m in members):
        raise ModelError("ensemble members must be ICH models")
    x, y, dice = validation_logits(members, data_dir, uids)  # type: ignore[arg-type]
    return write_ensemble(out, manifests, x, y, fitted_on, name, version, synthetic_demo, data_dir, seed, dice)


def write_ensemble(out: Path, manifests: list[Manifest], x: np.ndarray, y: np.ndarray, fitted_on: str, name: str,
                   version: str, synthetic_demo: bool, data_dir: Path, seed: int = 0,
                   mask_dice: np.ndarray | None = None) -> Path:
    """Fit the weights, intercepts and thresholds on members' study logits `x` (S, M, L) and labels `y` (S, L),
    and write the ensemble folder, with the members' mask Dice per subtype (M, L-1) when there is one. A
    member's logit enters only the labels `study_labels_entered` gives it."""
    n_members, n_labels = x.shape[1], x.shape[2]
    entered = np.stack([study_labels_entered(m) for m in manifests])  # (M, L)
    weights, intercepts = np.zeros((n_members, n_labels)), np.zeros(n_labels)
    rng = np.random.default_rng(seed)
    points: dict[str, Any] = {}
    report: dict[str, Any] = {}
    for j, label in enumerate(ICH_LABELS):
        cols = np.flatnonzero(entered[:, j])
        if not len(cols):
            raise ModelError(f"no ensemble member is trained on {label!r}: add an all-ICH member")
        weights[cols, j], intercepts[j] = fit_weights(x[:, cols, j], y[:, j])
        folds = out_of_fold(x[:, cols, j], y[:, j], rng, fit_weights, lambda m, xs: _predict(xs, *m),
                            (weights[cols, j], intercepts[j]))
        points[label] = pooled_threshold(y[:, j], folds).to_json()
        report[label] = {"ensemble_auroc_out_of_fold": _r(auroc(y[:, j], folds.mean(axis=0))),
                         **{f"{m.name}_auroc": _r(auroc(y[:, j], 1 / (1 + np.exp(-x[:, k, j]))))
                            for k, m in enumerate(manifests)}}
    manifest = {
        "name": name, "version": version,
        "display_name": "dicom-node ICH ensemble" + (" (synthetic demo)" if synthetic_demo else ""),
        "task": "ich-ct", "labels": list(ICH_LABELS), "critical_labels": list(ICH_LABELS),
        "thresholds": {label: points[label]["threshold"] for label in ICH_LABELS},
        "operating_points": points,
        "ensemble": ensemble_manifest_entry(manifests, weights, intercepts, fitted_on, mask_dice),
        "training": {"data": str(data_dir), "validation_studies": len(y), "validation": report, "seed": seed},
        "training_data": fitted_on,
        "metrics": {},
        "intended_use": manifests[0].intended_use,
        "synthetic_demo": synthetic_demo,
        "tags": ["synthetic-demo"] if synthetic_demo else [],
    }
    write_manifest(out, manifest)
    return out


def _r(v: float) -> float | None:
    return None if np.isnan(v) else round(float(v), 4)
