"""What goes back to PACS: a TID 1500 SR for every analysis, an overlay per located finding, and a DICOM
SEG of the present findings' masks when the model outputs masks.

    from dicom_node.outputs import build_outputs, OutputObject, EquipmentInfo

`build_outputs` is pure: it builds datasets (with file meta) and writes nothing; the worker stores and
queues them. UIDs are deterministic (see `uids`), so building twice gives the same UIDs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pydicom

from dicom_node.ml.analysis import AnalysisStatus, StudyAnalysis
from dicom_node.ml.verdicts import reconcile
from dicom_node.outputs import codes, uids
from dicom_node.outputs import lineage as lineage_rules
from dicom_node.outputs.equipment import EquipmentInfo, series_number
from dicom_node.outputs.lineage import PriorReport
from dicom_node.outputs.marks import located_findings
from dicom_node.outputs.objects import OutputObject
from dicom_node.outputs.overlay import build_overlay
from dicom_node.outputs.seg import SegAlgorithm, SegmentMask, build_seg, seg_series_description
from dicom_node.outputs.sr import build_sr

__all__ = ["EquipmentInfo", "OutputObject", "PriorReport", "build_outputs"]

log = logging.getLogger(__name__)


def build_outputs(
    analysis: StudyAnalysis,
    sources: Mapping[str, pydicom.Dataset],
    generation: int,
    device: EquipmentInfo | None = None,
    history: Sequence[PriorReport] = (),
) -> list[OutputObject]:
    """The SR, then one overlay per present finding whose key image is in `sources`.

    `sources` maps SOP Instance UID to source datasets: at least one (patient and study attributes),
    every key image (with pixel data) and, as evidence, every evaluated instance (headers suffice).
    `generation` (>= 1) is the study generation analysed (the SR's Instance Number). `history` lists the
    SRs already issued for this study and model, oldest first: unchanged content keeps the latest UID,
    changed content supersedes it (see `lineage`). Raises ValueError for unusable input (no sources, a
    label without a code, another study's images).
    """
    if generation < 0:
        raise ValueError(f"generation must be >= 0, got {generation}")
    analysis = reconcile(analysis)
    if not analysis.study_uid and sources:
        analysis = replace(analysis, study_uid=str(next(iter(sources.values())).StudyInstanceUID))
    lineage = lineage_rules.decide(analysis, lineage_rules.content_digest(analysis), history)
    outputs = [build_sr(analysis, sources, generation, device, lineage)]
    if analysis.status != AnalysisStatus.ANALYSED:
        return outputs
    heatmaps = {k.sop_instance_uid: k for k in analysis.key_images}
    for finding in analysis.findings:
        if finding.present and finding.key_sop_instance_uid and finding.key_sop_instance_uid not in sources:
            log.warning("key image not among the sources: no overlay",
                        extra={"study_uid": analysis.study_uid, "label": finding.label,
                               "sop_instance_uid": finding.key_sop_instance_uid})
    # one overlay per located finding; a label reported per lesion (instance 1..n) gets one, for its first
    overlaid = [f for f in located_findings(analysis.findings, sources) if f.instance <= 1]
    for index, finding in enumerate(overlaid, start=1):
        key = finding.key_sop_instance_uid or ""
        outputs.append(build_overlay(analysis, finding, heatmaps.get(key), sources[key], index, generation,
                                     lineage.sop_instance_uid, device))
    seg = _segmentation(analysis, sources, generation, lineage.sop_instance_uid, device)
    if seg is not None:
        outputs.append(seg)
    return outputs


def _segmentation(analysis: StudyAnalysis, sources: Mapping[str, pydicom.Dataset], generation: int,
                  report_uid: str, device: EquipmentInfo | None) -> OutputObject | None:
    """The SEG of the present findings' masks, over the evaluated images of the masks' series."""
    present = {f.label for f in analysis.findings if f.present}
    # a finding's own mask, then those of its signs (SIH), in the order the pipeline gives them
    segments = [SegmentMask(label, masks) for label, masks in analysis.masks.items()
                if (label in present or codes.finding_concept(label).parent in present)
                and any(m.any() for m in masks.values())]
    if not segments:
        return None
    first_uid = next(uid for s in segments for uid, m in s.masks.items() if m.any())
    if first_uid not in sources:
        log.warning("mask on an image that is not among the sources: no SEG",
                    extra={"study_uid": analysis.study_uid, "sop_instance_uid": first_uid})
        return None
    series = sources[first_uid].SeriesInstanceUID
    images = [sources[uid] for uid in analysis.evaluated_sop_instance_uids
              if uid in sources and sources[uid].SeriesInstanceUID == series]
    model = analysis.model
    return build_seg(
        images or [sources[first_uid]], segments,
        series_uid=str(uids.series_uid(analysis.study_uid, model.name, model.version, uids.SEG)),
        sop_uid=str(uids.instance_uid(analysis.study_uid, model.name, model.version, uids.SEG, report_uid)),
        series_number=series_number(model, uids.SEG), instance_number=max(1, generation),
        algorithm=SegAlgorithm(model.display_name, model.version, model),
        series_description=seg_series_description(
            model, [s.label for s in segments if not codes.finding_concept(s.label).parent]), device=device)
