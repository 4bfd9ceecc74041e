"""ICH training: a slice network (optionally with a segmentation head trained on strong annotations), then
the study-level model and thresholds fitted on the validation studies. Writes a loadable model folder.

- Data: `datasets.load_ich` (the node's own selection and preprocessing) with the masks of
  `--annotations` (SEG files, boxes.csv, or none = weak: slice labels only).
- Subset (seed 002's specialists): `all`; `subdural` / `subarachnoid` (training studies with that subtype,
  plus the normal ones); `subarachnoid-vs-extra-axial` (subarachnoid studies, the normal ones, and those
  with subdural or epidural blood: convexity blood under the dura is what an all-ICH network mistakes for
  subarachnoid, so this specialist sees it as the hard negative it is); `intraparenchymal` (studies with
  parenchymal or ventricular blood, plus the normal ones: ventricular blood is what an all-ICH network
  mistakes for parenchymal, so this specialist sees it as the hard negative it is); `intraparenchymal-only`
  (studies with parenchymal blood, plus the normal ones: for a full-resolution member);
  `intraparenchymal-and-extra-axial` (studies with parenchymal, subarachnoid, subdural or epidural blood, the
  intraventricular ones as hard negatives, and the normal ones: a full-resolution member that also sees a
  thick subdural crescent as the hard negative for parenchymal and subarachnoid blood it is, where a 128 px
  member blurs the sulci it spares); `small-lesion`
  (positive studies whose largest lesion cross-section is at or below the median of the positive training
  studies, plus the normal ones). Validation is always every validation study, so specialists and the
  all-ICH model are judged, and combined, on the same studies.
- Each epoch sees every positive slice of the subset and `neg_ratio` times as many negative slices drawn
  afresh (normal slices are plentiful and alike).
- Crops (`crop` below the input size; `_crops`): each slice is seen as a crop of its input, around its blood
  or anywhere in the head, so a network can learn at full resolution (512 px: a 4 mm clot is 18 px across,
  not 4 as at 128 px) for the cost of training at the crop size. The network is fully convolutional; it
  runs on whole slices in `evaluate` and the worker, and its study model is fitted on whole slices.
- Loss: BCE on the six slice labels (positive weights sqrt(neg/pos), capped at 10) plus, with masks,
  `seg_weight` x (BCE + soft Dice) on the five subtype masks at half the input resolution. Flips and
  shifts move image and mask together.
- Study level: the network's outputs on the validation studies -> `study_model.study_features` ->
  per-label logistic regression; thresholds at the Youden midpoint of out-of-fold probabilities
  (`study_model.fit_study_model`), stored with their operating points in the manifest.
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
from tqdm import tqdm

from dicom_node.ml.datasets import IchData, load_ich
from dicom_node.ml.ich_outputs import run_network
from dicom_node.ml.manifest import ICH_LABELS, InputSpec
from dicom_node.ml.metrics import auroc
from dicom_node.ml.nets import SEGMENTATION_ARCHITECTURES, build_model, has_masks
from dicom_node.ml.preprocess import ICH_WINDOW_NAMES, ICH_WINDOWS
from dicom_node.ml.study_model import FEATURES_CLS, FEATURES_SEG, fit_study_model, study_features

log = logging.getLogger(__name__)

SUBSETS = ("all", "subdural", "subarachnoid", "subarachnoid-vs-extra-axial", "intraparenchymal",
           "intraparenchymal-only", "intraparenchymal-and-extra-axial", "epidural-vs-subdural", "small-lesion")
# the subtypes a specialist is built around: its training studies are those with any of them (plus the
# normal ones), and an ensemble averages its masks of these only (its other mask outputs see positives only
# where such blood lies beside them, if ever); "all" and "small-lesion" see every subtype
SUBSET_MASK_LABELS = {"subdural": ("subdural",), "subarachnoid": ("subarachnoid",),
                      "subarachnoid-vs-extra-axial": ("epidural", "subarachnoid", "subdural"),
                      "intraparenchymal": ("intraparenchymal", "intraventricular"),
                      "intraparenchymal-only": ("intraparenchymal",),
                      "intraparenchymal-and-extra-axial": ("epidural", "intraparenchymal", "subarachnoid", "subdural"),
                      "epidural-vs-subdural": ("epidural", "subdural")}
# subtypes whose studies a specialist also learns from, as hard negatives, without being built around them
# (its masks of them are not averaged, and its study logit has no say on them): ventricular blood is what a
# full-resolution parenchymal member, trained without it, names parenchymal
SUBSET_HARD_NEGATIVES = {"intraparenchymal-and-extra-axial": ("intraventricular",)}
ANNOTATIONS = ("auto", "seg", "boxes", "none")


@dataclass(frozen=True)
class IchOptions:
    annotations: str = "auto"
    subset: str = "all"
    neg_ratio: float = 1.0
    seg_weight: float = 1.0
    crop: int = 0  # > 0 and below the input size: train on crops of this many pixels (see `_crops`)

    def crop_at(self, size: int) -> int:
        """The crop used for inputs of `size` px: 0 (whole slices) unless the crop is smaller."""
        return self.crop if 0 < self.crop < size else 0


def subset_studies(data: IchData, studies: np.ndarray, subset: str) -> np.ndarray:
    """The training studies a specialist learns from (see the module docstring)."""
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    if subset == "all":
        return studies
    y = np.stack([data.labels[data.study == s].max(axis=0) for s in studies])
    normal = y[:, 0] == 0
    if subset in SUBSET_MASK_LABELS:  # a specialist learns from the studies with the subtypes it is built around
        columns = [ICH_LABELS.index(label) for label in SUBSET_MASK_LABELS[subset] + SUBSET_HARD_NEGATIVES.get(subset, ())]
        return studies[normal | (y[:, columns] > 0).any(axis=1)]
    size = np.array([_largest_section(data, s) for s in studies], dtype=np.float64)
    cut = float(np.median(size[~normal])) if (~normal).any() else 0.0
    return studies[normal | (size <= cut)]


def _largest_section(data: IchData, study: int) -> float:
    """The largest lesion cross-section of a study (mask pixels on one slice; positive slices without masks)."""
    rows = data.study == study
    if data.masks is not None:
        return float((data.masks[rows] > 127).any(axis=1).sum(axis=(1, 2)).max())
    return float(data.labels[rows, 0].sum())


def _augment(x: torch.Tensor, m: torch.Tensor | None, gen: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random left-right flip and an even shift of up to 1/16 of the size, image and mask together."""
    if torch.rand(1, generator=gen).item() < 0.5:
        x = torch.flip(x, dims=[3])
        m = torch.flip(m, dims=[3]) if m is not None else None
    limit = max(1, x.shape[-1] // 32)
    dy, dx = (2 * v for v in torch.randint(-limit, limit + 1, (2,), generator=gen).tolist())
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if m is not None:
        m = torch.roll(m, shifts=(dy // 2, dx // 2), dims=(2, 3))
    return x, m


CROP_MIN_MASK_PIXELS = 3  # a crop is positive for a subtype when the slice is and the crop holds this much of its mask


def _crops(data: IchData, idx: np.ndarray, crop: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full-resolution training crops (B, C, crop, crop), their masks (B, M, crop/2, crop/2) and labels (B, L).

    A slice with blood is cropped around one of its mask pixels (drawn at random, the crop shifted by up to a
    quarter of its size) four times in five, elsewhere in the head otherwise; a slice without blood anywhere in
    the head (where the soft-tissue window is above zero). A crop keeps a subtype's slice label only when it
    holds at least CROP_MIN_MASK_PIXELS of that subtype's mask, so a crop beside the lesion is a negative."""
    assert data.masks is not None
    size, half = data.inputs.shape[-1], crop // 2
    xs, ms, ys = [], [], []
    for i in idx:
        mask = data.masks[i]
        blood = np.argwhere(mask.max(axis=0) > 127)
        if len(blood) and rng.random() < 0.8:
            r, c = 2 * blood[rng.integers(len(blood))]
            r, c = (int(v + rng.integers(-crop // 4, crop // 4 + 1)) for v in (r, c))
        else:
            head = np.argwhere(data.inputs[i, -1, ::4, ::4] > 0)
            r, c = (4 * head[rng.integers(len(head))]) if len(head) else (size // 2, size // 2)
        top = int(np.clip(r - half, 0, size - crop)) // 2 * 2
        left = int(np.clip(c - half, 0, size - crop)) // 2 * 2
        xs.append(data.inputs[i, :, top : top + crop, left : left + crop])
        m = mask[:, top // 2 : (top + crop) // 2, left // 2 : (left + crop) // 2]
        y = data.labels[i].copy()
        y[1:] *= (m > 127).sum(axis=(1, 2)) >= CROP_MIN_MASK_PIXELS
        y[0] = y[1:].max()
        ms.append(m)
        ys.append(y)
    return np.stack(xs).astype(np.float32), np.stack(ms).astype(np.float32) / 255.0, np.stack(ys)


def _batch(data: IchData, idx: np.ndarray, crop: int, use_masks: bool, rng: np.random.Generator
           ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Inputs, masks (None without them) and labels of the slices `idx`: whole, or cropped (`crop` > 0)."""
    if crop:
        x, m, y = _crops(data, idx, crop, rng)
        return torch.from_numpy(x), torch.from_numpy(m), torch.from_numpy(y)
    masks = torch.from_numpy(data.masks[idx].astype(np.float32) / 255.0) if use_masks and data.masks is not None else None
    return torch.from_numpy(data.inputs[idx].astype(np.float32)), masks, torch.from_numpy(data.labels[idx])


def optimizer_step(loss: torch.Tensor, optim: torch.optim.Optimizer, sched: Any, bar: Any, epoch: int) -> float:
    """Backward, step the optimiser and the schedule, show progress; the batch loss."""
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()
    sched.step()
    bar.update(1)
    bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
    return float(loss.item())


def _dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(0, 2, 3))
    denom = p.sum(dim=(0, 2, 3)) + target.sum(dim=(0, 2, 3))
    return (1 - (2 * inter + 1) / (denom + 1)).mean()


def fit_ich(net: nn.Module, data: IchData, rows: np.ndarray, epochs: int, batch_size: int, lr: float, seed: int,
            opts: IchOptions, desc: str) -> nn.Module:
    """Train on the slices `rows` of `data` (balanced per epoch); masks when the network and data have them."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    use_masks = has_masks(net) and data.masks is not None and opts.seg_weight > 0
    crop = opts.crop_at(data.inputs.shape[-1])
    if crop and not use_masks:
        raise ValueError("crop training needs strong annotations (masks) and a *_seg architecture")
    y_all = data.labels[rows]
    pos_rows, neg_rows = rows[y_all[:, 0] > 0], rows[y_all[:, 0] == 0]
    n_neg = min(len(neg_rows), max(1, round(len(pos_rows) * opts.neg_ratio))) if len(pos_rows) else len(neg_rows)
    per_epoch = len(pos_rows) + n_neg
    pos = y_all.sum(axis=0)  # every positive slice is in every epoch
    pw = np.clip(np.sqrt((per_epoch - pos) / np.maximum(pos, 1)), 1.0, 10.0)
    bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pw, dtype=torch.float32))
    mask_bce = nn.BCEWithLogitsLoss()
    optim = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * max(1, -(-per_epoch // batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=lr, total_steps=steps, pct_start=0.15)
    net.train()
    with tqdm(total=steps, desc=desc, unit="batch") as bar:
        for epoch in range(epochs):
            chosen = np.concatenate([pos_rows, rng.choice(neg_rows, size=n_neg, replace=False)])
            order = chosen[rng.permutation(len(chosen))]
            total = 0.0
            for start in range(0, len(order), batch_size):
                idx = np.sort(order[start : start + batch_size])
                xb, mb, yb = _batch(data, idx, crop, use_masks, rng)
                xb, mb = _augment(xb, mb, gen)
                if mb is not None:
                    logits, mask_logits = net.forward_with_masks(xb)  # type: ignore[operator]
                    loss = bce(logits, yb) + opts.seg_weight * (mask_bce(mask_logits, mb) + _dice_loss(mask_logits, mb))
                else:
                    loss = bce(net(xb), yb)
                total += optimizer_step(loss, optim, sched, bar, epoch) * len(idx)
            log.info("epoch done", extra={"model": desc, "epoch": epoch + 1, "loss": round(total / len(order), 5)})
    return net.eval()


def study_outputs(net: nn.Module, data: IchData, studies: np.ndarray, features: tuple[str, ...]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Study features (S, L, F) and study labels (S, L) of `studies`, from the network's slice outputs."""
    feats, ys = [], []
    for s in studies:
        rows = np.flatnonzero(data.study == s)
        logits, masks = run_network(net, data.inputs[rows], 64)
        feats.append(study_features(logits, masks, features))
        ys.append(data.labels[rows].max(axis=0))
    return np.stack(feats), np.stack(ys)


def train_ich_model(data: IchData, spec: InputSpec, train_s: np.ndarray, val_s: np.ndarray, architecture: str,
                    epochs: int, batch_size: int, lr: float, seed: int, opts: IchOptions
                    ) -> tuple[nn.Module, dict[str, Any], dict[str, float], dict[str, Any]]:
    """Train one network and its study model: (net, study_model JSON, thresholds, report)."""
    if opts.annotations != "none" and data.masks is None and architecture in SEGMENTATION_ARCHITECTURES:
        log.warning("no strong annotations found: the segmentation head is not trained")
    chosen = subset_studies(data, train_s, opts.subset)
    rows = np.flatnonzero(np.isin(data.study, chosen))
    torch.manual_seed(seed)
    net = build_model(architecture, spec.in_channels, len(ICH_LABELS))
    fit_ich(net, data, rows, epochs, batch_size, lr, seed, opts, f"train ich {opts.subset} {architecture}")
    features = FEATURES_SEG if has_masks(net) and data.masks is not None and opts.seg_weight > 0 else FEATURES_CLS
    # the study model and thresholds come from validation studies; with fewer than two (tiny data sets),
    # from the training studies, which the manifest says
    calib = val_s if len(val_s) >= 2 else train_s
    x, y = study_outputs(net, data, calib, features)
    model, points, oof = fit_study_model(x, y, ICH_LABELS, features, seed)
    report: dict[str, Any] = {
        "subset": opts.subset, "annotations": data.annotation if opts.seg_weight > 0 else "none",
        **({"crop": opts.crop} if opts.crop_at(spec.size) else {}),
        "train_studies": len(chosen), "train_slices": len(rows), "validation_studies": len(val_s),
        "validation_study_uids": [data.study_uids[s] for s in val_s],
        "study_model_fitted_on": "validation studies" if len(val_s) >= 2 else "training studies (too few validation)",
        "validation_study_auroc_out_of_fold": {label: _r(auroc(y[:, j], oof[:, j])) for j, label in enumerate(ICH_LABELS)},
        "operating_points": {label: p.to_json() for label, p in points.items()},
    }
    thresholds = {label: round(points[label].threshold, 6) for label in ICH_LABELS}
    return net, model.to_json(), thresholds, report


def _r(v: float) -> float | None:
    return None if math.isnan(v) else round(float(v), 4)


def ich_spec(size: int, context_slices: int) -> InputSpec:
    return InputSpec(modality="CT", size=size, channels=ICH_WINDOW_NAMES, windows=ICH_WINDOWS,
                     context_slices=context_slices)


def load_training_data(data_dir: Path, spec: InputSpec, annotations: str) -> IchData:
    if annotations not in ANNOTATIONS:
        raise ValueError(f"annotations must be one of {ANNOTATIONS}, got {annotations!r}")
    return load_ich(data_dir, spec, annotations=annotations)
