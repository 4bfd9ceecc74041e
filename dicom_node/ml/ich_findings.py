"""From one series' model outputs to the study's findings: verdicts, key slices, regions, masks, heat maps.

Shared by the single-model ICH pipeline and the weighted ensemble, so both locate findings the same way:

- verdict: the study probability against the label's threshold;
- with mask outputs (segmentation models), for each present label: the key slice is the one where its
  mask (probability >= 0.5; "any": the union of the subtypes) is largest, the region is the largest
  connected component there (`localise.region_from_mask`), and every slice's mask, mapped back to the
  source image and kept inside the head, goes into `StudyAnalysis.masks` (the SEG). A present label whose
  mask is empty everywhere falls back to the explanation;
- without masks: the key slice is the slice with the highest probability and the region the Grad-CAM
  peak within the head;
- Grad-CAM on each key slice is the overlay's heat map (an explanation, not the location).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dicom_node.ml import localise
from dicom_node.ml.analysis import AnalysisStatus, Finding, InstanceRef, KeyImage, ModelInfo, StudyAnalysis
from dicom_node.ml.gradcam import grad_cam, to_source
from dicom_node.ml.preprocess import Placement

log = logging.getLogger(__name__)


@dataclass
class SeriesOutputs:
    """What the networks made of one selected series (slices sorted along the slice normal)."""

    slices: list[InstanceRef]
    hu: list[np.ndarray]  # each slice in HU, source geometry
    inputs: np.ndarray  # (N, C, S, S) model inputs of the network that explains (Grad-CAM)
    places: list[Placement]
    slice_probs: np.ndarray  # (N, L)
    study: np.ndarray  # (L,) study probabilities
    masks: np.ndarray | None = None  # (N, L-1, S/2, S/2) subtype mask probabilities, label order after "any"
    extra: dict[str, object] = field(default_factory=dict)


def _label_masks(masks: np.ndarray, j: int) -> np.ndarray:
    """(N, h, w) mask probabilities of label j (0 = "any": the union of the subtypes)."""
    return masks.max(axis=1) if j == 0 else masks[:, j - 1]


def build_analysis(info: ModelInfo, labels: Sequence[str], thresholds: Mapping[str, float], critical: frozenset[str],
                   out: SeriesOutputs, explainer: nn.Module, device: torch.device) -> StudyAnalysis:
    findings: dict[str, Finding] = {}
    regions: dict[str, tuple[tuple[float, float], float]] = {}
    key_of: dict[str, int] = {}
    masks_of: dict[str, dict[str, np.ndarray]] = {}
    heads: dict[int, np.ndarray] = {}

    def head(i: int) -> np.ndarray:
        if i not in heads:
            heads[i] = localise.head_mask(out.hu[i])
        return heads[i]

    for j, label in enumerate(labels):
        threshold = float(thresholds[label])
        present = bool(out.study[j] >= threshold)
        findings[label] = Finding(label=label, probability=float(out.study[j]), threshold=threshold, present=present,
                                  critical=label in critical)
        if not present:
            continue
        key_of[label] = int(out.slice_probs[:, j].argmax())
        if out.masks is None:
            continue
        probs = _label_masks(out.masks, j)
        area = (probs >= localise.MASK_LEVEL).sum(axis=(1, 2))
        if not area.any():
            continue
        key_of[label] = int(area.argmax())
        by_sop: dict[str, np.ndarray] = {}
        for k in (int(v) for v in np.flatnonzero(area)):
            src = localise.to_source(probs[k][None], out.places[k])[0] >= localise.MASK_LEVEL
            src &= head(k)
            if src.any():
                by_sop[out.slices[k].sop_instance_uid] = src
        key_sop = out.slices[key_of[label]].sop_instance_uid
        region = localise.region_from_mask(by_sop[key_sop]) if key_sop in by_sop else None
        if region is not None:
            regions[label] = region
            masks_of[label] = by_sop

    by_slice: dict[int, list[str]] = defaultdict(list)
    for label, i in key_of.items():
        by_slice[i].append(label)
    key_images = []
    for i, slice_labels in sorted(by_slice.items()):
        ref, x = out.slices[i], torch.from_numpy(out.inputs[i : i + 1]).to(device)
        maps = []
        for label in slice_labels:
            heat = to_source(grad_cam(explainer, x, list(labels).index(label)), out.places[i])
            maps.append(heat)
            center, radius = regions.get(label) or localise.peak_inside(heat, head(i))
            f = findings[label]
            findings[label] = Finding(
                label=f.label, probability=f.probability, threshold=f.threshold, present=True, critical=f.critical,
                key_sop_instance_uid=ref.sop_instance_uid, key_series_uid=ref.series_uid,
                region_center=center, region_radius=radius)
        key_images.append(KeyImage(ref.sop_instance_uid, slice_labels, np.maximum.reduce(maps).astype(np.float32)))

    # the SEG shows the subtypes; "any" only when no subtype is located
    seg = {k: v for k, v in masks_of.items() if k != "any"} or masks_of
    present_labels = [label for label in labels if findings[label].present]
    first = out.slices[0]
    reason = (f"{len(out.slices)} slices of series {first.series_number} {first.series_description!r} analysed; "
              f"present: {', '.join(present_labels) if present_labels else 'none'}")
    log.info("study analysed", extra={"model": info.name, "study_uid": first.study_uid, "present": present_labels,
                                      "located": sorted(regions)})
    return StudyAnalysis(
        model=info, status=AnalysisStatus.ANALYSED, reason=reason, study_uid=first.study_uid,
        evaluated_series_uids=[first.series_uid], evaluated_sop_instance_uids=[r.sop_instance_uid for r in out.slices],
        findings=[findings[label] for label in labels], key_images=key_images, masks=seg)
