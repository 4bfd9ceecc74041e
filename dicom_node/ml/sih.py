"""SIH pipeline: three post-contrast T1 images -> three binary networks -> logistic-regression ensemble.

select_sih_images picks the axial (pons level), coronal 1 (pituitary/midbrain) and coronal 2 (posterior
fossa) images; each goes through its own network (one logit each); the ensemble's probability is
sigmoid(intercept + sum(coefficient[role] * logit[role])), coefficients from the manifest.

Where (only for a present finding): a model with a sign localiser (component "signs", `sih_signs`) maps
where the signs are on each of the three images; the key image is the one with the most sign, the region
the largest sign component on it (`localise.region_from_mask`), and the masks go to the SEG. A localiser
that tells the signs apart also names them: the finding lists the signs it marked over at least the
sign's least share of one image (`Component.least_share`, chosen on validation studies: smaller specks
are neither named nor shown), each with a SEG segment after the finding's own (which is their union), and
the sign under the region (`Finding.detail`, the likeliest there). Without a
localiser, or when it finds no sign, the key image is the one whose weighted logit contributes most and
the region the Grad-CAM peak inside the head. Grad-CAM of the key image's network is the overlay's
explanation either way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from dicom_node.ml.analysis import AnalysisStatus, Finding, InstanceRef, KeyImage, StudyAnalysis
from dicom_node.ml.device import inference_mode
from dicom_node.ml.gradcam import grad_cam, to_source
from dicom_node.ml.localise import MASK_LEVEL, peak_inside, region_from_mask, signal_head_mask
from dicom_node.ml.manifest import SIH_ROLES, SIH_SIGNS_ROLE
from dicom_node.ml.pipeline import Pipeline, load_network
from dicom_node.ml.preprocess import Placement, mr_input, read_image
from dicom_node.ml.selection import SihImages, select_sih_images
from dicom_node.ml.sih_signs import sign_at, sign_probabilities
from dicom_node.outputs.codes import finding_concept, sign_label

log = logging.getLogger(__name__)


def ensemble_probability(logits: dict[str, float], coefficients: Mapping[str, float], intercept: float) -> float:
    z = intercept + sum(coefficients[r] * logits[r] for r in SIH_ROLES)
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


class SihPipeline(Pipeline):
    nets: dict[str, torch.nn.Module]
    localiser: torch.nn.Module | None = None
    localiser_size = 0  # the localiser's input size (its component's own, else the manifest's)
    sign_names: tuple[str, ...] = ()  # the signs the localiser tells apart, one mask each (none: one mask)
    least_share: tuple[float, ...] = ()  # per sign, the least share of an image to name it (none: any pixel)

    def load_networks(self) -> None:
        self.nets = {role: load_network(self.manifest, self.manifest.component(role), 1, self.device) for role in SIH_ROLES}
        if any(c.role == SIH_SIGNS_ROLE for c in self.manifest.components):
            component = self.manifest.component(SIH_SIGNS_ROLE)
            self.sign_names = component.signs
            self.least_share = tuple(float(v) for v in component.least_share) or (0.0,) * len(component.signs)
            outputs = 1 + len(component.signs) if component.signs else 2
            self.localiser = load_network(self.manifest, component, outputs, self.device)
            self.localiser_size = component.size or self.manifest.input.size

    def select(self, instances: Sequence[InstanceRef]) -> SihImages:
        return select_sih_images(instances, self.rules["axial"], self.rules["coronal"])

    @staticmethod
    def pixels(images: SihImages) -> dict[str, np.ndarray]:
        return {role: read_image(ref.path) for role, ref in images.by_role().items()}

    def inputs(self, pixels: Mapping[str, np.ndarray]) -> dict[str, tuple[np.ndarray, Placement]]:
        spec = self.manifest.input
        low, high = spec.percentiles
        return {role: mr_input(image, spec.size, low, high) for role, image in pixels.items()}

    def logits(self, inputs: dict[str, tuple[np.ndarray, Placement]]) -> dict[str, float]:
        out = {}
        with inference_mode(self.device):
            for role, (x, _p) in inputs.items():
                t = torch.from_numpy(x[None]).to(self.device.torch_device)
                out[role] = float(self.nets[role](t).float()[0, 0].cpu())
        return out

    def _analyse(self, instances: Sequence[InstanceRef]) -> StudyAnalysis:
        images = self.select(instances)
        refs = images.by_role()
        pixels = self.pixels(images)
        inputs = self.inputs(pixels)
        logits = self.logits(inputs)
        ens = self.manifest.ensemble
        assert ens is not None  # validated by load_manifest for sih-mr
        prob = ensemble_probability(logits, ens.coefficients, ens.intercept)
        label = self.manifest.labels[0]
        threshold = self.thresholds[label]
        present = prob >= threshold
        finding = Finding(label=label, probability=prob, threshold=threshold, present=present,
                          critical=label in self.manifest.critical_labels)
        key_images = []
        masks: dict[str, dict[str, np.ndarray]] = {}
        if present:
            heads = {role: signal_head_mask(image) for role, image in pixels.items()}
            probs = self.locate(pixels, heads)
            parts = {role: p >= MASK_LEVEL for role, p in probs.items()}
            shown: tuple[str, ...] = ()
            if self.sign_names:  # a localiser that names the signs shows those it names, and only those
                shown = tuple(s for k, s in enumerate(self.sign_names) if self.names_sign(parts, k))
                keep = [self.sign_names.index(s) for s in shown]
                probs = {role: p[keep] for role, p in probs.items()}
                parts = {role: p[keep] for role, p in parts.items()}
            signs = {role: np.asarray(p.any(axis=0)) for role, p in parts.items()}
            if any(m.any() for m in signs.values()):
                role = max(SIH_ROLES, key=lambda r: int(signs[r].sum()))
                # the key image's series first: the SEG covers the images of its first mask's series
                order = sorted(SIH_ROLES, key=lambda r: refs[r].series_uid != refs[role].series_uid)
                masks[label] = {refs[r].sop_instance_uid: signs[r] for r in order if signs[r].any()}
                for k, sign in enumerate(shown):
                    masks[sign_label(sign)] = {refs[r].sop_instance_uid: parts[r][k] for r in order if parts[r][k].any()}
            else:
                role = max(SIH_ROLES, key=lambda r: ens.coefficients[r] * logits[r])
            ref = refs[role]
            x, p = inputs[role]
            heat = to_source(grad_cam(self.nets[role], torch.from_numpy(x[None]).to(self.device.torch_device), 0), p)
            region = region_from_mask(signs[role]) if signs[role].any() else None
            center, radius = region if region is not None else peak_inside(heat, heads[role])
            at = sign_at(probs[role], shown, *center) if region is not None else ""
            finding = Finding(label=label, probability=prob, threshold=threshold, present=True, critical=finding.critical,
                              key_sop_instance_uid=ref.sop_instance_uid, key_series_uid=ref.series_uid,
                              region_center=center, region_radius=radius, signs=shown,
                              detail=finding_concept(sign_label(at)).display.lower() if at else "")
            key_images.append(KeyImage(ref.sop_instance_uid, [label], heat))
        series = list(dict.fromkeys(r.series_uid for r in refs.values()))
        reason = (f"axial, coronal 1 and coronal 2 post-contrast T1 images analysed; "
                  f"logits {', '.join(f'{r}={v:.2f}' for r, v in logits.items())}")
        log.info("study analysed", extra={"model": self.info.name, "study_uid": images.axial.study_uid,
                                          "probability": round(prob, 3)})
        return StudyAnalysis(
            model=self.info, status=AnalysisStatus.ANALYSED, reason=reason, study_uid=images.axial.study_uid,
            evaluated_series_uids=series, evaluated_sop_instance_uids=[r.sop_instance_uid for r in refs.values()],
            findings=[finding], key_images=key_images, masks=masks,
        )

    def names_sign(self, parts: Mapping[str, np.ndarray], k: int) -> bool:
        """Does sign k cover at least its least share of one analysed image (`Component.least_share`)?"""
        return any(part[k].any() and part[k].sum() / max(part.shape[1:]) ** 2 >= self.least_share[k]
                   for part in parts.values())

    def locate(self, pixels: Mapping[str, np.ndarray], heads: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """role -> (K, rows, cols) float32: the probability of each sign mask on each image, 0 outside the
        head (one all-zero mask without a localiser)."""
        if self.localiser is None:
            return {role: np.zeros((1, *image.shape), np.float32) for role, image in pixels.items()}
        low, high = self.manifest.input.percentiles
        found = sign_probabilities(self.localiser, pixels, self.localiser_size, low, high, self.device)
        return {role: found[role] * heads[role][None] for role in pixels}
