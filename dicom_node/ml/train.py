"""Training: a model folder (weights + manifest) that the registry loads with no code change.

ICH: one slice classifier, 6 sigmoid outputs, BCE with per-label positive weights, flips and shifts as
augmentation, per-label thresholds at the validation set's Youden point on study-level probabilities.
SIH: three binary networks (axial, coronal 1, coronal 2), then a logistic regression over their
logits fitted on the validation studies (on the training studies when validation lacks a class), its
threshold chosen at study level on the validation studies' out-of-fold probabilities.
Seeded: the same data, options and seed give the same weights on the same machine and library versions.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dicom_node.ml.datasets import load_sih
from dicom_node.ml.manifest import ICH_LABELS, SIH_LABELS, SIH_ROLES, InputSpec, sha256_file, write_manifest
from dicom_node.ml.metrics import auroc
from dicom_node.ml.nets import SEGMENTATION_ARCHITECTURES, build_model
from dicom_node.ml.preprocess import ICH_WINDOW_NAMES, ICH_WINDOWS
from dicom_node.ml.selection import default_selection
from dicom_node.ml.study_model import OperatingPoint, cross_fitted, logistic_probability
from dicom_node.ml.train_ich import optimizer_step

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    task: str  # "ich" | "sih"
    data: Path
    out: Path
    architecture: str = "narrow_resnet"
    epochs: int = 6
    size: int = 128
    seed: int = 0
    val_fraction: float = 0.2
    batch_size: int = 32
    learning_rate: float = 2e-3
    context_slices: int = 0
    annotations: str = "auto"  # ICH: "auto" | "seg" | "boxes" | "none" (weak: slice labels only)
    subset: str = "all"  # ICH: "all" | "subdural" | "subarachnoid" | "intraparenchymal" | "small-lesion" (specialists)
    neg_ratio: float = 1.0  # ICH: negative slices per positive slice in each epoch
    seg_weight: float = 1.0  # ICH: weight of the mask loss (0: do not train the segmentation head)
    name: str = ""
    version: str = "0.1.0"
    synthetic_demo: bool = False
    training_data: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def split_studies(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and validation studies (at least one of each when n >= 2)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, round(n * val_fraction))) if n >= 2 and val_fraction > 0 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random left-right flip and shift by up to 1/16 of the size, per batch."""
    if torch.rand(1, generator=gen).item() < 0.5:
        x = torch.flip(x, dims=[3])
    limit = max(1, x.shape[-1] // 16)
    dy, dx = (int(v) for v in torch.randint(-limit, limit + 1, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def fit(net: nn.Module, x: np.ndarray, y: np.ndarray, opts: TrainOptions, desc: str) -> nn.Module:
    """Mini-batch Adam with a cosine schedule on BCE-with-logits; y: (N, outputs)."""
    gen = torch.Generator().manual_seed(opts.seed)
    pos = y.sum(axis=0)
    pos_weight = torch.tensor(np.clip(np.sqrt((len(y) - pos) / np.maximum(pos, 1)), 1.0, 10.0), dtype=torch.float32)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    optim = torch.optim.AdamW(net.parameters(), lr=opts.learning_rate, weight_decay=1e-4)
    steps = opts.epochs * max(1, -(-len(x) // opts.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=opts.learning_rate, total_steps=steps, pct_start=0.15)
    net.train()
    with tqdm(total=steps, desc=desc, unit="batch") as bar:
        for epoch in range(opts.epochs):
            order = torch.randperm(len(x), generator=gen).numpy()
            total = 0.0
            for start in range(0, len(x), opts.batch_size):
                idx = np.sort(order[start : start + opts.batch_size])
                xb = _augment(torch.from_numpy(x[idx].astype(np.float32)), gen)
                yb = torch.from_numpy(y[idx])
                loss = loss_fn(net(xb), yb)
                total += optimizer_step(loss, optim, sched, bar, epoch) * len(idx)
            log.info("epoch done", extra={"model": desc, "epoch": epoch + 1, "loss": round(total / len(x), 5)})
    return net.eval()


@torch.inference_mode()
def predict_logits(net: nn.Module, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    net.eval()
    out = [net(torch.from_numpy(x[s : s + batch_size].astype(np.float32))).float().numpy()
           for s in range(0, len(x), batch_size)]
    return np.concatenate(out)


def _save_weights(net: nn.Module, folder: Path, file_name: str) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, path)
    return {"weights": file_name, "sha256": sha256_file(path)}


def train_ich(opts: TrainOptions) -> Path:
    seed_everything(opts.seed)
    from dicom_node.ml.train_ich import IchOptions, ich_spec, load_training_data, train_ich_model

    spec = ich_spec(opts.size, opts.context_slices)
    data = load_training_data(opts.data, spec, opts.annotations)
    train_s, val_s = split_studies(len(data.study_uids), opts.val_fraction, opts.seed)
    ich_opts = IchOptions(opts.annotations, opts.subset, opts.neg_ratio, opts.seg_weight, int(opts.extra.get("crop") or 0))
    net, study_model, thresholds, report = train_ich_model(
        data, spec, train_s, val_s, opts.architecture, opts.epochs, opts.batch_size, opts.learning_rate, opts.seed,
        ich_opts)
    weights = _save_weights(net, opts.out, "weights.pt")
    kind = "segmentation" if opts.architecture in SEGMENTATION_ARCHITECTURES else "classifier"
    subset = "" if opts.subset == "all" else f", {opts.subset} specialist"
    manifest = {
        "name": opts.name or "ich",
        "version": opts.version,
        "display_name": f"dicom-node ICH {kind}{subset}" + (" (synthetic demo)" if opts.synthetic_demo else ""),
        "task": "ich-ct",
        "labels": list(ICH_LABELS),
        "critical_labels": list(ICH_LABELS),
        "thresholds": thresholds,
        "operating_points": report["operating_points"],
        "input": {"modality": "CT", "size": opts.size, "channels": list(ICH_WINDOW_NAMES),
                  "windows": [list(w) for w in ICH_WINDOWS], "context_slices": opts.context_slices},
        "preprocessing": {"hu": "RescaleSlope/RescaleIntercept", "resize": "aspect-preserving, zero pad, centred",
                          "study_aggregation": "study_model", "study_model": study_model},
        "selection": default_selection("ich-ct"),
        "components": [{"role": "slice", "architecture": opts.architecture, **weights}],
        **_common(opts, {k: v for k, v in report.items() if k != "operating_points"}),
    }
    write_manifest(opts.out, manifest)
    return opts.out


def train_sih(opts: TrainOptions) -> Path:
    seed_everything(opts.seed)
    spec = InputSpec(modality="MR", size=opts.size, channels=("t1c",), percentiles=(1.0, 99.0))
    data = load_sih(opts.data, spec)
    train_s, val_s = split_studies(len(data.study_uids), opts.val_fraction, opts.seed)
    components, val_logits, train_logits = [], {}, {}
    for role in SIH_ROLES:
        seed_everything(opts.seed)
        net = build_model(opts.architecture, 1, 1)
        fit(net, data.inputs[role][train_s], data.labels[train_s, None], opts, f"train sih {role} {opts.architecture}")
        val_logits[role] = predict_logits(net, data.inputs[role][val_s])[:, 0] if len(val_s) else np.zeros(0)
        train_logits[role] = predict_logits(net, data.inputs[role][train_s])[:, 0]
        components.append({"role": role, "architecture": opts.architecture, **_save_weights(net, opts.out, f"{role}.pt")})
    use_val = len(val_s) > 0 and 0 < data.labels[val_s].sum() < len(val_s)
    idx, logits = (val_s, val_logits) if use_val else (train_s, train_logits)
    features = np.stack([logits[r] for r in SIH_ROLES], axis=1)
    # the combination and the threshold at study level: the threshold on out-of-fold probabilities of the
    # validation studies (cross-fitted, as for ICH); without both classes there, 0.5 on the training studies
    coef, intercept, point, oof = cross_fitted(features, data.labels[idx], np.random.default_rng(opts.seed))
    if not use_val:
        y, p = data.labels[idx].astype(bool), logistic_probability((coef, intercept), features)
        point = OperatingPoint(0.5, float((p[y] >= 0.5).mean()) if y.any() else 0.0,
                               float((p[~y] < 0.5).mean()) if (~y).any() else 0.0, int(y.sum()), int((~y).sum()),
                               "validation lacks a class: 0.5 (sensitivity, specificity on the training studies)")
    validation = {}
    if len(val_s):
        validation = {"sih_auroc_out_of_fold": _r(auroc(data.labels[val_s], oof)) if use_val else None,
                      **{f"{r}_auroc": _r(auroc(data.labels[val_s], val_logits[r])) for r in SIH_ROLES}}
    manifest = {
        "name": opts.name or "sih",
        "version": opts.version,
        "display_name": "dicom-node SIH classifier" + (" (synthetic demo)" if opts.synthetic_demo else ""),
        "task": "sih-mr",
        "labels": list(SIH_LABELS),
        "critical_labels": [],
        "thresholds": {"sih": round(point.threshold, 6)},
        "operating_points": {"sih": point.to_json()},
        "input": {"modality": "MR", "size": opts.size, "channels": ["t1c"], "percentiles": [1.0, 99.0]},
        "preprocessing": {"normalisation": "1st-99th percentile of non-zero pixels to [0, 1]",
                          "resize": "aspect-preserving, zero pad, centred",
                          "image_selection": "selection.select_sih_images (axial 0.30, coronal 0.45 and 0.70)"},
        "selection": default_selection("sih-mr"),
        "components": components,
        "ensemble": {"method": "logistic", "inputs": "logits",
                     "coefficients": {r: round(float(c), 6) for r, c in zip(SIH_ROLES, coef, strict=True)},
                     "intercept": round(float(intercept), 6),
                     "fitted_on": "validation studies" if use_val else "training studies"},
        **_common(opts, {"validation": validation, "train_studies": len(train_s), "validation_studies": len(val_s)}),
    }
    write_manifest(opts.out, manifest)
    return opts.out


def _r(v: float) -> float | None:
    return None if math.isnan(v) else round(float(v), 4)


def _common(opts: TrainOptions, training_metrics: dict[str, Any]) -> dict[str, Any]:
    demo = opts.synthetic_demo
    return {
        "training": {"data": opts.training_data or str(opts.data), "architecture": opts.architecture,
                     "epochs": opts.epochs, "seed": opts.seed, "val_fraction": opts.val_fraction,
                     "batch_size": opts.batch_size, "learning_rate": opts.learning_rate, **training_metrics},
        "training_data": opts.training_data or f"DICOM + labels.csv from {opts.data}",
        "metrics": {},
        "intended_use": (
            "SYNTHETIC DEMO: trained on generated phantoms only; demonstrates the pipeline; never for clinical use."
            if demo else "Triage aid for radiologists; not a diagnosis. Validate locally before clinical use."
        ),
        "synthetic_demo": demo,
        "tags": ["synthetic-demo"] if demo else [],
    }


def train(opts: TrainOptions) -> Path:
    if opts.task == "ich":
        return train_ich(opts)
    if opts.task == "sih":
        return train_sih(opts)
    if opts.task == "cmb":
        from dicom_node.ml.train_cmb import train_cmb

        return train_cmb(opts)
    raise ValueError(f"task must be ich, sih or cmb, got {opts.task!r}")
