"""ICH pipeline: one non-contrast axial head CT series -> per-slice sigmoid outputs -> study findings.

select (the manifest's "series" rule, ml/selection.py) -> decode + HU + windows (+ context) -> batched inference (AMP on CUDA)
-> study probability per label (manifest `study_aggregation`: the study-level logistic model over slice
   logits and mask extent, or max / mean of the top k slice probabilities; see `study_model`)
-> findings, key slices, regions and masks from the mask outputs (`ich_findings`), Grad-CAM as explanation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from dicom_node.ml.analysis import InstanceRef, StudyAnalysis
from dicom_node.ml.ich_findings import SeriesOutputs, build_analysis
from dicom_node.ml.ich_outputs import channels_last, run_network, sigmoid, study_probabilities
from dicom_node.ml.nets import fuse_batchnorm
from dicom_node.ml.pipeline import Pipeline, load_network
from dicom_node.ml.preprocess import Placement, ct_inputs, read_image
from dicom_node.ml.selection import select_series

log = logging.getLogger(__name__)


class IchPipeline(Pipeline):
    net: torch.nn.Module

    def load_networks(self) -> None:
        net = load_network(self.manifest, self.manifest.component("slice"), len(self.manifest.labels), self.device)
        self.net = channels_last(fuse_batchnorm(net), self.device)

    def select(self, instances: Sequence[InstanceRef]) -> list[InstanceRef]:
        return select_series(instances, self.rules["series"])

    def inputs(self, slices: Sequence[InstanceRef]) -> tuple[np.ndarray, list[Placement]]:
        """Decode and preprocess a sorted series: (N, C, size, size) float32 and each slice's placement."""
        return self.model_inputs([read_image(ref.path) for ref in slices])

    def model_inputs(self, hu: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Placement]]:
        """A decoded series (HU) -> (N, C, size, size) float32 model inputs and each slice's placement."""
        spec = self.manifest.input
        return ct_inputs(hu, spec.size, spec.windows, spec.context_slices)

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Per-slice probabilities (N, labels) in manifest label order, batched as the worker's `run_network`."""
        return sigmoid(run_network(self.net, inputs, self.batch_size, self.device)[0])

    def aggregate(self, probs: np.ndarray) -> np.ndarray:
        """Study probability per label from slice probabilities (N, L) -> (L,), for manifests without a study
        model (`max`, `topk_mean`); `series_outputs` applies whichever the manifest names."""
        if self.manifest.aggregation == "topk_mean":
            k = min(self.manifest.aggregation_k, len(probs))
            return np.sort(probs, axis=0)[-k:].mean(axis=0)
        return probs.max(axis=0)

    def series_outputs(self, slices: Sequence[InstanceRef]) -> SeriesOutputs:
        """Decode, preprocess and run the network over a selected series: slice outputs, masks and the study
        probabilities (the manifest's aggregation). `evaluate` and `train` use the same code."""
        hu = [read_image(ref.path) for ref in slices]
        inputs, places = self.model_inputs(hu)
        logits, masks = run_network(self.net, inputs, self.batch_size, self.device)
        study = study_probabilities(self.manifest, logits, masks)
        return SeriesOutputs(list(slices), hu, inputs, places, sigmoid(logits), study, masks)

    def _analyse(self, instances: Sequence[InstanceRef]) -> StudyAnalysis:
        out = self.series_outputs(self.select(instances))
        return build_analysis(self.info, self.manifest.labels, self.thresholds, self.manifest.critical_labels, out,
                              self.net, self.device.torch_device)
