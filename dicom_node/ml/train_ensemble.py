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

import functools
import logging
import warnings
from pathlib import Path
from typing import Any, NamedTuple

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
from dicom_node.ml.extra_axial import LABELS as SHAPE_LABELS
from dicom_node.ml.extra_axial import epidural_length_feature, mm_per_grid_pixel
from dicom_node.ml.ich import IchPipeline
from dicom_node.ml.ich_ensemble import (
    ensemble_manifest_entry,
    mask_labels_learned,
    mask_shares,
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


def fit_weights(x: np.ndarray, y: np.ndarray, free: int = 0) -> tuple[np.ndarray, float]:
    """Weights w and intercept b minimising mean log loss of sigmoid(x w + b) + PENALTY |w|^2: non-negative
    for the members' logits, of either sign for the last `free` columns (study features, `extra_axial`)."""
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
    start[m - free:m] = 0.0
    res = minimize(f, start, jac=True, method="L-BFGS-B",
                   bounds=[(0, None)] * (m - free) + [(None, None)] * (free + 1))
    return res.x[:m], float(res.x[m])


def _predict(x: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-np.clip(np.clip(x, -CLIP, CLIP) @ w + b, -60, 60))))


class Calibration(NamedTuple):
    """What the members made of the calibration studies: (S, M, L) study logits, (S, L) labels, (S, M, L-1)
    mask Dice per study (NaN: not measured) and (S, M, M) the shape feature (`extra_axial`) with member e's
    epidural mask and member s's subdural mask (NaN where a member has no mask of that subtype)."""

    x: np.ndarray
    y: np.ndarray
    dice: np.ndarray
    shape: np.ndarray

    def mean_dice(self) -> np.ndarray:
        """(M, L-1) each member's mean mask Dice per subtype over the studies with that subtype."""
        with warnings.catch_warnings():  # a subtype no study has: NaN, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(np.nanmean(self.dice, axis=0))

    @staticmethod
    def join(parts: list[Calibration]) -> Calibration:
        return Calibration(*(np.concatenate([getattr(p, f) for p in parts]) for f in Calibration._fields))


def validation_logits(members: list[IchPipeline], data_dir: Path, uids: list[str] | None, batch_size: int = 32
                      ) -> Calibration:
    """The members on the studies `uids` under `data_dir` (None: every study with labels) (`Calibration`);
    the mask Dice and the shape feature need annotations under `data_dir` (else NaN)."""
    labels = read_rsna_labels(data_dir / "labels.csv")
    refs = scan_dicom(data_dir)
    studies = by_study(r for r in refs if r.modality != "SEG")
    if uids is None:
        uids = sorted(uid for uid, rs in studies.items() if any(r.sop_instance_uid in labels for r in rs))
    kind, segs, boxes = find_annotations(data_dir, refs, "auto")
    xs, ys, dice, shape = [], [], [], []
    device = members[0].device
    learned = np.stack([mask_labels_learned(m.manifest) for m in members])
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
            shape.append(member_shape_features(outs, learned))
        else:
            dice.append(np.full((len(members), len(MASK_LABELS)), np.nan))
            shape.append(np.full((len(members), len(members)), np.nan))
    return Calibration(np.stack(xs), np.asarray(ys, dtype=np.float64), np.stack(dice), np.stack(shape))


