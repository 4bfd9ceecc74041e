"""Attention-based multiple-instance classifier (Ilse, Tomczak and Welling 2018, gated attention) over the
bleeds of a study: each bleed is an instance (its detector features plus where it is and how it looks),
the study is the bag, the output the small-vessel-disease class.

A bag with no bleed is answered from a learned "empty" embedding; bag-level numbers join the pooled
embedding before the last layer: log of the count and the fraction of deep bleeds (`BAG_FEATURES`), so the
count and the lobar/deep distribution the clinical criteria use are explicit inputs, and, for a classifier
trained with them, the FLAIR white-matter hyperintensity extent and whether a FLAIR was read
(`FLAIR_FEATURES`, `ml/wmh.py`). `attention` gives each bleed's weight in its study's decision.
"""

from __future__ import annotations

import torch
from torch import nn

BAG_FEATURES: tuple[str, ...] = ("log_count", "deep_fraction")  # log1p(count), fraction of bleeds deep
FLAIR_FEATURES: tuple[str, ...] = ("flair_wmh_extent", "flair_present")  # wmh.FlairExtent.bag_features
BAG_LAYOUTS = (BAG_FEATURES, BAG_FEATURES + FLAIR_FEATURES)  # what a manifest's classifier.bag_features may be


class AttentionMIL(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, in_features: int, classes: int, hidden: int = 64, attention: int = 32,
                 dropout: float = 0.1, bag_width: int = len(BAG_FEATURES)) -> None:
        super().__init__()
        self.in_features = in_features
        self.bag_width = bag_width
        self.embed = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                   nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.att_v = nn.Linear(hidden, attention)
        self.att_u = nn.Linear(hidden, attention)
        self.att_w = nn.Linear(attention, 1)
        self.empty = nn.Parameter(torch.zeros(hidden))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden + bag_width, classes))
        # instance feature standardisation, fitted on the training bleeds (saved with the weights)
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))

    def pool(self, bag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled embedding, attention weights) of one bag (n, in_features); n may be 0."""
        if bag.shape[0] == 0:
            return self.empty, bag.new_zeros(0)
        h = self.embed((bag - self.mean) / self.std)
        a = self.att_w(torch.tanh(self.att_v(h)) * torch.sigmoid(self.att_u(h))).squeeze(-1)
        weights = torch.softmax(a, dim=0)
        return (weights[:, None] * h).sum(dim=0), weights

    def forward(self, bags: list[torch.Tensor], bag_features: torch.Tensor) -> torch.Tensor:
        """Class logits (B, classes) for B bags; `bag_features` (B, self.bag_width)."""
        pooled = torch.stack([self.pool(b)[0] for b in bags])
        return self.head(torch.cat([pooled, bag_features], dim=1))

    @torch.no_grad()
    def attention(self, bag: torch.Tensor) -> torch.Tensor:
        return self.pool(bag)[1]


def bag_features(n_bleeds: int, n_deep: int) -> list[float]:
    return [float(torch.log1p(torch.tensor(float(n_bleeds)))), n_deep / n_bleeds if n_bleeds else 0.0]
