"""The microbleed pipeline the worker runs: a `Pipeline` over `microbleeds.CmbModel`.

A study without an axial SWI magnitude or mIP series gets NOT_ANALYSED with the reason (every series and why
it was not read), like the other tasks. Findings: "microbleeds" (present when any bleed is reported; its
probability is the best non-vessel candidate's confidence (`cmb_rescore`), or the peak proposal score when
there is none), one "microbleed" per bleed (instance 1..n, most confident first, region on the slice where
it is largest, diameter, lobar/deep), and "asvd" / "caa" / "cadasil" (the most probable class present; "none" leaves all three
absent); counts as study measurements. A classifier trained with the FLAIR features gets the study's FLAIR
white-matter extent (`ml/wmh.py`), or is told there is none: the SR then carries the extent it read (a
measurement, with the FLAIR images as evidence), and the analysis reason (log, dashboard) says which.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TypeVar

import torch

from dicom_node.errors import ModelError
from dicom_node.ml.analysis import InstanceRef, StudyAnalysis
from dicom_node.ml.cmb_detector import build_detector, feature_size
from dicom_node.ml.cmb_manifest import cmb_settings
from dicom_node.ml.cmb_rescore import SHAPE_FEATURES, CandidateRescorer
from dicom_node.ml.manifest import Manifest, verify_weights
from dicom_node.ml.microbleeds import (
    CLASSES,
    INSTANCE_FEATURES,
    CmbModel,
    analysis_of,
    read_swi_volume,
    select_swi,
)
from dicom_node.ml.mil import BAG_FEATURES, AttentionMIL
from dicom_node.ml.pipeline import Pipeline
from dicom_node.ml.wmh import NO_FLAIR, measure_flair

log = logging.getLogger(__name__)
NetT = TypeVar("NetT", bound=torch.nn.Module)


def load_cmb_networks(manifest: Manifest, device: torch.device) -> tuple[torch.nn.Module, AttentionMIL]:
    """The detector and the classifier with their checked weights, in eval mode on `device`."""
    raw = manifest.raw
    det, cls = raw["detector"], raw["classifier"]
    detector = build_detector(det["architecture"], manifest.input.size, det.get("anchor_sizes"))
    bag = cls.get("bag_features", len(BAG_FEATURES))  # a list of names (an integer in 0.2.0 and before)
    classifier = AttentionMIL(int(cls["in_features"]), len(CLASSES), hidden=int(cls.get("hidden", 64)),
                              bag_width=len(bag) if isinstance(bag, list) else int(bag))
    return _loaded(manifest, "detector", detector, device), _loaded(manifest, "classifier", classifier, device)


def load_rescorer(manifest: Manifest, detector: torch.nn.Module, device: torch.device) -> CandidateRescorer | None:
    """The candidate rescorer (`cmb_rescore`) with its checked weights, or None when the model has none."""
    spec = manifest.raw.get("rescorer")
    if not spec:
        return None
    width = len(INSTANCE_FEATURES) + len(SHAPE_FEATURES) + feature_size(detector)
    if int(spec["in_features"]) != width:
        raise ModelError(f"model {manifest.name} {manifest.version}: rescorer.in_features {spec['in_features']} does "
                         f"not fit this detector's candidates ({width} features)")
    return _loaded(manifest, "rescorer", CandidateRescorer(width), device)


def _loaded(manifest: Manifest, role: str, net: NetT, device: torch.device) -> NetT:
    path = verify_weights(manifest, manifest.component(role))
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # a state dict of another shape or file
        raise ModelError(f"model {manifest.name} {manifest.version}: {path.name} does not fit the {role} "
                         f"described in the manifest: {exc}") from exc
    return net.eval().to(device)


class CmbPipeline(Pipeline):
    def load_networks(self) -> None:
        # the labels travel with every result, so "not analysed" and "failed" reports name them (Undetermined)
        self.info = replace(self.info, labels=self.manifest.labels)
        extra = sorted(set(self.thresholds) - {"microbleeds"})
        if extra:
            raise ModelError(f"model {self.manifest.name}: thresholds for {extra} cannot be set; the class is the "
                             "most probable one (only 'microbleeds', the bleed score, has a threshold)")
        settings = cmb_settings(self.manifest.raw)
        assert settings is not None  # validated when the manifest was loaded
        device = self.device.torch_device
        detector, classifier = load_cmb_networks(self.manifest, device)
        self.model = CmbModel(settings, detector, classifier, device, self.batch_size,
                              load_rescorer(self.manifest, detector, device))

    def _analyse(self, instances: Sequence[InstanceRef]) -> StudyAnalysis:
        slices, which = select_swi(instances, self.rules)
        volume = read_swi_volume(slices)
        threshold = self.thresholds["microbleeds"]
        flair = measure_flair(instances, self.rules) if self.model.reads_flair else NO_FLAIR
        result = self.model.run(volume, threshold, flair)
        log.info("study analysed", extra={"model": self.info.name, "study_uid": slices[0].study_uid,
                                          "microbleeds": len(result.bleeds), "class": result.svd_class,
                                          "flair_wmh_extent": flair.extent if flair.present else None})
        return analysis_of(result, volume, which, self.info, threshold)
