"""Second-stage scoring of microbleed candidates (false-positive reduction): the probability that a merged
candidate is a bleed, from everything the first stage knows about it.

The detector scores each slice's detection alone. Many of its false bleeds (vessels seen end on, a
calcification, an air-bone artefact) and its misses (bleeds under 3 mm, scored low on every slice) are told
apart better by what the candidate looks like as a whole: how deep it is, where it lies, its size, how many
slices it spans and how long it is along the slice normal, how dark its surroundings are, and the box head's
128 features of its key detection. A logistic regression over those (`features`, standardised) gives the
candidate's `confidence`; the `microbleeds` threshold applies to it.

Fitting (`fit`) uses studies the detector never saw; the regularisation strength is the one with the lowest
cross-fitted log loss (folds by study), and `fit` also returns each candidate's cross-fitted probability,
from the fold model that did not see its study, so the threshold and the classifier downstream are chosen
on honest scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

# the candidate's numbers before the detector features: INSTANCE_FEATURES (8), then these three
SHAPE_FEATURES: tuple[str, ...] = ("slices", "extent_mm", "diameter_mm")
C_GRID = (0.003, 0.01, 0.03, 0.1)  # inverse L2 strength tried by `fit`
FOLDS = 5


class CandidateRescorer(nn.Module):
    """logit = w . (x - mean) / std + b over `features(candidate)`; saved as a state dict."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.linear = nn.Linear(in_features, 1)
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear((x - self.mean) / self.std))[:, 0]

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0, np.float64)
        with torch.no_grad():
            p = self(torch.from_numpy(np.asarray(x, np.float32)))
        return np.asarray(p.numpy(), np.float64)


def features(candidate: Any) -> np.ndarray:
    """One row: the candidate's instance features, `SHAPE_FEATURES` and its detector features."""
    shape = [float(len(candidate.masks)), float(candidate.extent_mm), float(candidate.diameter_mm)]
    return np.concatenate([np.asarray(candidate.instance, np.float32), np.asarray(shape, np.float32),
                           np.asarray(candidate.features, np.float32)])


def matrix(candidates: Sequence[Any]) -> np.ndarray:
    return np.stack([features(c) for c in candidates]) if candidates else np.zeros((0, 0), np.float32)


def rescore(rescorer: CandidateRescorer, candidates: Sequence[Any]) -> None:
    """Each candidate's `confidence` set to the rescorer's probability (in place)."""
    if not candidates:
        return
    for c, p in zip(candidates, rescorer.probabilities(matrix(candidates)), strict=True):
        c.confidence = float(p)


def _logistic(c: float) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))


def _folds(groups: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import GroupKFold

    n = min(FOLDS, len(np.unique(groups)))
    dummy = np.zeros(len(groups))
    return [(a, b) for a, b in GroupKFold(n).split(dummy, dummy, groups)]


def fit(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[CandidateRescorer, np.ndarray, dict[str, Any]]:
    """The rescorer fitted on every candidate, each candidate's cross-fitted probability (from the fold model
    that did not see its study) and what the manifest records. `groups`: the study of each candidate."""
    from sklearn.metrics import log_loss, roc_auc_score

    y = np.asarray(y, bool)
    folds = _folds(groups)
    best: tuple[float, float, np.ndarray] | None = None
    losses = {}
    for c in C_GRID:
        oof = np.zeros(len(y))
        for a, b in folds:
            if len(np.unique(y[a])) < 2:  # every bleed in the held-out studies: the rest say only the prior
                oof[b] = float(y[a].mean())
                continue
            oof[b] = _logistic(c).fit(x[a], y[a]).predict_proba(x[b])[:, 1]
        losses[c] = float(log_loss(y, np.clip(oof, 1e-6, 1 - 1e-6), labels=[False, True]))
        if best is None or losses[c] < best[0]:
            best = (losses[c], c, oof)
    assert best is not None
    _, c, oof = best
    pipe = _logistic(c).fit(x, y)
    scaler, reg = pipe.steps[0][1], pipe.steps[1][1]
    net = CandidateRescorer(x.shape[1])
    with torch.no_grad():
        net.mean.copy_(torch.from_numpy(scaler.mean_.astype(np.float32)))
        net.std.copy_(torch.from_numpy(np.maximum(scaler.scale_, 1e-12).astype(np.float32)))
        net.linear.weight.copy_(torch.from_numpy(reg.coef_.astype(np.float32)))
        net.linear.bias.copy_(torch.from_numpy(reg.intercept_.astype(np.float32)))
    record = {"C": c, "log_loss_by_C": {str(k): round(v, 4) for k, v in losses.items()},
              "cross_fitted_auc": round(float(roc_auc_score(y, oof)), 4),
              "candidates": len(y), "bleeds": int(y.sum()), "studies": len(np.unique(groups)),
              "folds": len(folds), "rule": "C with the lowest cross-fitted log loss (folds by study)"}
    return net.eval(), oof, record
