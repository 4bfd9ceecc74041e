"""ICH pipeline: one non-contrast axial head CT series -> per-slice sigmoid outputs -> study findings.

select (the manifest's "series" rule, ml/selection.py) -> decode + HU + windows (+ context) -> batched inference (AMP on CUDA)
-> study probability per label (manifest `study_aggregation`: max, or mean of the top k slices)
-> key slice per label (highest slice probability) -> Grad-CAM on the key slices of present findings.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from dicom_node.analysis import AnalysisStatus, Finding, InstanceRef, KeyImage, StudyAnalysis
from dicom_node.ml.device import inference_mode
from dicom_node.ml.gradcam import grad_cam, peak_region, to_source
from dicom_node.ml.pipeline import Pipeline, load_network
from dicom_node.ml.preprocess import Placement, ct_input, read_image
from dicom_node.ml.selection import select_series

log = logging.getLogger(__name__)


class IchPipeline(Pipeline):
    net: torch.nn.Module

    def load_networks(self) -> None:
        self.net = load_network(self.manifest, self.manifest.component("slice"), len(self.manifest.labels), self.device)

    def select(self, instances: Sequence[InstanceRef]) -> list[InstanceRef]:
        return select_series(instances, self.rules["series"])

    def inputs(self, slices: Sequence[InstanceRef]) -> tuple[np.ndarray, list[Placement]]:
        """Decode and preprocess a sorted series: (N, C, size, size) float32 and each slice's placement."""
        spec = self.manifest.input
        hu = [read_image(ref.path) for ref in slices]
        arrays, places = [], []
        for i in range(len(hu)):
            x, p = ct_input(hu, i, spec.size, spec.windows, spec.context_slices)
            arrays.append(x)
            places.append(p)
        return np.stack(arrays), places

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Per-slice probabilities (N, labels) in manifest label order, batched."""
        out = []
        with inference_mode(self.device):
            for start in range(0, len(inputs), self.batch_size):
                batch = torch.from_numpy(inputs[start : start + self.batch_size]).to(self.device.torch_device)
                out.append(torch.sigmoid(self.net(batch).float()).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.manifest.labels)), dtype=np.float32)

    def aggregate(self, probs: np.ndarray) -> np.ndarray:
        """Study probability per label from slice probabilities (N, L) -> (L,)."""
        if self.manifest.aggregation == "topk_mean":
            k = min(self.manifest.aggregation_k, len(probs))
            return np.sort(probs, axis=0)[-k:].mean(axis=0)
        return probs.max(axis=0)

    def _analyse(self, instances: Sequence[InstanceRef]) -> StudyAnalysis:
        slices = self.select(instances)
        inputs, places = self.inputs(slices)
        probs = self.predict(inputs)
        study = self.aggregate(probs)
        labels = self.manifest.labels
        key_index = probs.argmax(axis=0)

        findings: dict[str, Finding] = {}
        by_slice: dict[int, list[str]] = defaultdict(list)
        for j, label in enumerate(labels):
            threshold = self.thresholds[label]
            present = bool(study[j] >= threshold)
            findings[label] = Finding(label=label, probability=float(study[j]), threshold=threshold, present=present,
                                      critical=label in self.manifest.critical_labels)
            if present:
                by_slice[int(key_index[j])].append(label)

        key_images = []
        for i, slice_labels in sorted(by_slice.items()):
            ref, x = slices[i], torch.from_numpy(inputs[i : i + 1]).to(self.device.torch_device)
            maps = []
            for label in slice_labels:
                heat = to_source(grad_cam(self.net, x, labels.index(label)), places[i])
                center, radius = peak_region(heat)
                f = findings[label]
                findings[label] = Finding(
                    label=f.label, probability=f.probability, threshold=f.threshold, present=True, critical=f.critical,
                    key_sop_instance_uid=ref.sop_instance_uid, key_series_uid=ref.series_uid,
                    region_center=center, region_radius=radius,
                )
                maps.append(heat)
            key_images.append(KeyImage(ref.sop_instance_uid, slice_labels, np.maximum.reduce(maps).astype(np.float32)))

        present_labels = [label for label in labels if findings[label].present]
        first = slices[0]
        reason = (f"{len(slices)} slices of series {first.series_number} {first.series_description!r} analysed; "
                  f"present: {', '.join(present_labels) if present_labels else 'none'}")
        log.info("study analysed",
                 extra={"model": self.info.name, "study_uid": first.study_uid, "present": present_labels})
        return StudyAnalysis(
            model=self.info, status=AnalysisStatus.ANALYSED, reason=reason, study_uid=first.study_uid,
            evaluated_series_uids=[first.series_uid],
            evaluated_sop_instance_uids=[r.sop_instance_uid for r in slices],
            findings=[findings[label] for label in labels], key_images=key_images,
        )
