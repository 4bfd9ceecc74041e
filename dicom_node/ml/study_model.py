"""Study-level decisions for ICH: slice outputs -> study features -> a calibrated study probability per label,
and the per-label thresholds chosen at study level on validation studies.

Features of one study for one label (`study_features`), from the slices of the selected series:
  max_logit     the highest slice logit of the label;
  top3_logit    the mean of its three highest slice logits (robust to one noisy slice);
  log_extent    log(1 + number of model-space mask pixels with probability >= 0.5, summed over slices),
                segmentation models only ("any": the union of the subtype masks);
  max_mask      the logit of the highest mask probability of the study (segmentation models only).

The study probability is a logistic regression over these features, one per label, fitted on validation
studies (`fit_study_model`): trained at study level, so the probability means "this study has it". The
threshold of each label is chosen on out-of-fold probabilities of the same validation studies
(5-fold cross-fitting, so the threshold is not chosen on probabilities the model was fitted on, repeated
10 times with fresh folds and pooled, so it does not hang on which studies shared a fold): the maximum of
Youden's J (sensitivity + specificity - 1), taking the middle of the widest interval of thresholds that
reaches it, in logit space. The manifest keeps the coefficients, the threshold and the operating point it
was chosen at (sensitivity, specificity, counts, repeats). Models without a study model (older manifests)
keep `max` / `topk_mean` of the slice probabilities. The same cross-fitting chooses the SIH threshold
(`train.train_sih`) and the ICH ensemble's (`train_ensemble`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

FEATURES_CLS: tuple[str, ...] = ("max_logit", "top3_logit")
FEATURES_SEG: tuple[str, ...] = (*FEATURES_CLS, "log_extent", "max_mask")
MASK_LEVEL = 0.5
CLIP = 12.0  # logits are clipped to +-CLIP before they become features (saturated sigmoids)
FOLDS = 5
REPEATS = 10  # cross-fitting repeats pooled for a threshold
M = TypeVar("M")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def study_features(slice_logits: np.ndarray, mask_probs: np.ndarray | None, names: Sequence[str]) -> np.ndarray:
    """(labels, features) for one study: `slice_logits` (N, L) in label order (label 0 "any" for masks),
    `mask_probs` (N, L-1, h, w) or None; `names` the features wanted (FEATURES_CLS or FEATURES_SEG)."""
    z = np.clip(np.asarray(slice_logits, dtype=np.float64), -CLIP, CLIP)
    n, n_labels = z.shape
    top = np.sort(z, axis=0)[::-1]
    feats: dict[str, np.ndarray] = {"max_logit": top[0], "top3_logit": top[: min(3, n)].mean(axis=0)}
    if mask_probs is not None:
        m = np.asarray(mask_probs)  # float16 from the network: compared and maximised as it is, not copied
        over = m >= np.float32(MASK_LEVEL)
        # "any" is the union of the subtypes' masks
        extent = np.concatenate([[over.any(axis=1).sum()], over.sum(axis=(0, 2, 3))]).astype(np.float64)
        peak = m.max(axis=(0, 2, 3)).astype(np.float64)
        feats["log_extent"] = np.log1p(extent)
        feats["max_mask"] = np.clip(_logit(np.concatenate([[peak.max()], peak])), -CLIP, CLIP)
    missing = [f for f in names if f not in feats]
    if missing:
        raise ValueError(f"study features {missing} need mask outputs, which this model does not have")
    return np.stack([feats[f] for f in names], axis=1)[:n_labels]


@dataclass(frozen=True)
class StudyModel:
    """Per-label logistic regression over study features: p = sigmoid(intercept + coefficients . features)."""

    features: tuple[str, ...]
    coefficients: dict[str, tuple[float, ...]]
    intercepts: dict[str, float]

    def probabilities(self, features: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        """`features` (labels, features) of one study -> (labels,) probabilities."""
        out = np.empty(len(labels))
        for j, label in enumerate(labels):
            z = self.intercepts[label] + float(np.dot(self.coefficients[label], features[j]))
            out[j] = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"method": "logistic", "features": list(self.features),
                "coefficients": {k: [round(v, 6) for v in c] for k, c in self.coefficients.items()},
                "intercepts": {k: round(v, 6) for k, v in self.intercepts.items()}}

    @staticmethod
    def from_json(d: Any, labels: Sequence[str], problems: list[str]) -> StudyModel | None:
        where = "preprocessing.study_model"
        if not isinstance(d, dict) or d.get("method") != "logistic":
            problems.append(f"{where}: needs {{'method': 'logistic', 'features': [...], 'coefficients': "
                            "{label: [...]}, 'intercepts': {label: b}}")
            return None
        features = tuple(str(f) for f in d.get("features", []))
        if not features or any(f not in FEATURES_SEG for f in features):
            problems.append(f"{where}.features: {list(features)} not a subset of {list(FEATURES_SEG)}")
            return None
        try:
            coef = {str(k): tuple(float(x) for x in v) for k, v in d["coefficients"].items()}
            inter = {str(k): float(v) for k, v in d["intercepts"].items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            problems.append(f"{where}: coefficients and intercepts must be numbers per label")
            return None
        bad = [x for x in labels if len(coef.get(x, ())) != len(features) or x not in inter]
        if bad:
            problems.append(f"{where}: labels {bad} need one coefficient per feature and an intercept")
            return None
        return StudyModel(features, coef, inter)


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    sensitivity: float
    specificity: float
    n_positive: int
    n_negative: int
    rule: str = "youden-midpoint"
    repeats: int = 1  # cross-fitting repeats whose out-of-fold probabilities were pooled

    def to_json(self) -> dict[str, Any]:
        chosen_on = "fixed"
        if self.rule == "youden-midpoint":
            chosen_on = "validation studies, out-of-fold study probabilities" + (
                f" pooled over {self.repeats} repeats of {FOLDS}-fold cross-fitting" if self.repeats > 1 else "")
        return {"threshold": round(self.threshold, 6), "rule": self.rule,
                "sensitivity": round(self.sensitivity, 4), "specificity": round(self.specificity, 4),
                "n_positive": self.n_positive, "n_negative": self.n_negative, "chosen_on": chosen_on}


def choose_threshold(y: np.ndarray, p: np.ndarray) -> OperatingPoint:
    """Maximum Youden J over thresholds; the middle (in logit space) of the widest run of thresholds that
    reach it. One-class data: 0.5."""
    y, p = np.asarray(y).astype(bool), np.asarray(p, dtype=np.float64)
    z = np.clip(_logit(p), -30, 30)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        sens = float((z[y] >= 0).mean()) if pos else math.nan
        spec = float((z[~y] < 0).mean()) if neg else math.nan
        return OperatingPoint(0.5, sens, spec, pos, neg, "one class: 0.5")
    cuts = np.unique(np.concatenate([z, [z.min() - 1.0, z.max() + 1.0]]))
    best_j, best = -2.0, (0.0, 0.0)
    for a, b in itertools.pairwise(cuts):
        t = (a + b) / 2  # every threshold strictly between two neighbouring scores gives the same calls
        j = float((z[y] >= t).mean() + (z[~y] < t).mean() - 1)
        width = b - a
        if j > best_j + 1e-12 or (abs(j - best_j) <= 1e-12 and width > best[1] - best[0]):
            best_j, best = j, (a, b)
    t = (best[0] + best[1]) / 2
    threshold = float(min(max(1 / (1 + math.exp(-t)), 0.001), 0.999))
    sens = float((p[y] >= threshold).mean())
    spec = float((p[~y] < threshold).mean())
    return OperatingPoint(threshold, sens, spec, pos, neg)


def _fit_one(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    if y.min() == y.max():  # one class: a constant model at the observed rate
        rate = min(max(float(y.mean()), 0.01), 0.99)
        return np.zeros(x.shape[1]), math.log(rate / (1 - rate))
    lr = LogisticRegression(C=c, max_iter=2000).fit(x, y)
    return lr.coef_[0].astype(np.float64), float(lr.intercept_[0])


def out_of_fold(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, fit: Callable[[np.ndarray, np.ndarray], M],
                predict: Callable[[M, np.ndarray], np.ndarray], on_all: M, repeats: int = REPEATS) -> np.ndarray:
    """(repeats, S) out-of-fold probabilities: for each repeat, a fresh stratified FOLDS-fold split of the
    studies, each fold predicted by `fit` on the others. A fold holding every study (one study of each
    class) leaves nothing to fit on: `on_all`, the model fitted on every study, predicts it (in-sample)."""
    t = np.asarray(y)
    out = np.zeros((repeats, len(t)))
    for r in range(repeats):
        folds = _stratified_folds(t.astype(int), min(FOLDS, max(2, len(t))), rng)
        for k in range(folds.max() + 1):
            test = folds == k
            model = fit(x[~test], t[~test]) if (~test).any() else on_all
            out[r, test] = predict(model, x[test])
    return out


def pooled_threshold(y: np.ndarray, oof: np.ndarray) -> OperatingPoint:
    """The operating point on out-of-fold probabilities `oof` (repeats, S) pooled over the repeats: one
    split's threshold moves with which studies share a fold (an 8-fold spread for subarachnoid between
    fold seeds on the ICH calibration set); pooling 10 repeats steadies it."""
    repeats = len(oof)
    point = choose_threshold(np.tile(np.asarray(y), repeats), np.asarray(oof).reshape(-1))
    return replace(point, repeats=repeats, n_positive=point.n_positive // repeats,
                   n_negative=point.n_negative // repeats)  # counts of studies; the rates are over the pool


def cross_fitted(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, c: float = 1.0
                 ) -> tuple[np.ndarray, float, OperatingPoint, np.ndarray]:
    """Logistic regression of `y` (S,) on `x` (S, F): coefficients and intercept fitted on every study, the
    operating point chosen on out-of-fold probabilities (`out_of_fold`, pooled: the threshold is not
    chosen on probabilities the model was fitted on), and those probabilities averaged over the repeats (S,)."""
    t = np.asarray(y).astype(int)
    w, b = _fit_one(x, t, c)
    oof = out_of_fold(x, t, rng, lambda xs, ys: _fit_one(xs, ys, c), logistic_probability, (w, b))
    return w, b, pooled_threshold(t, oof), oof.mean(axis=0)


def logistic_probability(model: tuple[np.ndarray, float], x: np.ndarray) -> np.ndarray:
    """sigmoid(x w + b) for a (coefficients, intercept) pair, x (S, F)."""
    w, b = model
    return np.asarray(1 / (1 + np.exp(-np.clip(x @ w + b, -60, 60))))


def fit_study_model(features: np.ndarray, y: np.ndarray, labels: Sequence[str], names: Sequence[str],
                    seed: int = 0, c: float = 1.0) -> tuple[StudyModel, dict[str, OperatingPoint], np.ndarray]:
    """Fit on validation studies: `features` (S, L, F), `y` (S, L). Returns the model, each label's
    operating point (threshold chosen on out-of-fold probabilities) and those probabilities (S, L)."""
    rng = np.random.default_rng(seed)
    coef: dict[str, tuple[float, ...]] = {}
    inter: dict[str, float] = {}
    points: dict[str, OperatingPoint] = {}
    oof = np.zeros((len(y), len(labels)))
    for j, label in enumerate(labels):
        w, b, points[label], oof[:, j] = cross_fitted(features[:, j, :], y[:, j], rng, c)
        coef[label], inter[label] = tuple(float(v) for v in w), b
    return StudyModel(tuple(names), coef, inter), points, oof


def _stratified_folds(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    folds = np.zeros(len(y), dtype=int)
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == cls))
        folds[idx] = np.arange(len(idx)) % k
    return folds