def member_shape_features(outs: list[SeriesOutputs], learned: np.ndarray) -> np.ndarray:
    """(M, M) the `extra_axial` feature of one study with member e's epidural mask and member s's subdural
    mask, on the grid the ensemble draws on (the finest member's), as served; NaN where member e did not
    learn epidural or s subdural masks. Which pair the ensemble uses is known once the Dice is."""
    m = len(outs)
    out = np.full((m, m), np.nan)
    sizes = [o.masks.shape[-1] for o in outs if o.masks is not None]
    if not sizes:
        return out
    grid = max(sizes)
    e, s = MASK_LABELS.index("epidural"), MASK_LABELS.index("subdural")
    first = outs[0]
    rows, cols = first.hu[0].shape
    mm = mm_per_grid_pixel(first.slices[0].path, rows, cols, grid)
    epi = {k: on_grid(o.masks[:, [e]], grid) for k, o in enumerate(outs) if o.masks is not None and learned[k, e]}
    sub = {k: on_grid(o.masks[:, [s]], grid) for k, o in enumerate(outs) if o.masks is not None and learned[k, s]}
    for a, ea in epi.items():
        for b, sb in sub.items():
            masks = np.zeros((len(ea), len(MASK_LABELS), grid, grid), np.float32)
            masks[:, e], masks[:, s] = ea[:, 0], sb[:, 0]
            out[a, b] = epidural_length_feature(masks, MASK_LABELS, mm)
    return out


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
                   synthetic_demo: bool, seed: int = 0, extra_data: tuple[Path, ...] = ()) -> Path:
    """Fit an ensemble of `members_spec` on the studies of `data_dir` (the members' validation studies, or every
    labelled study of a separate calibration folder) and of each `extra_data` folder (further calibration
    folders, e.g. one enriched with the subtypes the members confuse: `synth --only`)."""
    manifests = member_manifests(models_dir, members_spec)
    trained_on = {str(Path(m.raw.get("training", {}).get("data", "")).resolve()) for m in manifests}
    folders: list[tuple[Path, list[str] | None]] = []  # None: every labelled study of a calibration folder
    for k, folder in enumerate((data_dir, *extra_data)):
        if str(Path(folder).resolve()) in trained_on:
            uid_lists = [m.raw.get("training", {}).get("validation_study_uids") for m in manifests]
            if k or not uid_lists[0] or any(u != uid_lists[0] for u in uid_lists):
                raise ModelError("ensemble members must record the same validation studies (train them on one "
                                 "--data with one --seed and --val-fraction), and only --data may be their folder")
            folders.append((Path(folder), list(uid_lists[0])))
        else:
            folders.append((Path(folder), None))
    from dicom_node.ml.registry import load_pipeline

    device = choose_device("cpu")
    members = [load_pipeline(models_dir, m.name, m.version, device) for m in manifests]
    if not all(isinstance(m, IchPipeline) for m in members):
        raise ModelError("ensemble members must be ICH models")
    parts = [validation_logits(members, f, u) for f, u in folders]  # type: ignore[arg-type]
    described = [f"the members' {len(p.y)} validation studies of {f}" if u is not None else
                 f"{len(p.y)} calibration studies of {f}, which no member was trained on"
                 for p, (f, u) in zip(parts, folders, strict=True)]
    return write_ensemble(out, manifests, Calibration.join(parts), " and ".join(described), name, version,
                          synthetic_demo, data_dir, seed)


def shape_members(manifests: list[Manifest], dice: np.ndarray) -> tuple[int, int] | None:
    """(e, s): the members whose epidural and subdural masks the ensemble will draw (`mask_shares` on the
    members' mean Dice `dice` (M, L-1)), so whose masks its shape feature is measured on; None when either
    subtype has no member with a measured Dice (no annotations: the masks would depend on the weights)."""
    learned = np.stack([mask_labels_learned(m) for m in manifests])
    e, s = MASK_LABELS.index("epidural"), MASK_LABELS.index("subdural")
    if not all((np.isfinite(dice[:, j]) & (learned[:, j] > 0)).any() for j in (e, s)):
        return None
    grids = np.array([m.input.size for m in manifests], dtype=np.float64)
    share = mask_shares(np.ones(learned.shape), learned, grids, dice)
    return int(np.argmax(share[:, e])), int(np.argmax(share[:, s]))


class Fit(NamedTuple):
    weights: np.ndarray  # (M, L)
    intercepts: np.ndarray  # (L,)
    shape: np.ndarray  # (L,) the shape feature's weight (0 where it does not enter)
    points: dict[str, Any]  # label -> operating point
    report: dict[str, Any]  # label -> out-of-fold and member AUROCs


