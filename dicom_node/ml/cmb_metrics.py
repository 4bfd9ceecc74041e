"""Microbleed metrics, the seed paper's: per-bleed IoU, Dice and recall, per study the same averaged,
count error, false bleeds; for the class weighted-average AUC, accuracy and weighted F1 with bootstrap CIs
over studies.

A bleed is a set of voxels: slice index -> bool mask. A reported bleed matches a ground-truth bleed when
their voxels overlap; matching is one to one, greedy by IoU (best pairs first). A ground-truth bleed without
a match counts as missed (IoU and Dice 0); a reported bleed without one is a false bleed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

Voxels = Mapping[int, np.ndarray]


def overlap(a: Voxels, b: Voxels) -> tuple[int, int, int]:
    """(intersection, size of a, size of b) in voxels."""
    inter = sum(int((a[i] & b[i]).sum()) for i in a.keys() & b.keys())
    return inter, sum(int(m.sum()) for m in a.values()), sum(int(m.sum()) for m in b.values())


@dataclass(frozen=True)
class StudyMatch:
    n_truth: int
    n_reported: int
    matched: list[tuple[int, int, float, float]]  # (truth index, reported index, IoU, Dice)

    @property
    def recall(self) -> float:
        return len(self.matched) / self.n_truth if self.n_truth else math.nan

    @property
    def false_bleeds(self) -> int:
        return self.n_reported - len(self.matched)

    def per_truth(self) -> list[tuple[float, float]]:
        """(IoU, Dice) for every ground-truth bleed, 0 for the missed ones."""
        scores = {t: (iou, dice) for t, _, iou, dice in self.matched}
        return [scores.get(t, (0.0, 0.0)) for t in range(self.n_truth)]


def match(truth: Sequence[Voxels], reported: Sequence[Voxels]) -> StudyMatch:
    pairs = []
    for t, tv in enumerate(truth):
        for r, rv in enumerate(reported):
            inter, na, nb = overlap(tv, rv)
            if inter:
                pairs.append((inter / (na + nb - inter), 2 * inter / (na + nb), t, r))
    used_t: set[int] = set()
    used_r: set[int] = set()
    matched = []
    for iou, dice, t, r in sorted(pairs, reverse=True):
        if t in used_t or r in used_r:
            continue
        used_t.add(t)
        used_r.add(r)
        matched.append((t, r, iou, dice))
    return StudyMatch(len(truth), len(reported), sorted(matched))


def _mean_sd(values: Sequence[float]) -> dict[str, float | None]:
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": round(float(np.mean(v)), 4), "sd": round(float(np.std(v)), 4), "n": len(v)}


def bleed_metrics(matches: Sequence[StudyMatch]) -> dict[str, Any]:
    """Per bleed (over every ground-truth bleed) and per study (mean +- SD over studies with bleeds)."""
    per_bleed = [s for m in matches for s in m.per_truth()]
    with_bleeds = [m for m in matches if m.n_truth]
    counts_true = np.array([m.n_truth for m in matches])
    counts_reported = np.array([m.n_reported for m in matches])
    errors = counts_reported - counts_true
    return {
        "n_bleeds": len(per_bleed),
        "n_studies": len(matches),
        "per_bleed": {"recall": round(sum(m.n_truth and len(m.matched) for m in matches) / max(1, len(per_bleed)), 4),
                      "iou": _mean_sd([s[0] for s in per_bleed]), "dice": _mean_sd([s[1] for s in per_bleed]),
                      "iou_detected": _mean_sd([iou for m in matches for _, _, iou, _ in m.matched]),
                      "dice_detected": _mean_sd([d for m in matches for _, _, _, d in m.matched])},
        "per_study": {"recall": _mean_sd([m.recall for m in with_bleeds]),
                      "iou": _mean_sd([float(np.mean([s[0] for s in m.per_truth()])) for m in with_bleeds]),
                      "dice": _mean_sd([float(np.mean([s[1] for s in m.per_truth()])) for m in with_bleeds])},
        "false_bleeds_per_study": round(float(np.mean([m.false_bleeds for m in matches])), 4) if matches else None,
        "count_error": {"mean_absolute": round(float(np.mean(np.abs(errors))), 4) if len(errors) else None,
                        "mean": round(float(np.mean(errors)), 4) if len(errors) else None,
                        "within_1": round(float(np.mean(np.abs(errors) <= 1)), 4) if len(errors) else None,
                        "exact": round(float(np.mean(errors == 0)), 4) if len(errors) else None},
    }


def weighted_auc(y: np.ndarray, probs: np.ndarray, classes: int) -> float:
    """One-vs-rest AUC per class present in `y` (and absent from none), averaged weighted by prevalence."""
    aucs, weights = [], []
    for k in range(classes):
        yk = (y == k).astype(int)
        if 0 < yk.sum() < len(yk):
            aucs.append(roc_auc_score(yk, probs[:, k]))
            weights.append(yk.sum())
    return float(np.average(aucs, weights=weights)) if aucs else math.nan


def class_metrics(y: np.ndarray, probs: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Weighted-average AUC, accuracy and weighted F1 of the argmax, each with a study-bootstrap 95 % CI."""
    y = np.asarray(y, int)
    probs = np.asarray(probs, float)
    classes = probs.shape[1]
    pred = probs.argmax(axis=1)

    def stats(idx: np.ndarray) -> tuple[float, float, float]:
        return (weighted_auc(y[idx], probs[idx], classes), float(np.mean(pred[idx] == y[idx])),
                float(f1_score(y[idx], pred[idx], average="weighted", labels=list(range(classes)), zero_division=0)))

    point = stats(np.arange(len(y)))
    rng = np.random.default_rng(seed)
    boots = np.array([stats(rng.integers(0, len(y), len(y))) for _ in range(n_boot)]) if len(y) else np.zeros((0, 3))

    def ci(k: int) -> list[float | None]:
        v = boots[:, k][~np.isnan(boots[:, k])] if len(boots) else np.zeros(0)
        return [round(float(np.quantile(v, 0.025)), 4), round(float(np.quantile(v, 0.975)), 4)] if len(v) else [None, None]

    def r(v: float) -> float | None:
        return None if math.isnan(v) else round(v, 4)

    confusion = np.zeros((classes, classes), int)
    for t, p in zip(y, pred, strict=True):
        confusion[t, p] += 1
    return {"weighted_auc": r(point[0]), "weighted_auc_ci": ci(0), "accuracy": r(point[1]), "accuracy_ci": ci(1),
            "weighted_f1": r(point[2]), "weighted_f1_ci": ci(2), "n": len(y), "confusion": confusion.tolist()}
