"""The final verdicts of a study analysis: one place where findings are made consistent.

Every consumer of a result (SR, series descriptions, overlays, triage priority, `evaluate`) reads the
findings after `reconcile`, so they cannot disagree. The rule today:

- a present subtype implies a present summary label: when a model has an "any" label (ICH), any other
  present label makes "any" present too. Its probability becomes the highest of its own and the present
  subtypes' (the study has at least that much evidence of hemorrhage), and when "any" had no key image it
  takes the strongest present subtype's key image and region.

`reconcile` is pure and idempotent; `Pipeline.analyse` applies it, and `build_outputs` applies it again
so that an analysis built by hand (tests, tools) obeys the same rule.
"""

from __future__ import annotations

from dataclasses import replace

from dicom_node.ml.analysis import AnalysisStatus, Finding, KeyImage, StudyAnalysis

SUMMARY_LABEL = "any"


def reconcile(analysis: StudyAnalysis) -> StudyAnalysis:
    """The analysis with consistent findings (a new object when something changed, else the same one)."""
    if analysis.status != AnalysisStatus.ANALYSED:
        return analysis
    by_label = {f.label: f for f in analysis.findings}
    summary = by_label.get(SUMMARY_LABEL)
    subtypes = [f for f in analysis.findings if f.label != SUMMARY_LABEL and f.present]
    if summary is None or not subtypes:
        return analysis
    strongest = max(subtypes, key=lambda f: f.probability)
    probability = max(float(summary.probability), float(strongest.probability))
    if summary.present and probability == summary.probability:
        return analysis
    located = summary.key_sop_instance_uid is not None
    new_summary = replace(
        summary,
        probability=probability,
        present=True,
        key_sop_instance_uid=summary.key_sop_instance_uid if located else strongest.key_sop_instance_uid,
        key_series_uid=summary.key_series_uid if located else strongest.key_series_uid,
        region_center=summary.region_center if located else strongest.region_center,
        region_radius=summary.region_radius if located else strongest.region_radius,
    )
    findings = [new_summary if f.label == SUMMARY_LABEL else f for f in analysis.findings]
    key_images = _with_label(analysis.key_images, new_summary)
    note = f"{SUMMARY_LABEL} present because {strongest.label} is present"
    reason = f"{analysis.reason}; {note}" if analysis.reason and note not in analysis.reason else (
        analysis.reason or note)
    return replace(analysis, findings=findings, key_images=key_images, reason=reason)


def _with_label(key_images: list[KeyImage], finding: Finding) -> list[KeyImage]:
    """Key images with `finding.label` added to the key image it now points at."""
    out = []
    for key in key_images:
        labels = list(key.labels)
        if key.sop_instance_uid == finding.key_sop_instance_uid and finding.label not in labels:
            labels.insert(0, finding.label)
        out.append(KeyImage(key.sop_instance_uid, labels, key.heatmap))
    return out
