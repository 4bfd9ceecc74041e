"""What every model pipeline offers the worker, and how a pipeline's networks are loaded from a manifest."""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from dicom_node.errors import ModelError, PixelDataError, SelectionError
from dicom_node.ml.analysis import AnalysisStatus, InstanceRef, ModelInfo, StudyAnalysis
from dicom_node.ml.device import Device
from dicom_node.ml.manifest import Component, Manifest, verify_weights
from dicom_node.ml.nets import build_model
from dicom_node.ml.rules import SeriesRule
from dicom_node.ml.verdicts import reconcile

log = logging.getLogger(__name__)


class Pipeline(abc.ABC):
    """A loaded model: `analyse(instances)` turns one study's instances into a `StudyAnalysis`."""

    def __init__(
        self,
        manifest: Manifest,
        device: Device,
        batch_size: int,
        thresholds: dict[str, float],
        rules: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        unknown = sorted(set(thresholds) - set(manifest.labels))
        if unknown:
            raise ModelError(
                f"threshold override(s) for {unknown} but model {manifest.name} {manifest.version} "
                f"has labels {list(manifest.labels)}"
            )
        rules = rules or {}
        unknown = sorted(set(rules) - set(manifest.rules))
        if unknown:
            raise ModelError(
                f"models.enabled rules for {unknown} but model {manifest.name} {manifest.version} "
                f"has the selection rules {sorted(manifest.rules)}"
            )
        # the manifest's series rules with the site's keys (config.toml) laid over them
        self.rules: dict[str, SeriesRule] = {
            name: rule.replace(**rules.get(name, {})) for name, rule in manifest.rules.items()
        }
        self.manifest = manifest
        self.device = device
        self.batch_size = max(1, batch_size)
        self.thresholds = {**manifest.thresholds, **thresholds}
        self.info = ModelInfo(
            name=manifest.name,
            version=manifest.version,
            task=str(manifest.task),
            display_name=manifest.display_name,
            manifest_sha256=manifest.sha256,
            synthetic_demo=manifest.synthetic_demo,
            intended_use=manifest.intended_use,
        )
        self.modalities: frozenset[str] = frozenset({manifest.input.modality})
        self.load_networks()

    @abc.abstractmethod
    def load_networks(self) -> None:
        """Build the manifest's networks with their checked weights on `self.device` (once, at load)."""

    def analyse(self, instances: Sequence[InstanceRef]) -> StudyAnalysis:
        """Final verdicts (`verdicts.reconcile`); never raises for unsuitable input (no suitable series,
        undecodable pixels): returns NOT_ANALYSED."""
        study_uid = instances[0].study_uid if instances else ""
        try:
            return reconcile(self._analyse(instances))
        except (SelectionError, PixelDataError) as exc:
            log.info("study not analysed", extra={"model": self.info.name, "study_uid": study_uid, "reason": str(exc)})
            return StudyAnalysis(model=self.info, status=AnalysisStatus.NOT_ANALYSED, reason=str(exc), study_uid=study_uid)

    @abc.abstractmethod
    def _analyse(self, instances: Sequence[InstanceRef]) -> StudyAnalysis:
        """Select, preprocess, infer, explain; may raise SelectionError / PixelDataError."""


def load_network(manifest: Manifest, component: Component, num_outputs: int, device: Device) -> nn.Module:
    """Build the component's architecture, load its checked weights, eval mode, on the device."""
    path = verify_weights(manifest, component)
    net = build_model(component.architecture, manifest.input.in_channels, num_outputs)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/KeyError for a mismatched file
        raise ModelError(
            f"model {manifest.name} {manifest.version}: {path.name} does not fit {component.architecture} with "
            f"{manifest.input.in_channels} input channel(s) and {num_outputs} output(s): {exc}"
        ) from exc
    net.eval().to(device.torch_device)
    for p in net.parameters():
        p.requires_grad_(True)  # Grad-CAM needs gradients to flow back to the last block
    return net
