"""Training the SIH sign localiser: where, on the three post-contrast T1 images, the signs of SIH are.

One `narrow_resnet_seg` (one input channel) reads each of the three selected images at its own size
(`--size`, 256 px for the demo: the enhancing dura is 1.4-3 mm thick). As ICH's, it has image logits
("this image shows a sign", then "this image shows sign k") and one mask per sign, at half its input
resolution, so the report can name the sign it marks. It is trained on the studies' strong annotations,
one DICOM SEG per series with a segment per sign (`synth --kind mr-sih` writes them; a site exports its
own from a viewer), with BCE on the image labels plus BCE and soft Dice on the masks, random flips and
shifts. Where the SEGs have only one segment for all the signs ("Spontaneous intracranial hypotension"),
it learns that one mask (two image logits, both "shows a sign"), and names no sign.

It decides nothing: the study's verdict stays the classifiers' ensemble. It says where, for the SR
region, the overlay mark and the SEG (`ml.sih_signs`).

    add_sih_localiser(opts, base)   # a new model folder: `base`'s classifiers, ensemble and threshold
                                    # (same weights, same verdicts) plus the localiser as component "signs"
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dicom_node.errors import ModelError, SelectionError
from dicom_node.ml.datasets import SihData, load_sih
from dicom_node.ml.localise import MASK_LEVEL, near, region_from_mask
from dicom_node.ml.manifest import SIH_ROLES, SIH_SIGNS_ROLE, load_manifest, verify_weights, write_manifest
from dicom_node.ml.nets import build_model
from dicom_node.ml.train import TrainOptions, _save_weights, seed_everything, split_studies
from dicom_node.ml.train_ich import _augment, _dice_loss, optimizer_step

log = logging.getLogger(__name__)

ARCHITECTURE = "narrow_resnet_seg"
SIGN_PIXEL = 128  # a half-resolution mask cell at least half covered by a sign counts as sign


def stacked(data: SihData, studies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The studies' three images each, (3n, 1, S, S) float16, and their masks, (3n, K, S/2, S/2) uint8."""
    assert data.sign_inputs is not None and data.sign_masks is not None
    x = np.concatenate([data.sign_inputs[r][studies] for r in SIH_ROLES])
    m = np.concatenate([data.sign_masks[r][studies] for r in SIH_ROLES])
    return x, m


