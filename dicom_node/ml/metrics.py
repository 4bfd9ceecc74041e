"""Evaluation metrics: AUROC with a bootstrap 95% CI, sensitivity/specificity at a threshold, log loss,
the RSNA weighted log loss for ICH, and ROC / PR curves as PNG (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

EPS = 1e-7
RSNA_WEIGHTS = {"any": 2.0}  # every subtype weighs 1


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve; NaN when `y` has a single class."""
    y = np.asarray(y)
    if y.min() == y.max():
        return math.nan
    return float(roc_auc_score(y, p))


def auroc_ci(y: np.ndarray, p: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
             groups: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile bootstrap CI of the AUROC (resamples with one class are skipped).

    Resamples cases, or with `groups` (e.g. each slice's study) whole groups: slices of one study are
    not independent, so a CI for a claim about studies must resample studies."""
    y, p = np.asarray(y), np.asarray(p)
    if y.min() == y.max():
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    members: list[np.ndarray] | None = None
    if groups is not None:
        _, inverse = np.unique(np.asarray(groups), return_inverse=True)
        members = [np.flatnonzero(inverse == g) for g in range(int(inverse.max()) + 1)]
    values = []
    for _ in range(n_boot):
        if members is None:
            idx = rng.integers(0, len(y), len(y))
        else:
            idx = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        if y[idx].min() != y[idx].max():
            values.append(roc_auc_score(y[idx], p[idx]))
    alpha = (1 - level) / 2
    return (float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha)))


def sensitivity_specificity(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, float]:
    y, pred = np.asarray(y).astype(bool), np.asarray(p) >= threshold
    pos, neg = y.sum(), (~y).sum()
    sens = float((pred & y).sum() / pos) if pos else math.nan
    spec = float((~pred & ~y).sum() / neg) if neg else math.nan
    return sens, spec


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    y, p = np.asarray(y, dtype=np.float64), np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def rsna_weighted_log_loss(y: np.ndarray, p: np.ndarray, labels: Sequence[str]) -> float:
    """RSNA 2019 metric: per image, the weighted mean of the labels' binary log losses (any: 2, subtypes: 1),
    averaged over images. `y`, `p`: (N, len(labels))."""
    y, p = np.asarray(y, dtype=np.float64), np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    w = np.array([RSNA_WEIGHTS.get(label, 1.0) for label in labels])
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(np.mean((bce * w).sum(axis=1) / w.sum()))


def label_metrics(y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int = 1000, seed: int = 0,
                  groups: np.ndarray | None = None) -> dict[str, Any]:
    """AUROC with its bootstrap CI (resampling `groups` when given), sensitivity/specificity at `threshold`,
    log loss and counts."""
    sens, spec = sensitivity_specificity(y, p, threshold)
    return {
        "auroc": _clean(auroc(y, p)),
        "auroc_ci": [_clean(v) for v in auroc_ci(y, p, n_boot, seed, groups=groups)],
        "sensitivity": _clean(sens),
        "specificity": _clean(spec),
        "log_loss": _clean(log_loss(y, p)),
        "threshold": threshold,
        "n": len(y),
        "n_positive": int(np.sum(y)),
    }


def youden_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold maximising sensitivity + specificity - 1 (0.5 when `y` has one class)."""
    y = np.asarray(y)
    if y.min() == y.max():
        return 0.5
    fpr, tpr, thr = roc_curve(y, p)
    best = int(np.argmax(tpr - fpr))
    return float(min(max(thr[best], 0.01), 0.99))


def _clean(v: float) -> float | None:
    return None if v is None or math.isnan(v) else round(float(v), 6)


def plot_curves(y: np.ndarray, p: np.ndarray, label: str, out_dir: Path, title: str) -> list[Path]:
    """Write roc_<label>.png and pr_<label>.png; returns their paths (none when `y` has a single class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(y)
    if y.min() == y.max():
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    fpr, tpr, _ = roc_curve(y, p)
    precision, recall, _ = precision_recall_curve(y, p)
    paths = []
    for kind, xs, ys, xl, yl, extra in (
        ("roc", fpr, tpr, "1 - specificity", "sensitivity", f"AUROC {auroc(y, p):.3f}"),
        ("pr", recall, precision, "recall (sensitivity)", "precision (PPV)", f"prevalence {y.mean():.3f}"),
    ):
        fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
        ax.plot(xs, ys, lw=2)
        if kind == "roc":
            ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=xl, ylabel=yl, title=f"{title}: {label}\n{extra}")
        fig.tight_layout()
        path = out_dir / f"{kind}_{label}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