def fit_labels(manifests: list[Manifest], x: np.ndarray, y: np.ndarray, feature: np.ndarray | None, seed: int
               ) -> Fit:
    """Per label: the entered members' weights and intercept (and the shape feature's weight for
    `extra_axial.LABELS` when `feature` (S,) is given), and the threshold on out-of-fold probabilities."""
    entered = np.stack([study_labels_entered(m) for m in manifests])  # (M, L)
    weights, intercepts, shape = np.zeros(x.shape[1:]), np.zeros(x.shape[2]), np.zeros(x.shape[2])
    rng = np.random.default_rng(seed)
    points: dict[str, Any] = {}
    report: dict[str, Any] = {}
    for j, label in enumerate(ICH_LABELS):
        cols = np.flatnonzero(entered[:, j])
        if not len(cols):
            raise ModelError(f"no ensemble member is trained on {label!r}: add an all-ICH member")
        xs = x[:, cols, j]
        free = int(feature is not None and label in SHAPE_LABELS)
        if feature is not None and free:
            xs = np.concatenate([xs, feature[:, None]], axis=1)
        fit = functools.partial(fit_weights, free=free)
        w, intercepts[j] = fit(xs, y[:, j])
        weights[cols, j] = w[:len(cols)]
        if free:
            shape[j] = w[-1]
        folds = out_of_fold(xs, y[:, j], rng, fit, lambda m, xs: _predict(xs, *m), (w, intercepts[j]))
        points[label] = pooled_threshold(y[:, j], folds).to_json()
        report[label] = {"ensemble_auroc_out_of_fold": _r(auroc(y[:, j], folds.mean(axis=0))),
                         **{f"{m.name}_auroc": _r(auroc(y[:, j], 1 / (1 + np.exp(-x[:, k, j]))))
                            for k, m in enumerate(manifests)}}
    return Fit(weights, intercepts, shape, points, report)


def write_ensemble(out: Path, manifests: list[Manifest], cal: Calibration, fitted_on: str, name: str,
                   version: str, synthetic_demo: bool, data_dir: Path, seed: int = 0) -> Path:
    """Fit the weights, intercepts and thresholds on the members' calibration outputs `cal` and write the
    ensemble folder, with the members' mask Dice per subtype when the studies had annotations, and then the
    shape feature too (its weight is fitted for `extra_axial.LABELS`, of either sign). A member's logit
    enters only the labels `study_labels_entered` gives it.

    The feature is measured on the masks the ensemble will serve: those of the best-Dice members among the
    ones that are run (a member with no weight on any label is not), so the members' weights are fitted
    first without it. Should the refit with it leave a drawing member with no weight, the ensemble is
    written without the feature."""
    x, y = cal.x, cal.y
    mask_dice = cal.mean_dice()
    plain = fit_labels(manifests, x, y, None, seed)
    running = np.asarray(plain.weights.any(axis=1), dtype=bool)
    drawn = shape_members(manifests, np.where(running[:, None], mask_dice, np.nan))
    feature = None if drawn is None else cal.shape[:, drawn[0], drawn[1]]
    result = plain
    if drawn is not None and feature is not None and not np.isnan(feature).any():
        with_shape = fit_labels(manifests, x, y, feature, seed)
        if with_shape.weights[drawn[0]].any() and with_shape.weights[drawn[1]].any():
            result = with_shape
        else:
            log.warning("ensemble fitted without the shape feature: with it, a member whose mask it is measured "
                        "on has no weight and would not be run")
    weights, intercepts, points, report = result.weights, result.intercepts, result.points, result.report
    shape = result.shape if result is not plain else None
    manifest = {
        "name": name, "version": version,
        "display_name": "dicom-node ICH ensemble" + (" (synthetic demo)" if synthetic_demo else ""),
        "task": "ich-ct", "labels": list(ICH_LABELS), "critical_labels": list(ICH_LABELS),
        "thresholds": {label: points[label]["threshold"] for label in ICH_LABELS},
        "operating_points": points,
        "ensemble": ensemble_manifest_entry(manifests, weights, intercepts, fitted_on, mask_dice, shape),
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
