"""Which SOP Instance UID a report gets, and which earlier report it supersedes.

A report's UID follows its content, not the job that made it:

- the same content as the latest report in the model's SR series keeps that report's UID (a re-run or a
  re-send is a no-op at the PACS);
- changed content gets a new UID, derived from the content digest and the UID it replaces, and the new
  report carries a Predecessor Documents Sequence pointing to that one (so A -> B -> A gives three UIDs,
  and the PACS shows the newest as current).

`history` is the list of reports already issued in the series, oldest first; the worker reads it from
the `outputs` table, where a new row appears only when the content changed, so the rows form the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from dicom_node.ml.analysis import AnalysisStatus, StudyAnalysis
from dicom_node.outputs import uids


@dataclass(frozen=True)
class PriorReport:
    """An SR the node already issued for this study and model."""

    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    digest: str


@dataclass(frozen=True)
class Lineage:
    sop_instance_uid: str
    predecessor: PriorReport | None


def content_digest(analysis: StudyAnalysis) -> str:
    """A digest of what the report says: verdicts, displayed probabilities, places, evidence, reason."""
    content = {
        "model": [analysis.model.name, analysis.model.version, analysis.model.manifest_sha256],
        "status": analysis.status.value,
        "reason": analysis.reason if analysis.status != AnalysisStatus.ANALYSED else "",
        "evaluated": list(analysis.evaluated_sop_instance_uids),
        "findings": [
            [f.label, None if f.present is None else bool(f.present), round(float(f.probability) * 100, 1),
             f.key_sop_instance_uid,
             [round(float(v)) for v in f.region_center] if f.region_center else None,
             round(float(f.region_radius)) if f.region_radius else None]
            + ([f.instance, f.detail, [[m.concept, m.value, m.unit] for m in f.measurements]]
               if f.instance or f.detail or f.measurements else [])
            + ([list(f.signs)] if f.signs else [])
            for f in analysis.findings
        ],
    }
    if analysis.measurements:  # study-level numbers (lesion counts) are part of what the report says
        content["measurements"] = [[m.concept, m.value, m.unit] for m in analysis.measurements]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def decide(analysis: StudyAnalysis, digest: str, history: Sequence[PriorReport]) -> Lineage:
    """The UID for a report with `digest`, and the report it supersedes (None for the first)."""
    model = analysis.model
    if history and history[-1].digest == digest:
        latest = history[-1]
        return Lineage(latest.sop_instance_uid, history[-2] if len(history) > 1 else None)
    previous = history[-1] if history else None
    uid = uids.instance_uid(analysis.study_uid, model.name, model.version, uids.SR,
                            content=f"{digest}:{previous.sop_instance_uid if previous else ''}")
    return Lineage(str(uid), previous)