def fit_localiser(net: nn.Module, x: np.ndarray, m: np.ndarray, opts: TrainOptions) -> nn.Module:
    gen = torch.Generator().manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    y = image_labels(m)
    pos = y.sum(axis=0)
    pw = np.clip(np.sqrt((len(y) - pos) / np.maximum(pos, 1.0)), 1.0, 10.0).astype(np.float32)
    bce = nn.BCEWithLogitsLoss(pos_weight=torch.from_numpy(pw))
    mask_bce = nn.BCEWithLogitsLoss()
    optim = torch.optim.AdamW(net.parameters(), lr=opts.learning_rate, weight_decay=1e-4)
    steps = opts.epochs * max(1, -(-len(x) // opts.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=opts.learning_rate, total_steps=steps, pct_start=0.15)
    net.train()
    with tqdm(total=steps, desc=f"train sih localiser {ARCHITECTURE}", unit="batch") as bar:
        for epoch in range(opts.epochs):
            order = rng.permutation(len(x))
            total = 0.0
            for start in range(0, len(x), opts.batch_size):
                idx = np.sort(order[start : start + opts.batch_size])
                xb = torch.from_numpy(x[idx].astype(np.float32))
                mb = torch.from_numpy(m[idx].astype(np.float32) / 255.0)
                xb, mb_aug = _augment(xb, mb, gen)
                assert mb_aug is not None
                logits, mask_logits = net.forward_with_masks(xb)  # type: ignore[operator]
                loss = bce(logits, torch.from_numpy(y[idx])) + mask_bce(mask_logits, mb_aug) + _dice_loss(mask_logits, mb_aug)
                total += optimizer_step(loss, optim, sched, bar, epoch) * len(idx)
            log.info("epoch done", extra={"model": "sih localiser", "epoch": epoch + 1, "loss": round(total / len(x), 5)})
    return net.eval()


def image_labels(m: np.ndarray) -> np.ndarray:
    """(N, 1 + K) float32 of masks (N, K, h, w): the image shows a sign, then it shows sign k (one mask: the
    first label twice, as the two-logit localiser has always been trained)."""
    shows = (m.reshape(len(m), m.shape[1], -1).max(axis=2) >= SIGN_PIXEL).astype(np.float32)
    return np.concatenate([shows.max(axis=1, keepdims=True), shows], axis=1)


@torch.inference_mode()
def localiser_masks(net: nn.Module, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Mask probabilities (N, K, h, w) float32 of images (N, 1, S, S)."""
    out = []
    for s in range(0, len(x), batch_size):
        _, masks = net.forward_with_masks(torch.from_numpy(x[s : s + batch_size].astype(np.float32)))  # type: ignore[operator]
        out.append(torch.sigmoid(masks.float()).numpy())
    return np.concatenate(out) if out else np.zeros((0, 1, 0, 0), np.float32)


def localisation_scores(probs: np.ndarray, masks: np.ndarray, names: tuple[str, ...] = ()) -> dict[str, Any]:
    """Over the signs together: Dice over the images with a sign, the share of them whose predicted
    largest component's innermost cell lies on a sign, and the share of the images without a sign that
    get a mask at all. With the `names` of K > 1 channels, also per sign: Dice over the images that show
    it, and the share of the marks on a sign that name the sign under them."""
    truth = masks.max(axis=1) >= SIGN_PIXEL
    pred = probs.max(axis=1) >= MASK_LEVEL
    has = truth.reshape(len(truth), -1).any(axis=1)
    dice, inside = [], 0
    for p, t in zip(pred[has], truth[has], strict=True):
        dice.append(2 * float((p & t).sum()) / max(1, int(p.sum()) + int(t.sum())))
        region = region_from_mask(p)  # the mark the pipeline would place
        if region is not None:
            inside += int(near(t, *region[0]))  # within one cell, as `evaluate` at source resolution
    empty = ~has
    scores: dict[str, Any] = {
        "images_with_signs": int(has.sum()), "dice": round(float(np.mean(dice)), 4) if dice else None,
        "centre_on_sign": round(inside / int(has.sum()), 4) if has.any() else None,
        "images_without_signs": int(empty.sum()),
        "masked_without_signs": round(float(pred[empty].reshape(int(empty.sum()), -1).any(axis=1).mean()), 4)
        if empty.any() else None}
    if len(names) > 1:
        scores["signs"] = per_sign_scores(probs, masks, names)
    return scores


def study_shares(probs: np.ndarray, masks: np.ndarray, n_studies: int) -> tuple[np.ndarray, np.ndarray]:
    """Per study (the `stacked` order: role-major) and sign, the largest share of one of its images that
    the localiser marks, (n, K) float, and whether one of its images shows the sign, (n, K) bool."""
    k, cells = probs.shape[1], probs.shape[2] * probs.shape[3]
    marked = (probs >= MASK_LEVEL).reshape(len(SIH_ROLES), n_studies, k, -1).sum(axis=3) / cells
    shown = (masks >= SIGN_PIXEL).reshape(len(SIH_ROLES), n_studies, k, -1).any(axis=3)
    return marked.max(axis=0), np.asarray(shown.any(axis=0))


def naming_rule(probs: np.ndarray, masks: np.ndarray, sih: np.ndarray) -> tuple[list[float], list[dict[str, Any]]]:
    """The least share per sign (`least_shares`) and, per sign, how it names on these studies. The report
    names signs only with SIH present, so both come from the studies with SIH (`sih`, per study; all the
    studies when none has it)."""
    marked, shown = study_shares(probs, masks, len(sih))
    if sih.any():
        marked, shown = marked[sih], shown[sih]
    shares = least_shares(marked, shown)
    naming = []
    for k, share in enumerate(shares):
        named, y = marked[:, k] >= share, shown[:, k]
        naming.append({"least_share": share, "studies": len(y), "studies_showing": int(y.sum()),
                       "named_when_shown": int((named & y).sum()), "named_when_not_shown": int((named & ~y).sum())})
    return shares, naming


def least_shares(marked: np.ndarray, shown: np.ndarray) -> list[float]:
    """Per sign, the least share of an image its mask must cover on one of a study's images for the report
    to name the sign: between the studies that show it and those that do not, the midpoint of the gap
    that maximises sensitivity + specificity (ties: the smallest), and more than nothing. The localiser
    leaves small specks of a sign where there is none (`sih 0.4.0` on held-out studies: specks of "dura"
    of up to 65 source pixels, against at least 961 where the dura enhances), and marks part of a normal
    brainstem as "sag"."""
    out = []
    for k in range(marked.shape[1]):
        x, y = marked[:, k], shown[:, k]
        values = np.unique(np.concatenate([[0.0], x]))
        cuts = (values[:-1] + values[1:]) / 2 if len(values) > 1 else np.array([values[0] / 2 + 1e-6])
        pos, neg = max(1, int(y.sum())), max(1, int((~y).sum()))
        score = [float(((x >= t) & y).sum()) / pos + float(((x < t) & ~y).sum()) / neg for t in cuts]
        out.append(round(float(cuts[int(np.argmax(score))]), 6))
    return out


def per_sign_scores(probs: np.ndarray, masks: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    """Per sign, Dice over the images that show it; and, over the marks that land on a sign, the share
    that name the sign under them (the channel the pipeline names at the mark, `sih_signs.sign_at`)."""
    truth = masks >= SIGN_PIXEL
    pred = probs >= MASK_LEVEL
    out: dict[str, Any] = {}
    for k, name in enumerate(names):
        shows = truth[:, k].reshape(len(truth), -1).any(axis=1)
        d = [2 * float((p & t).sum()) / max(1, int(p.sum()) + int(t.sum()))
             for p, t in zip(pred[shows, k], truth[shows, k], strict=True)]
        out[name] = {"images": int(shows.sum()), "dice": round(float(np.mean(d)), 4) if d else None}
    named = on = 0
    for p, t, pr in zip(np.asarray(pred.any(axis=1)), truth, probs, strict=True):
        region = region_from_mask(p)
        if region is None:
            continue
        r, c = (round(v) for v in region[0])
        if t[:, r, c].any():
            on += 1
            named += int(t[int(np.argmax(pr[:, r, c])), r, c])
    out["mark_names_its_sign"] = round(named / on, 4) if on else None
    return out


def train_sih_localiser(opts: TrainOptions, data: SihData, train_s: np.ndarray, val_s: np.ndarray
                        ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the localiser on the training studies; its component entry and validation scores."""
    seed_everything(opts.seed)
    signs = data.sign_names if len(data.sign_names) > 1 else ()
    net = build_model(ARCHITECTURE, 1, 1 + len(signs) if signs else 2)
    fit_localiser(net, *stacked(data, train_s), opts)
    scores: dict[str, Any] = {}
    shares: list[float] = []
    if len(val_s):
        x_val, m_val = stacked(data, val_s)
        probs = localiser_masks(net, x_val)
        scores = localisation_scores(probs, m_val, signs)
        if signs:
            shares, naming = naming_rule(probs, m_val, data.labels[val_s] == 1)
            for k, sign in enumerate(signs):
                scores["signs"][sign].update(naming[k])
    entry = {"role": SIH_SIGNS_ROLE, "architecture": ARCHITECTURE, "size": opts.size,
             **({"signs": list(signs)} if signs else {}), **({"least_share": shares} if shares else {}),
             **_save_weights(net, opts.out, f"{SIH_SIGNS_ROLE}.pt")}
    return entry, scores


def add_sih_localiser(opts: TrainOptions, base: Path) -> Path:
    """`base`'s SIH model (classifier weights copied, same checksums) with a localiser trained on
    `opts.data`, written as a new model folder `opts.out` with `opts.version`."""
    manifest = load_manifest(base)
    if manifest.task != "sih-mr":
        raise ModelError(f"--base {base}: a sih-mr model is needed, it is {manifest.task}")
    if opts.out.resolve() == Path(base).resolve():
        raise ModelError(f"--out {opts.out} is the base model's folder: the new version needs a folder of its own")
    if opts.size < 32 or opts.size % 2:
        raise ModelError(f"--size {opts.size}: the localiser needs an even input size of at least 32 px")
    for role in SIH_ROLES:
        verify_weights(manifest, manifest.component(role))
    data = load_sih(opts.data, manifest.input, signs_size=opts.size)
    assert data.sign_masks is not None
    shown = sum(int((data.sign_masks[r] >= SIGN_PIXEL).any()) for r in SIH_ROLES)
    if not shown:
        raise SelectionError(f"no sign mask under {opts.data}: a localiser needs SIH-positive studies with a DICOM "
                             "SEG of their signs (a segment per sign, or one coded as Spontaneous intracranial "
                             "hypotension; outputs.codes), as synth --kind mr-sih writes")
    train_s, val_s = split_studies(len(data.study_uids), opts.val_fraction, opts.seed)
    opts.out.mkdir(parents=True, exist_ok=True)
    raw = json.loads((base / "manifest.json").read_text())
    components = [c for c in raw["components"] if c["role"] in SIH_ROLES]
    for c in components:
        shutil.copyfile(base / c["weights"], opts.out / c["weights"])
    entry, scores = train_sih_localiser(opts, data, train_s, val_s)
    log.info("sih localiser validated", extra={"model": opts.version, **{k: v for k, v in scores.items() if v is not None}})
    demo = opts.synthetic_demo or bool(raw.get("synthetic_demo"))
    raw.update({
        "name": opts.name or raw["name"], "version": opts.version, "components": [*components, entry],
        "localiser": {"from": f"{raw['name']} {raw['version']}", "data": opts.training_data or str(opts.data),
                      "architecture": ARCHITECTURE, "size": entry["size"], "signs": entry.get("signs", []),
                      "epochs": opts.epochs,
                      "seed": opts.seed, "batch_size": opts.batch_size, "learning_rate": opts.learning_rate,
                      "train_studies": len(train_s), "validation_studies": len(val_s),
                      "validation": scores},
        "synthetic_demo": demo,
    })
    raw.pop("sha256", None)
    write_manifest(opts.out, raw)
    return opts.out
