"""Training a microbleed model (`dicom-node train --model cmb`): a folder the registry loads as it is.

1. **Detector** (Mask R-CNN, `--arch maskrcnn_tiny_fpn` or `maskrcnn_resnet50_fpn`) on crops of the SWI
   slices (`crop` px square): every slice with a ground-truth bleed, its crop placed so that one of its bleeds
   lies inside, plus as many crops of slices and places drawn at random (veins, calcification and air-bone
   artefact are everywhere); left-right and up-down flips, intensity scaled by 0.9-1.1. AdamW, one-cycle.
2. **Location threshold**: the depth below the head's surface that best separates the training bleeds
   labelled lobar from those labelled deep (`location.deep_min_depth_mm`).
3. **Rescorer** (`ml/cmb_rescore.py`): the detector runs on the validation studies (on every study of
   `--data` when the detector is reused: none of them trained it); a logistic regression learns from their
   candidates which are bleeds (a candidate matching a ground-truth bleed), its strength chosen by
   cross-fitted log loss with folds by study. Each of those candidates gets its cross-fitted confidence (from
   the fold model that did not see its study), so steps 4-6 see scores as honest as in service. Skipped
   (the confidence is the detector score) with fewer than 20 bleeds or false candidates.
4. **Bleed threshold** on the same studies: among the confidences with at most one false bleed per study
   (the target's bound), the one whose count is within one of the truth for the most studies (what the
   report states; ties: more bleeds found, fewer false, the higher score; best F1 when no score stays
   within) becomes `thresholds.microbleeds`, and `operating_points.microbleeds` records what it gave.
5. **Classifier** (attention MIL) on the bleeds the trained detector reports on the training studies (at
   the chosen threshold and 0.1 either side, so it sees what the node will show it, false bleeds included),
   instances dropped at random; cross-entropy, AdamW. Each bleed is its 8 instance features
   (`INSTANCE_FEATURES`), plus its 128 detector features with `--mil-detector-features` (0.3.0 read them;
   on 160 studies they let the classifier fit appearance that did not carry over to held-out studies).
   When the training studies have FLAIR series, the classifier also reads the FLAIR white-matter extent
   (`ml/wmh.py`), withheld from 15 % of the bags at random so that it answers studies without a FLAIR too.
6. **Calibration**: one temperature dividing the classifier's logits, the one that minimises the validation
   studies' negative log-likelihood (`classifier.temperature`), so a reader is not shown 99 % for a class
   the network is often wrong about. It changes no decision (the class is the argmax either way).

`--detector-from MODEL_DIR` skips step 1: the detector (weights, architecture, anchors) of an existing cmb
model is reused and steps 2-6 run on `--data`. With data the detector never saw, the classifier learns from
bleeds found as in service (misses and false bleeds included) rather than from the near-perfect detections
of the detector's own training studies.

Seeded (`--seed`); `torch.set_num_threads` is the caller's (the command's `--threads`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from dicom_node.errors import ModelError
from dicom_node.ml.cmb_data import CmbStudy, load_cmb
from dicom_node.ml.cmb_detector import DEFAULT_ANCHORS, DETECTORS, build_detector, feature_size
from dicom_node.ml.cmb_metrics import class_metrics, match
from dicom_node.ml.cmb_rescore import SHAPE_FEATURES, CandidateRescorer, matrix, rescore
from dicom_node.ml.cmb_rescore import fit as fit_rescorer
from dicom_node.ml.manifest import write_manifest
from dicom_node.ml.microbleeds import (
    CLASSES,
    DEFAULT_RULES,
    INSTANCE_FEATURES,
    LABELS,
    Candidate,
    CmbModel,
    CmbSettings,
    bag,
    head_depth,
    reported,
)
from dicom_node.ml.mil import BAG_FEATURES, FLAIR_FEATURES, AttentionMIL, bag_features
from dicom_node.ml.preprocess import resize_pad
from dicom_node.ml.train import TrainOptions, _common, _save_weights, seed_everything, split_studies

log = logging.getLogger(__name__)


def _architecture(opts: TrainOptions) -> str:
    if opts.architecture in DETECTORS:
        return opts.architecture
    if opts.architecture == "narrow_resnet":  # the command's default for every task
        return DETECTORS[0]
    raise ModelError(f"--arch {opts.architecture!r} is not a microbleed detector ({', '.join(DETECTORS)})")


def _slice_stack(study: CmbStudy, i: int, size: int) -> np.ndarray:
    n = len(study.norm)
    stack = study.norm[[max(0, i - 1), i, min(n - 1, i + 1)]].astype(np.float32)
    return resize_pad(stack, size)[0]


def _sample(study: CmbStudy, i: int, size: int, crop: int, rng: np.random.Generator,
            positive: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training crop and its target (boxes, labels, masks in crop pixels)."""
    image = _slice_stack(study, i, size)
    masks = []
    for bleed in study.bleeds:
        if i in bleed:
            m = resize_pad(bleed[i][None].astype(np.float32), size)[0][0] >= 0.5
            if m.any():  # a bleed's thin edge on this slice can vanish at the model's size
                masks.append(m)
    if positive and masks:
        rows, cols = np.nonzero(masks[int(rng.integers(len(masks)))])
        cr, cc = float(rows.mean()), float(cols.mean())
        top = int(np.clip(cr - rng.uniform(0.15, 0.85) * crop, 0, size - crop))
        left = int(np.clip(cc - rng.uniform(0.15, 0.85) * crop, 0, size - crop))
    else:
        rows, cols = np.nonzero(image[1] > 0.08)
        if len(rows):
            top = int(np.clip(rng.integers(rows.min(), rows.max() + 1) - crop // 2, 0, size - crop))
            left = int(np.clip(rng.integers(cols.min(), cols.max() + 1) - crop // 2, 0, size - crop))
        else:
            top = left = 0
    image = image[:, top: top + crop, left: left + crop] * np.float32(rng.uniform(0.9, 1.1))
    kept = [m[top: top + crop, left: left + crop] for m in masks]
    kept = [m for m in kept if m.any()]
    flips = [axis for axis, p in ((2, 0.5), (1, 0.5)) if rng.random() < p]
    if flips:
        image = np.flip(image, axis=tuple(flips)).copy()
        kept = [np.flip(m, axis=tuple(a - 1 for a in flips)).copy() for m in kept]
    boxes = []
    for m in kept:
        r, c = np.nonzero(m)
        boxes.append([c.min(), r.min(), max(c.max() + 1, c.min() + 1), max(r.max() + 1, r.min() + 1)])
    target = {"boxes": torch.tensor(np.asarray(boxes, np.float32).reshape(-1, 4)),
              "labels": torch.ones(len(kept), dtype=torch.int64),
              "masks": torch.from_numpy(np.asarray(kept, np.uint8).reshape(-1, crop, crop))}
    return torch.from_numpy(np.ascontiguousarray(image, np.float32)), target


def train_detector(detector: torch.nn.Module, studies: list[CmbStudy], opts: TrainOptions, crop: int) -> None:
    rng = np.random.default_rng(opts.seed)
    positives = [(s, i) for s, st in enumerate(studies) for i in range(len(st.norm))
                 if any(i in b for b in st.bleeds)]
    n_neg = max(len(positives), opts.batch_size)
    steps_per_epoch = max(1, -(-(len(positives) + n_neg) // opts.batch_size))
    optim = torch.optim.AdamW(detector.parameters(), lr=opts.learning_rate, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=opts.learning_rate,
                                                total_steps=opts.epochs * steps_per_epoch, pct_start=0.1)
    transform: Any = detector.transform
    transform.min_size, transform.max_size = (crop,), crop
    detector.train()
    with tqdm(total=opts.epochs * steps_per_epoch, desc="train cmb detector", unit="batch") as bar:
        for epoch in range(opts.epochs):
            negatives = [(int(rng.integers(len(studies))), -1) for _ in range(n_neg)]
            items = [(s, i, True) for s, i in positives] + [(s, i, False) for s, i in negatives]
            order = rng.permutation(len(items))
            total = 0.0
            for step in range(steps_per_epoch):
                batch = [items[k] for k in order[step * opts.batch_size: (step + 1) * opts.batch_size]]
                if not batch:
                    continue
                images, targets = [], []
                for s, i, pos in batch:
                    st = studies[s]
                    if i < 0:
                        i = int(rng.integers(len(st.norm)))
                    img, tgt = _sample(st, i, opts.size, crop, rng, pos)
                    images.append(img)
                    targets.append(tgt)
                losses = detector(images, targets)
                loss = sum(losses.values())
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                sched.step()
                total += float(loss.detach())
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss.detach()):.3f}")
            log.info("epoch done", extra={"model": "cmb detector", "epoch": epoch + 1,
                                          "loss": round(total / steps_per_epoch, 4)})
    transform.min_size, transform.max_size = (opts.size,), opts.size
    detector.eval()


def fit_depth_threshold(studies: list[CmbStudy], default: float = 38.0) -> tuple[float, float | None]:
    """(threshold, training accuracy) separating lobar from deep bleeds by depth below the head's surface."""
    depths, deep = [], []
    for st in studies:
        if not any(st.locations):
            continue
        depth = head_depth(st.norm.astype(np.float32), st.volume)
        for voxels, where in zip(st.bleeds, st.locations, strict=True):
            if where not in ("lobar", "deep"):
                continue
            i = max(voxels, key=lambda k: int(voxels[k].sum()))
            r, c = np.nonzero(voxels[i])
            depths.append(float(depth[i, round(r.mean()), round(c.mean())]))
            deep.append(where == "deep")
    if not depths or all(deep) or not any(deep):
        return default, None
    d, y = np.asarray(depths), np.asarray(deep)
    cuts = np.unique(d)
    cuts = (cuts[:-1] + cuts[1:]) / 2
    accuracy = [float(np.mean((d >= t) == y)) for t in cuts]
    best = int(np.argmax(accuracy))
    return round(float(cuts[best]), 2), round(accuracy[best], 4)


def _relocate(candidates: list[Candidate], depth_mm: float) -> None:
    for c in candidates:
        c.location = "deep" if c.depth_mm >= depth_mm else "lobar"
        c.instance[1] = 1.0 if c.location == "deep" else 0.0


MAX_FALSE_PER_STUDY = 1.0  # the bound the bleed threshold is chosen within (issue 11's target)


def choose_threshold(studies: list[CmbStudy], candidates: list[list[Candidate]],
                     max_false_per_study: float = MAX_FALSE_PER_STUDY) -> tuple[float, dict[str, Any]]:
    """The bleed score threshold for the operating point "count right within one for the most studies, with
    at most `max_false_per_study` false bleeds per study" on `studies`: among the scores on a 0.05 grid whose
    false bleeds per study stay within the bound, the one with the largest share of studies whose reported
    count is within one of the truth (ties: higher recall, fewer false bleeds, then the higher score). If
    none stays within, the score with the best F1. 0.5 when the studies hold no bleed."""
    points: list[dict[str, Any]] = []
    for t in np.round(np.arange(0.2, 0.96, 0.05), 2):
        tp = fp = fn = within_one = 0
        for st, cands in zip(studies, candidates, strict=True):
            shown = reported(cands, float(t))
            m = match(st.bleeds, [c.masks for c in shown])
            tp += len(m.matched)
            fp += m.false_bleeds
            fn += m.n_truth - len(m.matched)
            within_one += abs(len(shown) - m.n_truth) <= 1
        if tp + fn == 0:
            continue
        points.append({"threshold": float(t), "f1": round(2 * tp / max(1, 2 * tp + fp + fn), 4),
                       "recall": round(tp / (tp + fn), 4),
                       "false_bleeds_per_study": round(fp / max(1, len(studies)), 4),
                       "count_within_1": round(within_one / max(1, len(studies)), 4)})
    if not points:
        return 0.5, {}
    within = [p for p in points if p["false_bleeds_per_study"] <= max_false_per_study]
    if within:
        best = max(within, key=lambda p: (p["count_within_1"], p["recall"], -p["false_bleeds_per_study"],
                                          p["threshold"]))
        rule = (f"most studies with the count within 1, at most {max_false_per_study:g} false bleeds per study "
                "on the threshold studies")
    else:
        best = max(points, key=lambda p: p["f1"])
        rule = f"best F1 (no score kept false bleeds per validation study at or below {max_false_per_study:g})"
    return best["threshold"], {**{k: v for k, v in best.items() if k != "threshold"}, "rule": rule,
                               "studies": len(studies)}


MIN_RESCORER_EXAMPLES = 20  # bleeds and non-bleeds each, and 5 studies, to fit a rescorer


def rescore_candidates(studies: list[CmbStudy], candidates: list[list[Candidate]],
                       others: list[list[Candidate]]) -> tuple[CandidateRescorer | None, dict[str, Any]]:
    """Fit the candidate rescorer on `studies` (a candidate is a bleed when it matches a ground-truth bleed);
    their candidates get their cross-fitted confidence, the candidates of `others` (studies it did not see)
    the fitted rescorer's. None (confidence stays the detector score) when the studies are too few."""
    rows, labels, groups = [], [], []
    for k, (st, cands) in enumerate(zip(studies, candidates, strict=True)):
        kept = [c for c in cands if not c.tubular]
        hit = {r for _, r, _, _ in match(st.bleeds, [c.masks for c in kept]).matched}
        for j, c in enumerate(kept):
            rows.append(c)
            labels.append(j in hit)
            groups.append(k)
    y = np.asarray(labels, bool)
    if min(int(y.sum()), int((~y).sum())) < MIN_RESCORER_EXAMPLES or len(set(groups)) < 5:
        reason = (f"{int(y.sum())} bleeds and {int((~y).sum())} false candidates in {len(set(groups))} studies: "
                  f"too few to fit (at least {MIN_RESCORER_EXAMPLES} each, 5 studies)")
        log.warning("cmb rescorer not fitted", extra={"reason": reason})
        return None, {"skipped": reason}
    rescorer, oof, record = fit_rescorer(matrix(rows), y, np.asarray(groups))
    for c, p in zip(rows, oof, strict=True):
        c.confidence = float(p)
    for cands in others:
        rescore(rescorer, cands)
    log.info("cmb rescorer fitted", extra={k: v for k, v in record.items() if k != "log_loss_by_C"})
    return rescorer, record


FLAIR_WITHHELD = 0.15  # share of training bags given "no FLAIR" (a study without one is classified too)


def train_classifier(bags: list[tuple[np.ndarray, list[float], int]], in_features: int, opts: TrainOptions,
                     epochs: int, flair: bool = False) -> AttentionMIL:
    """Bags are (instances, FLAIR features (`FlairExtent.bag_features`), class); `flair`: the classifier reads
    them."""
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed + 1)
    net = AttentionMIL(in_features, len(CLASSES), bag_width=len(BAG_FEATURES) + (len(FLAIR_FEATURES) if flair else 0))
    instances = np.concatenate([x for x, _, _ in bags if len(x)]) if any(len(x) for x, _, _ in bags) else None
    if instances is not None:
        net.mean.copy_(torch.from_numpy(instances.mean(axis=0)))
        net.std.copy_(torch.from_numpy(np.maximum(instances.std(axis=0), 1e-3)))
    optim = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-3)
    counts = np.bincount([y for _, _, y in bags], minlength=len(CLASSES)).astype(np.float32)
    weight = torch.tensor(len(bags) / np.maximum(counts, 1) / len(CLASSES), dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    net.train()
    for _ in tqdm(range(epochs), desc="train cmb classifier", unit="epoch"):
        order = rng.permutation(len(bags))
        for start in range(0, len(order), 16):
            xs, bfs, ys = [], [], []
            for k in order[start: start + 16]:
                x, flair_features, y = bags[k]
                if len(x) > 1:  # drop instances at random, never all of a bag
                    keep = rng.random(len(x)) >= 0.15
                    keep[int(rng.integers(len(x)))] = True
                    x = x[keep]
                x = x + rng.normal(0, 0.03, x.shape).astype(np.float32) * net.std.numpy()
                n_deep = round(float(x[:, 1].sum())) if len(x) else 0
                xs.append(torch.from_numpy(x.reshape(-1, in_features).astype(np.float32)))
                bf = bag_features(len(x), n_deep)
                if flair:
                    bf += [0.0, 0.0] if rng.random() < FLAIR_WITHHELD else flair_features
                bfs.append(bf)
                ys.append(y)
            logits = net(xs, torch.tensor(bfs, dtype=torch.float32))
            loss = loss_fn(logits, torch.tensor(ys))
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
    return net.eval()


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, Any]]:
    """The temperature (log-spaced grid 0.25-20) minimising the mean negative log-likelihood of `y` under
    softmax(logits / T), and that likelihood before and after."""
    def nll(t: float) -> float:
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean())

    grid = np.exp(np.linspace(np.log(0.25), np.log(20.0), 61))
    best = float(grid[int(np.argmin([nll(float(t)) for t in grid]))])
    return round(best, 3), {"nll_uncalibrated": round(nll(1.0), 4), "nll": round(nll(best), 4),
                            "studies": len(y), "rule": "temperature minimising the validation studies' NLL"}


