"""What goes back to PACS: a TID 1500 SR for every analysis, and an overlay per present finding.

    from dicom_node.outputs import build_outputs, OutputObject, EquipmentInfo

`build_outputs` is pure: it builds datasets (with file meta) and writes nothing; the worker stores and
queues them. UIDs are deterministic (see `uids`), so building twice gives the same UIDs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pydicom

from dicom_node.analysis import AnalysisStatus, StudyAnalysis
from dicom_node.outputs import lineage as lineage_rules
from dicom_node.outputs.equipment import EquipmentInfo
from dicom_node.outputs.lineage import PriorReport
from dicom_node.outputs.marks import located_findings
from dicom_node.outputs.objects import OutputObject
from dicom_node.outputs.overlay import build_overlay
from dicom_node.outputs.sr import build_sr
from dicom_node.verdicts import reconcile

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
    for index, finding in enumerate(located_findings(analysis.findings, sources), start=1):
        key = finding.key_sop_instance_uid or ""
        outputs.append(build_overlay(analysis, finding, heatmaps.get(key), sources[key], index, generation,
                                     lineage.sop_instance_uid, device))
    return outputs
