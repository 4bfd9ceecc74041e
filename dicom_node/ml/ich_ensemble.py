"""Seed 002's weighted ensemble for ICH: subtype specialists combined with weights fitted on validation data.

An ensemble is a model folder whose manifest names its members instead of weight files:

    "ensemble": {"rule": "weighted_logit",
                 "members": [{"name": "ich-all", "version": "...", "sha256": "<member manifest.json sha256>"}, ...],
                 "weights": {label: {member name: w >= 0}}, "intercepts": {label: b}}

Each member is an ordinary ICH model folder (its own network, input size, study model and thresholds) under
the same models directory. The study probability of a label is sigmoid(b + sum_m w_m * logit(p_m)), p_m
being member m's study probability; a specialist's weights are fitted (and non-zero) only for its subset's
subtypes. Slice probabilities are the members' means weighted by the same (positive) weights. A
subtype's mask comes only from the members trained on it (a subdural specialist's epidural mask output
learned nothing but zeros). Among those, an ensemble fitted with masks to compare against (the manifest's
"mask_dice": each member's mean Dice per subtype on the calibration studies' annotations) takes the member
whose mask matched best, so a member that ranks studies well but whose mask channel is dead draws nothing;
one without it takes the members on the finest grid (`mask_shares`). Masks of members with different input
sizes are first resampled to the finest grid (every grid covers the same square, which the first member's
placement maps back to the source). Loading checks every member's
manifest sha256 against the ensemble's (a member's manifest in turn carries its weights' sha256), so the
ensemble runs exactly the members it was fitted with, or refuses.
An ensemble fitted with the extra-axial shape feature ("shape": `extra_axial`) also measures its own served
mask: the length of the collection its epidural channel marks enters the epidural study logit with the
fitted weight (a long crescent the members call partly epidural is a subdural haematoma).
The SR's algorithm identification names the ensemble with its members and their versions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, StringConstraints

from dicom_node.errors import ModelError
from dicom_node.ml.analysis import InstanceRef, StudyAnalysis
from dicom_node.ml.device import Device
from dicom_node.ml.extra_axial import epidural_length_feature, mm_per_grid_pixel, shape_entry, shape_weights
from dicom_node.ml.ich import IchPipeline
from dicom_node.ml.ich_findings import SeriesOutputs, build_analysis
from dicom_node.ml.ich_outputs import run_network, sigmoid, study_probabilities
from dicom_node.ml.manifest import (
    ICH_LABELS,
    MANIFEST_NAME,
    Aggregation,
    InputSpec,
    Manifest,
    Sha256,
    load_manifest,
    sha256_file,
    validated,
)
from dicom_node.ml.pipeline import Pipeline
from dicom_node.ml.preprocess import Placement, read_image
from dicom_node.validation import Frozen, Str

log = logging.getLogger(__name__)

RULE = Aggregation.WEIGHTED_LOGIT.value


class Member(Frozen):
    """One member of an ensemble: the model folder's name and version, and its manifest.json's sha256."""

    name: Annotated[Str, StringConstraints(min_length=1)]
    version: Annotated[Str, StringConstraints(min_length=1)]
    sha256: Sha256


class Members(Frozen):
    members: Annotated[tuple[Member, ...], Field(min_length=1)]


def is_ensemble(folder: Path) -> bool:
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("ensemble"), dict) and "members" in data["ensemble"]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.asarray(np.log(p / (1 - p)))


def specialist_labels(manifest: Manifest) -> tuple[str, ...] | None:
    """The subtypes a specialist member is built around (its subset's), or None for a member that learned
    every label (all-ICH, small-lesion)."""
    from dicom_node.ml.train_ich import SUBSET_MASK_LABELS

    return SUBSET_MASK_LABELS.get(str(manifest.raw.get("training", {}).get("subset", "all")))


def mask_labels_learned(manifest: Manifest) -> np.ndarray:
    """(L-1,) 1.0 for each subtype whose mask the member was trained on (a specialist's subset names them;
    its other mask outputs learned only zeros), else 0.0."""
    learned = specialist_labels(manifest) or ICH_LABELS[1:]
    return np.array([1.0 if label in learned else 0.0 for label in ICH_LABELS[1:]])


def study_labels_entered(manifest: Manifest) -> np.ndarray:
    """(L,) 1.0 for each label whose study probability the member's logit may enter when the weights are
    fitted: a specialist's subtypes only (a full-resolution parenchymal member has no say on "any" or on
    subdural blood, which it saw only beside parenchymal blood), every label for the other members."""
    entered = specialist_labels(manifest) or ICH_LABELS
    return np.array([1.0 if label in entered else 0.0 for label in ICH_LABELS])


def mask_shares(weights: np.ndarray, learned: np.ndarray, grids: np.ndarray,
                quality: np.ndarray | None = None) -> np.ndarray:
    """(M, L-1) share of each member's mask in each subtype's ensemble mask, from the members' subtype weights
    (M, L-1), which masks they learned (M, L-1), their mask grids (M,) and, when the ensemble was fitted with
    annotations, their mask Dice per subtype on the calibration studies (M, L-1; NaN where not measured).

    A subtype with a measured Dice among the members that learned it is drawn by the best of them alone
    (ties go to the finer grid, then the larger weight): a member can rank studies well and still have a dead
    mask channel (docs/models.md, run d). Otherwise, among the members trained on a subtype, those on the
    finest grid draw it, in proportion to their weights (a coarse mask resampled to a finer grid blurs a
    small clot the fine one outlines, and averaged with it pulls it under the 0.5 level). A subtype no member
    learned, or none weighs, is drawn by every member with its weight."""
    w = np.maximum(np.asarray(weights, dtype=np.float64), 0.0)
    take = (w * learned) > 0
    finest = np.where(take, grids[:, None], 0).max(axis=0)  # (L-1,) the finest grid among the members taken
    take &= grids[:, None] == finest[None, :]
    share = np.where(take, w, 0.0)
    share = np.where(share.sum(axis=0, keepdims=True) > 0, share, w)
    share = share / np.maximum(share.sum(axis=0, keepdims=True), 1e-9)
    if quality is not None:
        q = np.asarray(quality, dtype=np.float64)
        measured = (learned > 0) & np.isfinite(q)
        for j in np.flatnonzero(measured.any(axis=0)):
            rows = np.flatnonzero(measured[:, j])
            best = max(rows, key=lambda k: (q[k, j], grids[k], w[k, j]))
            share[:, j] = 0.0
            share[best, j] = 1.0
    return np.asarray(share)


def on_grid(masks: np.ndarray, size: int) -> np.ndarray:
    """(N, M, h, w) mask probabilities resampled (bilinear) to (N, M, size, size) float32: members of
    different input sizes put their masks on one grid before they are averaged. The grids cover the same
    square (each member's placement scales the source's longer side to its input), so resampling aligns them."""
    m = np.asarray(masks, dtype=np.float32)
    if m.shape[-2:] == (size, size):
        return m
    t = F.interpolate(torch.from_numpy(np.ascontiguousarray(m)), size=(size, size), mode="bilinear",
                      align_corners=False)
    return np.asarray(t.numpy())


def run_members(members: Sequence[IchPipeline], slices: Sequence[InstanceRef], batch_size: int, device: Device
                ) -> tuple[list[np.ndarray], list[SeriesOutputs]]:
    """Each member's study logits (L,) and series outputs, from one decoding of the series; members with the
    same input (size, windows, context slices) share one preprocessing of it."""
    hu = [read_image(ref.path) for ref in slices]
    prepared: dict[InputSpec, tuple[np.ndarray, list[Placement]]] = {}
    outs, study_logits = [], []
    for m in members:
        if m.manifest.input not in prepared:
            prepared[m.manifest.input] = m.model_inputs(hu)
        inputs, places = prepared[m.manifest.input]
        logits, masks = run_network(m.net, inputs, batch_size, device)
        study = study_probabilities(m.manifest, logits, masks)
        outs.append(SeriesOutputs(list(slices), hu, inputs, places, sigmoid(logits), study, masks))
        study_logits.append(_logit(study))
    return study_logits, outs


class IchEnsemblePipeline(Pipeline):
    """ICH members run on one decoded series; their outputs combined by the manifest's weights."""

    def __init__(self, manifest: Manifest, members: Sequence[IchPipeline], weights: dict[str, np.ndarray],
                 intercepts: np.ndarray, device: Device, batch_size: int, thresholds: dict[str, float],
                 mask_dice: dict[str, np.ndarray] | None = None, shape: np.ndarray | None = None) -> None:
        self.members = list(members)  # all of them, as the SR names them
        # the members that are run: one with no weight on any label changes neither a probability nor a mask
        # (ich-subdural 0.2.0 in ICH 0.6.0 and 0.7.0: its fitted weights are all 0)
        self.running = [m for m in self.members if weights[m.info.name].any()] or self.members
        self.weights = weights  # member name -> (L,) weight per label
        self.intercepts = intercepts  # (L,)
        self.learned = np.stack([mask_labels_learned(m.manifest) for m in self.running])  # (M, L-1)
        # member name -> (L-1,) mask Dice on the calibration studies (NaN: not measured); None: not fitted so
        self.mask_dice = None if mask_dice is None else np.stack([mask_dice[m.info.name] for m in self.running])
        self.shape = shape  # (L,) weight of the extra-axial shape feature per label; None: not fitted with it
        super().__init__(manifest, device, batch_size, thresholds)

    def load_networks(self) -> None:
        """The members are loaded (and checked) before the ensemble."""

    def select(self, instances: Sequence[InstanceRef]) -> list[InstanceRef]:
        return self.members[0].select(instances)

    def member_outputs(self, slices: Sequence[InstanceRef]) -> tuple[list[np.ndarray], list[SeriesOutputs]]:
        """The running members' study logits and series outputs (`run_members`), in `self.running`'s order."""
        return run_members(self.running, slices, self.batch_size, self.device)

    def combine(self, study_logits: Sequence[np.ndarray], feature: float = 0.0) -> np.ndarray:
        """Study probabilities from the running members' study logits and the study's shape feature."""
        z = self.intercepts + sum(self.weights[m.info.name] * study_logits[k] for k, m in enumerate(self.running))
        if self.shape is not None:
            z = z + self.shape * feature
        return sigmoid(np.asarray(z))

    def shape_feature(self, first: SeriesOutputs, masks: np.ndarray | None) -> float:
        """The `extra_axial` feature of the served masks (0 for an ensemble not fitted with it)."""
        if self.shape is None or masks is None:
            return 0.0
        rows, cols = first.hu[0].shape
        mm = mm_per_grid_pixel(first.slices[0].path, rows, cols, masks.shape[-1])
        return epidural_length_feature(masks, ICH_LABELS[1:], mm)

    def series_outputs(self, slices: Sequence[InstanceRef]) -> SeriesOutputs:
        study_logits, outs = self.member_outputs(slices)
        w = np.stack([np.maximum(self.weights[m.info.name], 0.0) for m in self.running])  # (M, L)
        share = w / np.maximum(w.sum(axis=0, keepdims=True), 1e-9)
        slice_probs = sum(share[k] * o.slice_probs for k, o in enumerate(outs))
        with_masks = [k for k, o in enumerate(outs) if o.masks is not None]
        masks = None
        if with_masks:
            sizes = np.array([outs[k].masks.shape[-1] for k in with_masks])  # type: ignore[union-attr]
            quality = None if self.mask_dice is None else self.mask_dice[with_masks]
            sub = mask_shares(w[with_masks, 1:], self.learned[with_masks], sizes, quality)
            # a member that draws no subtype's mask is not resampled (its grid may be 16 times smaller)
            drawn = [(n, k) for n, k in enumerate(with_masks) if sub[n].any()]
            if drawn:
                size = int(sizes.max())
                masks = np.zeros((len(slices), sub.shape[1], size, size), np.float32)
                for n, k in drawn:  # only the subtypes a member draws are resampled and added
                    c = np.flatnonzero(sub[n])
                    masks[:, c] += sub[n][c].astype(np.float32)[None, :, None, None] * on_grid(
                        outs[k].masks[:, c], size)  # type: ignore[index]
        first = outs[0]
        study = self.combine(study_logits, self.shape_feature(first, masks))
        return SeriesOutputs(first.slices, first.hu, first.inputs, first.places, np.asarray(slice_probs), study,
                             None if masks is None else np.asarray(masks))

    def _analyse(self, instances: Sequence[InstanceRef]) -> StudyAnalysis:
        out = self.series_outputs(self.select(instances))
        return build_analysis(self.info, self.manifest.labels, self.thresholds, self.manifest.critical_labels, out,
                              self.running[0].net, self.device.torch_device)


