"""Training the report labeller in torch; the folder it writes is what `model.load_labeller` reads.

The network (`BagNet`) is the one `model.ReportLabeller` runs in numpy: per sentence part an EmbeddingBag
(sum) over its hashed features giving 16 logits (linear, the default; or through a hidden layer), and per
report a soft maximum over its parts (multiple-instance learning: only report labels are known). The
linear form generalises best to hand-written reports: one sentence's words cannot cancel another finding
stated beside them. Loss: BCE with positive weights
sqrt(neg/pos) capped at 10; sparse Adam for the embedding, AdamW for the rest. Per-label thresholds: the
F1-best point on the validation reports (0.5 when validation lacks a class). Seeded: same data, options
and seed give the same weights on the same machine and library versions.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dicom_node.ml.metrics import auroc
from dicom_node.textreports import LABELS
from dicom_node.textreports.model import (
    ARCHITECTURE,
    FEATURES_VERSION,
    LEAK,
    SHARPNESS,
    TASK,
    ReportLabeller,
    hashed,
    load_manifest,
    sha256_file,
)

log = logging.getLogger(__name__)


@dataclass
class LabellerOptions:
    out: Path
    name: str = "report-labels"
    version: str = "0.1.0"
    epochs: int = 6
    batch_size: int = 128
    learning_rate: float = 0.05
    buckets: int = 1 << 18
    dim: int = 32
    hidden: int = 0  # 0: linear per part
    seed: int = 0
    val_fraction: float = 0.1
    feature_dropout: float = 0.2  # share of a sentence's features dropped at random in each training step
    synthetic_demo: bool = False
    training_data: str = ""


class BagNet(nn.Module):
    """hidden > 0: per sentence f(sum of embeddings + bias) - f(bias) + offset, where f is leaky ReLU, hidden
    layer, leaky ReLU, outputs: a sentence of unknown words scores `offset`. hidden = 0: a linear model (each
    feature's row holds its weight per label; the bias is the output bias). Per report: log-sum-exp pooling."""

    def __init__(self, buckets: int, dim: int, hidden: int, outputs: int, sharpness: float = SHARPNESS) -> None:
        super().__init__()
        self.sharpness = sharpness
        self.linear = hidden == 0
        width = outputs if self.linear else dim
        self.embedding = nn.EmbeddingBag(buckets, width, mode="sum", sparse=True)
        nn.init.normal_(self.embedding.weight, std=0.01 if self.linear else 0.05)
        self.bias0 = nn.Parameter(torch.full((width,), -2.0 if self.linear else 0.1))
        self.hidden = nn.Linear(dim, hidden if hidden else 1)  # unused by the linear form
        self.out = nn.Linear(hidden if hidden else 1, outputs)
        self.offset = nn.Parameter(torch.full((outputs,), -2.0))

    def mlp(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(nn.functional.leaky_relu(self.hidden(nn.functional.leaky_relu(z, LEAK)), LEAK))

    def forward(self, idx: torch.Tensor, offsets: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
        """(n, outputs) report logits from the sentences' features (`owner`: each sentence's report)."""
        z = self.embedding(idx, offsets) + self.bias0
        if not self.linear:  # the empty sentence scores `offset` exactly: unknown words say nothing
            z = self.mlp(z) - self.mlp(self.bias0[None, :]) + self.offset
        index = owner[:, None].expand_as(z)
        top = torch.full((n, z.shape[1]), -1e4, dtype=z.dtype).scatter_reduce(
            0, index, z, reduce="amax", include_self=True).detach()
        total = torch.zeros((n, z.shape[1]), dtype=z.dtype).scatter_add(
            0, index, torch.exp(self.sharpness * (z - top[owner])))
        return top + torch.log(total) / self.sharpness


def _batch(encoded: list[list[np.ndarray]], rows: np.ndarray, rng: np.random.Generator | None = None,
           dropout: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    parts: list[np.ndarray] = []
    owner: list[int] = []
    empty = np.zeros(0, np.int64)
    for k, i in enumerate(rows):
        for sentence in encoded[i]:
            if rng is not None and dropout > 0 and len(sentence) > 1:
                sentence = sentence[rng.random(len(sentence)) >= dropout]
            parts.append(sentence)
            owner.append(k)
        if not encoded[i]:
            parts.append(empty)
            owner.append(k)
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    idx = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return torch.from_numpy(idx), torch.from_numpy(offsets), torch.tensor(owner, dtype=torch.int64)


def f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """A threshold (0.05-0.95) with the best F1 on (y, p): of those within 0.002 of the best, the one
    nearest 0.5 (generated validation data separates so well that many tie); 0.5 when y has one class."""
    if y.min() == y.max():
        return 0.5
    grid = np.linspace(0.05, 0.95, 91)
    scores = []
    for t in grid:
        pred = p >= t
        tp = float((pred & (y > 0)).sum())
        scores.append(2 * tp / max(1.0, float(pred.sum()) + float((y > 0).sum())))
    near = grid[np.asarray(scores) >= max(scores) - 0.002]
    return round(float(near[np.argmin(np.abs(near - 0.5))]), 3)


def train_labeller(texts: list[str], y: np.ndarray, opts: LabellerOptions) -> Path:
    """Train on (texts, y (N, 16)), write `opts.out` (manifest.json + weights.npz); returns the folder."""
    if len(texts) < 20:
        raise ValueError("training the report labeller needs at least 20 labelled reports")
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    encoded = [[np.asarray(s, dtype=np.int64) for s in hashed(t, opts.buckets)] for t in texts]
    order = rng.permutation(len(texts))
    n_val = max(1, round(len(texts) * opts.val_fraction)) if opts.val_fraction > 0 else 0
    val, train = np.sort(order[:n_val]), order[n_val:]
    net = BagNet(opts.buckets, opts.dim, opts.hidden, len(LABELS))
    pos = y[train].sum(axis=0)
    pos_weight = torch.tensor(np.clip(np.sqrt((len(train) - pos) / np.maximum(pos, 1)), 1.0, 10.0),
                              dtype=torch.float32)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    sparse_opt = torch.optim.SparseAdam(list(net.embedding.parameters()), lr=opts.learning_rate)
    dense = [p for n, p in net.named_parameters()
             if not n.startswith("embedding.") and not (net.linear and n.split(".")[0] in ("hidden", "out", "offset"))]
    dense_opt = torch.optim.AdamW(dense, lr=opts.learning_rate / 4, weight_decay=1e-4)
    targets = torch.from_numpy(y.astype(np.float32))
    steps = opts.epochs * max(1, -(-len(train) // opts.batch_size))
    step = 0
    net.train()
    for epoch in range(opts.epochs):
        rng.shuffle(train)
        total = 0.0
        for s in range(0, len(train), opts.batch_size):
            rows = train[s:s + opts.batch_size]
            scale = 0.5 * (1 + np.cos(np.pi * step / steps))  # cosine decay
            for opt, base in ((sparse_opt, opts.learning_rate), (dense_opt, opts.learning_rate / 4)):
                for g in opt.param_groups:
                    g["lr"] = base * (0.05 + 0.95 * scale)
            idx, offsets, owner = _batch(encoded, rows, rng, opts.feature_dropout)
            loss = loss_fn(net(idx, offsets, owner, len(rows)), targets[rows])
            sparse_opt.zero_grad()
            dense_opt.zero_grad()
            loss.backward()
            sparse_opt.step()
            dense_opt.step()
            total += float(loss.detach()) * len(rows)
            step += 1
        log.info("epoch done", extra={"model": "report-labels", "epoch": epoch + 1,
                                      "loss": round(total / max(1, len(train)), 5)})
    seen = np.unique(np.concatenate([s for i in train for s in encoded[i]]))
    folder = _write(net, seen, opts, {"train_reports": len(train), "validation_reports": len(val)})
    labeller = ReportLabeller(load_manifest(folder))
    if len(val):
        p = labeller.probabilities([texts[i] for i in val])
        thresholds = {k: f1_threshold(y[val, j], p[:, j]) for j, k in enumerate(LABELS)}
        validation = {k: {"auroc": _r(auroc(y[val, j], p[:, j])), "threshold": thresholds[k],
                          "n_positive": int(y[val, j].sum())} for j, k in enumerate(LABELS)}
        _update_manifest(folder, thresholds, validation)
    return folder


def _r(v: float) -> float | None:
    return None if math.isnan(v) else round(float(v), 6)


def _write(net: BagNet, seen: np.ndarray, opts: LabellerOptions, counts: dict[str, int]) -> Path:
    import json

    folder = Path(opts.out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "weights.npz"
    with torch.no_grad():
        np.savez_compressed(
            path, rows=seen.astype(np.int32),
            embedding=net.embedding.weight[torch.from_numpy(seen)].numpy().astype(np.float16),
            bias0=net.bias0.numpy().astype(np.float32),
            w1=_dense(net, net.hidden.weight), b1=_dense(net, net.hidden.bias),
            w2=_dense(net, net.out.weight), b2=_dense(net, net.out.bias),
            offset=net.offset.numpy().astype(np.float32),
        )
    demo = " (synthetic demo)" if opts.synthetic_demo else ""
    manifest: dict[str, Any] = {
        "name": opts.name,
        "version": opts.version,
        "display_name": f"dicom-node report labeller{demo}",
        "task": TASK,
        "architecture": ARCHITECTURE,
        "labels": list(LABELS),
        "thresholds": {k: 0.5 for k in LABELS},
        "features": {"version": FEATURES_VERSION, "hash": "crc32", "buckets": opts.buckets,
                     "description": "dicom_node.textreports.text.features: per sentence, words, word pairs, "
                                    "5-letter prefixes and modifier combinations, each tagged A/N/U/H "
                                    "(affirmed, negated, uncertain, history); report logit = max over sentences"},
        "network": {"embedding_dim": opts.dim, "hidden": opts.hidden, "stored_rows": len(seen),
                    "pooling": "log-sum-exp over sentences", "pool_sharpness": SHARPNESS},
        "components": [{"role": "text", "architecture": ARCHITECTURE, "weights": path.name,
                        "sha256": sha256_file(path)}],
        "training": {"data": opts.training_data, "epochs": opts.epochs, "batch_size": opts.batch_size,
                     "feature_dropout": opts.feature_dropout,
                     "learning_rate": opts.learning_rate, "seed": opts.seed, "val_fraction": opts.val_fraction,
                     **counts},
        "training_data": opts.training_data,
        "intended_use": ("SYNTHETIC DEMO: trained on generated reports only; labels reports for the pipeline's "
                         "demonstration and tests; not validated on real reports." if opts.synthetic_demo else
                         "Labels neuroradiology reports for training data and AI-vs-report monitoring."),
        "synthetic_demo": opts.synthetic_demo,
        "tags": ["synthetic-demo"] if opts.synthetic_demo else [],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return folder


def _dense(net: BagNet, p: torch.Tensor) -> np.ndarray:
    """A hidden-layer array to store; empty for the linear form (which has none)."""
    return np.zeros((0,), np.float32) if net.linear else p.detach().numpy().astype(np.float32)


def _update_manifest(folder: Path, thresholds: dict[str, float], validation: dict[str, Any]) -> None:
    import json

    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["thresholds"] = thresholds
    manifest["operating_points"] = {k: "F1-best threshold on the validation reports" for k in LABELS}
    manifest["training"]["validation"] = validation
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
