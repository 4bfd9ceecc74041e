"""What goes back to PACS: a TID 1500 SR for every analysis, and an overlay per present finding.

    from dicom_node.outputs import build_outputs, OutputObject, EquipmentInfo

`build_outputs` is pure: it builds datasets (with file meta) and writes nothing; the worker stores and
queues them. UIDs are deterministic (see `uids`), so building twice gives the same UIDs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pydicom

from dicom_node.analysis import AnalysisStatus, StudyAnalysis
from dicom_node.outputs.equipment import EquipmentInfo
from dicom_node.outputs.objects import OutputObject
from dicom_node.outputs.overlay import build_overlay
from dicom_node.outputs.sr import build_sr

__all__ = ["EquipmentInfo", "OutputObject", "build_outputs"]

log = logging.getLogger(__name__)


def build_outputs(
    analysis: StudyAnalysis,
    sources: Mapping[str, pydicom.Dataset],
    generation: int,
    device: EquipmentInfo | None = None,
) -> list[OutputObject]:
    """The SR, then one overlay per present finding whose key image is in `sources`.

    `sources` maps SOP Instance UID to source datasets (with pixel data): at least one (patient and
    study attributes) and every key image. `generation` (>= 1) is the study generation analysed.
    Raises ValueError for unusable input (no sources, a label without a code, another study's images).
    """
    if generation < 0:
        raise ValueError(f"generation must be >= 0, got {generation}")
    outputs = [build_sr(analysis, sources, generation, device)]
    if analysis.status != AnalysisStatus.ANALYSED:
        return outputs
    heatmaps = {k.sop_instance_uid: k for k in analysis.key_images}
    index = 0
    for finding in analysis.findings:
        if not finding.present or not finding.key_sop_instance_uid:
            continue
        source = sources.get(finding.key_sop_instance_uid)
        if source is None:
            log.warning("key image not among the sources: no overlay",
                        extra={"study_uid": analysis.study_uid, "label": finding.label,
                               "sop_instance_uid": finding.key_sop_instance_uid})
            continue
        index += 1
        outputs.append(build_overlay(analysis, finding, heatmaps.get(finding.key_sop_instance_uid), source,
                                     index, generation, device))
    return outputs