def display_name(base: str, members: Sequence[Manifest]) -> str:
    """E.g. "dicom-node ICH ensemble (synthetic demo) [ich-all 0.2.0, ich-subdural 0.2.0, ...]"."""
    return f"{base} [{', '.join(f'{m.name} {m.version}' for m in members)}]"


def load_ich_ensemble(models_dir: Path, folder: Path, device: Device, batch_size: int,
                      thresholds: dict[str, float], rules: dict[str, dict[str, Any]] | None = None
                      ) -> IchEnsemblePipeline:
    """Load and check an ensemble folder's members; `rules` (config overrides of the selection rules) go
    to every member, `thresholds` (config overrides) apply to the ensemble's verdicts."""
    from dicom_node.ml.registry import load_pipeline, model_folder

    raw_bytes = (folder / MANIFEST_NAME).read_bytes()
    d = json.loads(raw_bytes)
    where = f"{folder / MANIFEST_NAME}"
    e = d["ensemble"]
    labels = tuple(d.get("labels", ()))
    if d.get("task") != "ich-ct" or e.get("rule") != RULE or labels != ICH_LABELS:
        raise ModelError(f"{where}: an ensemble needs task ich-ct, the ICH labels {list(ICH_LABELS)} and rule {RULE!r}")
    found: list[str] = []
    listed = validated(Members, {"members": e.get("members")}, found, "ensemble")
    if listed is None:
        raise ModelError(f"{where}: " + "; ".join(found))
    _distinct_names([m.name for m in listed.members], f"{where}: ")
    members: list[IchPipeline] = []
    for item in listed.members:
        name, version, sha = item.name, item.version, item.sha256
        path = model_folder(models_dir, name, version) / MANIFEST_NAME
        if not path.is_file():
            raise ModelError(f"{where}: member {name} {version} is missing ({path})")
        actual = sha256_file(path)
        if actual != sha:
            raise ModelError(f"{where}: member {name} {version} has manifest sha256 {actual}, the ensemble names "
                             f"{sha}; refusing to combine a member that is not the one the weights were fitted for")
        member = load_pipeline(models_dir, name, version, device, batch_size, None, rules)
        if not isinstance(member, IchPipeline) or member.manifest.labels != ICH_LABELS:
            raise ModelError(f"{where}: member {name} {version} is not an ICH model with labels {list(ICH_LABELS)}")
        members.append(member)
    try:
        weights = {m.info.name: np.array([float(e["weights"][label][m.info.name]) for label in labels])
                   for m in members}
        intercepts = np.array([float(e["intercepts"][label]) for label in labels])
        base_thresholds = {label: float(d["thresholds"][label]) for label in labels}
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{where}: ensemble weights, intercepts and thresholds need a number per label and "
                         f"member: {exc!r}") from None
    if any((w < 0).any() for w in weights.values()) or not all(0 < t < 1 for t in base_thresholds.values()):
        raise ModelError(f"{where}: ensemble weights must be >= 0 and thresholds between 0 and 1")
    mask_dice = _mask_dice(e.get("mask_dice"), [m.info.name for m in members], where)
    shape = shape_weights(e.get("shape"), labels, where)
    if shape is not None and mask_dice is None:
        raise ModelError(f"{where}: an ensemble with a shape feature needs the mask_dice it was measured with")
    first = members[0].manifest
    tags = d.get("tags", [])
    manifest = first.replace(
        folder=folder, sha256=hashlib.sha256(raw_bytes).hexdigest(), name=str(d["name"]),
        version=str(d["version"]), display_name=display_name(str(d.get("display_name") or d["name"]),
                                                             [m.manifest for m in members]),
        labels=labels, thresholds=base_thresholds, critical_labels=frozenset(d.get("critical_labels", labels)),
        components=(), aggregation=Aggregation.WEIGHTED_LOGIT, study_model=None, operating_points=dict(d.get("operating_points", {})),
        synthetic_demo=bool(d.get("synthetic_demo", False)) or "synthetic-demo" in tags,
        intended_use=str(d.get("intended_use", "")), raw=d)
    unknown = sorted(set(thresholds) - set(labels))
    if unknown:
        raise ModelError(f"threshold override(s) for {unknown} but model {manifest.name} {manifest.version} "
                         f"has labels {list(labels)}")
    return IchEnsemblePipeline(manifest, members, weights, intercepts, device, batch_size, thresholds, mask_dice,
                               shape)