def _bags(studies: list[CmbStudy], candidates: list[list[Candidate]], thresholds: list[float],
          width: int) -> list[tuple[np.ndarray, list[float], int]]:
    out = []
    for st, cands in zip(studies, candidates, strict=True):
        for t in thresholds:
            x, _ = bag(reported(cands, t))
            out.append((x[:, :width] if len(x) else np.zeros((0, width), np.float32), st.flair.bag_features(),
                        st.svd_class))
    return out


def reuse_detector(folder: Path, size: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The detector of the cmb model in `folder` (weights checked) and what the new manifest records of it."""
    from dicom_node.ml.cmb_pipeline import load_cmb_networks
    from dicom_node.ml.manifest import load_manifest

    source = load_manifest(folder)
    if source.task != "cmb-swi":
        raise ModelError(f"--detector-from {folder}: model {source.name} {source.version} is not a microbleed model")
    if source.input.size != size:
        raise ModelError(f"--detector-from {folder}: its input size is {source.input.size} px, not --size {size}")
    detector, _ = load_cmb_networks(source, torch.device("cpu"))
    det = source.raw["detector"]
    return detector, {"name": source.name, "version": source.version, "architecture": det["architecture"],
                      "score_min": float(det.get("score_min", 0.1)), "mask_threshold": float(det.get("mask_threshold", 0.5)),
                      "tube_factor": float(det.get("tube_factor", 1.6)),
                      "anchor_sizes": det.get("anchor_sizes", list(DEFAULT_ANCHORS[det["architecture"]])),
                      "sha256": source.component("detector").sha256,
                      "training": source.raw.get("training", {}), "training_data": source.raw.get("training_data", "")}


def _detector_options(opts: TrainOptions, arch: str, source: dict[str, Any] | None) -> TrainOptions:
    """The options the manifest's `training` states for the detector: a reused one's own."""
    if source is None:
        return replace(opts, architecture=arch)
    return replace(opts, architecture=arch, epochs=int(source.get("epochs", 0)),
                    batch_size=int(source.get("batch_size", opts.batch_size)),
                    learning_rate=float(source.get("learning_rate", opts.learning_rate)))


def train_cmb(opts: TrainOptions) -> Path:
    seed_everything(opts.seed)
    crop = min(int(opts.extra.get("crop") or 128), opts.size)
    mil_epochs = int(opts.extra.get("mil_epochs", 150))
    detector_from = opts.extra.get("detector_from")
    reused: dict[str, Any] = {}
    if detector_from:  # before the data, so a wrong folder fails at once
        detector, reused = reuse_detector(Path(detector_from), opts.size)
        arch = reused["architecture"]
    studies = load_cmb(opts.data)
    train_s, val_s = split_studies(len(studies), opts.val_fraction, opts.seed)
    train_set, val_set = [studies[i] for i in train_s], [studies[i] for i in val_s]
    if not reused:
        arch = _architecture(opts)
        detector = build_detector(arch, opts.size, DEFAULT_ANCHORS[arch])
        train_detector(detector, train_set, opts, crop)
    anchors = list(reused.get("anchor_sizes") or DEFAULT_ANCHORS[arch])
    flair = sum(st.flair.present for st in train_set) >= len(train_set) / 2
    log.info("cmb classifier inputs", extra={"flair_features": flair,
                                             "studies_with_flair": sum(st.flair.present for st in studies)})
    depth_mm, depth_accuracy = fit_depth_threshold(train_set)
    # the classifier reads the instance features (where, how large, how sure, what shape, how dark around),
    # and the detector's box-head features only when asked: on a few hundred studies those 128 numbers let
    # it fit appearance that does not carry over (docs/models.md, "Microbleeds")
    detector_width = feature_size(detector)
    width = len(INSTANCE_FEATURES) + (detector_width if opts.extra.get("mil_detector_features") else 0)
    settings = CmbSettings(size=opts.size, percentiles=(1.0, 99.0), threshold=0.5, deep_min_depth_mm=depth_mm,
                           **{k: reused[k] for k in ("score_min", "mask_threshold", "tube_factor") if k in reused})
    placeholder = AttentionMIL(width, len(CLASSES))
    model = CmbModel(settings, detector, placeholder, torch.device("cpu"), opts.batch_size)

    def run_all(subset: list[CmbStudy], desc: str) -> list[list[Candidate]]:
        out = []
        for st in tqdm(subset, desc=desc, unit="study"):
            cands, _, _ = model.candidates(st.volume, st.norm)
            _relocate(cands, depth_mm)
            out.append(cands)
        return out

    train_c = run_all(train_set, "cmb candidates (training)")
    val_c = run_all(val_set, "cmb candidates (validation)") if val_set else []
    # the detector saw none of --data when reused: every study fits the rescorer and chooses the threshold
    chosen_on, chosen_c = (train_set + val_set, train_c + val_c) if reused else (val_set, val_c)
    rescorer, rescoring = (rescore_candidates(chosen_on, chosen_c, [] if reused else train_c)
                           if opts.extra.get("rescorer", True) else (None, {"skipped": "--no-rescorer"}))
    model.rescorer = rescorer
    threshold, detection = choose_threshold(chosen_on, chosen_c) if chosen_on else (0.5, {})
    bags = _bags(train_set, train_c, [max(0.1, threshold - 0.1), threshold, min(0.95, threshold + 0.1)], width)
    classifier = train_classifier(bags, width, opts, mil_epochs, flair)
    model.classifier = classifier
    validation: dict[str, Any] = {"detection": detection}
    temperature, calibration = 1.0, dict[str, Any]()
    if val_set:
        val_y = np.asarray([s.svd_class for s in val_set])
        logits = np.stack([model.logits(reported(c, threshold), st.flair)
                           for st, c in zip(val_set, val_c, strict=True)])
        temperature, calibration = fit_temperature(logits, val_y)
        model.settings = replace(model.settings, temperature=temperature)
        probs = np.asarray([[model.classify(reported(c, threshold), st.flair)[k] for k in CLASSES]
                            for st, c in zip(val_set, val_c, strict=True)])
        validation["classification"] = class_metrics(val_y, probs, n_boot=200, seed=opts.seed)
    files = [{"role": "detector", "architecture": arch, **_save_weights(detector, opts.out, "detector.pt")},
             {"role": "classifier", "architecture": "attention_mil",
              **_save_weights(classifier, opts.out, "classifier.pt")}]
    if rescorer is not None:
        files.append({"role": "rescorer", "architecture": "logistic",
                      **_save_weights(rescorer, opts.out, "rescorer.pt")})
    manifest = {
        "name": opts.name or "cmb",
        "version": opts.version,
        "display_name": "dicom-node microbleed detector" + (" (synthetic demo)" if opts.synthetic_demo else ""),
        "task": "cmb-swi",
        "labels": list(LABELS),
        "critical_labels": [],
        "thresholds": {"microbleeds": threshold},
        "operating_points": {"microbleeds": {"threshold": threshold, **detection}} if detection else {},
        "input": {"modality": "MR", "size": opts.size, "channels": ["swi_below", "swi", "swi_above"],
                  "percentiles": [1.0, 99.0]},
        "selection": {name: rule.to_json() for name, rule in DEFAULT_RULES.items()},
        "detector": {"architecture": arch, "anchor_sizes": anchors, "score_min": settings.score_min,
                     "mask_threshold": settings.mask_threshold, "tube_factor": settings.tube_factor},
        "location": {"deep_min_depth_mm": depth_mm, "fitted_accuracy": depth_accuracy},
        **({"rescorer": {"architecture": "logistic", "in_features": rescorer.in_features,
                         "features": [*INSTANCE_FEATURES, *SHAPE_FEATURES, f"detector[{detector_width}]"],
                         "fit": rescoring}} if rescorer is not None else {}),
        "classifier": {"architecture": "attention_mil", "in_features": width, "hidden": 64,
                       "classes": list(CLASSES), "instance_features": list(INSTANCE_FEATURES),
                       "detector_features": width - len(INSTANCE_FEATURES),
                       "bag_features": list(BAG_FEATURES + (FLAIR_FEATURES if flair else ())),
                       "temperature": temperature, "calibration": calibration,
                       "decision": "argmax"},
        "preprocessing": {"normalisation": "1st-99th percentile of the series' non-zero voxels to [0, 1]",
                          "slices": "each slice with its neighbours as three channels",
                          "resize": "aspect-preserving, zero pad, centred"},
        "components": files,
        **_common(_detector_options(opts, arch, reused.get("training")), {
            "validation": validation, **({"rescorer": rescoring} if rescorer is None else {}),
            "train_studies": len(train_set), "validation_studies": len(val_set),
            "classifier_epochs": mil_epochs, "flair_withheld": FLAIR_WITHHELD if flair else None,
            **({"detector_reused_from": {k: reused[k] for k in ("name", "version", "sha256", "training", "training_data")}}
               if reused else {"crop": crop})}),
    }
    write_manifest(opts.out, manifest)
    log.info("cmb model written", extra={"out": str(opts.out), "threshold": threshold, "deep_min_depth_mm": depth_mm})
    return opts.out