def _mask_dice(entry: Any, names: Sequence[str], where: str) -> dict[str, np.ndarray] | None:
    """The manifest's "mask_dice" ({subtype: {member: Dice in [0, 1] or null}}) as member name -> (L-1,)
    with NaN for null or absent; None when the ensemble has none (fitted without annotations, or before it
    was recorded: ICH 0.6.0)."""
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise ModelError(f"{where}: ensemble mask_dice must map each subtype to {{member: Dice}}")
    out = {name: np.full(len(ICH_LABELS) - 1, np.nan) for name in names}
    for j, label in enumerate(ICH_LABELS[1:]):
        per_member = entry.get(label) or {}
        if not isinstance(per_member, dict):
            raise ModelError(f"{where}: ensemble mask_dice[{label!r}] must map members to a Dice")
        unknown = sorted(set(per_member) - set(names))
        if unknown:  # a misspelt member would silently fall back to the grid rule
            raise ModelError(f"{where}: ensemble mask_dice[{label!r}] names {unknown}, which are not members")
        for name in names:
            v = per_member.get(name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ModelError(f"{where}: ensemble mask_dice[{label!r}][{name!r}] must be a number in [0, 1], "
                                 f"got {v!r}")
            out[name][j] = float(v)
    return out


def ensemble_manifest_entry(members: Sequence[Manifest], weights: np.ndarray, intercepts: np.ndarray,
                            fitted_on: str, mask_dice: np.ndarray | None = None, shape: np.ndarray | None = None
                            ) -> dict[str, Any]:
    """The manifest's "ensemble" object for `weights` (M, L), `intercepts` (L,) and, when the calibration
    studies had annotations, the members' mask Dice per subtype (M, L-1; NaN: not measured) and the shape
    feature's weight per label (L,)."""
    entry: dict[str, Any] = {
        "rule": RULE,
        "members": [{"name": m.name, "version": m.version, "sha256": m.sha256} for m in members],
        "weights": {label: {m.name: round(float(weights[k, j]), 6) for k, m in enumerate(members)}
                    for j, label in enumerate(ICH_LABELS)},
        "intercepts": {label: round(float(intercepts[j]), 6) for j, label in enumerate(ICH_LABELS)},
        "masks": "members' mask probabilities averaged with the label's weights",
        "fitted_on": fitted_on,
    }
    if mask_dice is not None and np.isfinite(mask_dice).any():
        entry["masks"] = ("each subtype's mask from the member trained on it whose mask had the best Dice on the "
                          "calibration studies (mask_dice: mean per study with that subtype, on the finest grid)")
        entry["mask_dice"] = {label: {m.name: None if not np.isfinite(mask_dice[k, j]) else round(float(mask_dice[k, j]), 4)
                                      for k, m in enumerate(members)} for j, label in enumerate(ICH_LABELS[1:])}
    if shape is not None:
        entry["shape"] = shape_entry(shape, ICH_LABELS)
    return entry


def member_manifests(models_dir: Path, specs: Sequence[str]) -> list[Manifest]:
    """`name/version` strings -> member manifests (validated)."""
    from dicom_node.ml.registry import model_folder

    out = []
    for spec in specs:
        name, _, version = spec.partition("/")
        out.append(load_manifest(model_folder(models_dir, name, version)))
    _distinct_names([m.name for m in out], "")
    return out


def _distinct_names(names: list[str], where: str) -> None:
    """The manifest keys each member's weights by its name: two versions of one name cannot both be members."""
    if len(set(names)) != len(names):
        raise ModelError(f"{where}ensemble members need distinct names, got {names}")
