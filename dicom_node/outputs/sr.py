"""The AI result as a Comprehensive 3D SR, TID 1500 Measurement Report (highdicom), following IHE AIR.

One measurement group per model label: the finding as a qualitative evaluation (Present / Absent /
Undetermined), its probability (DCM 122157), TID 4019 algorithm identification with threshold and
manifest checksum, and the key image (as an image region when the finding has a location, so OHIF
draws it). A "Qualitative Evaluations" container carries the plain-text AI statement and, when the
study was not analysed, the reason. See docs/conformance.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import highdicom as hd
import numpy as np
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes

from dicom_node.analysis import AnalysisStatus, Finding, StudyAnalysis
from dicom_node.outputs import codes, uids
from dicom_node.outputs.equipment import (
    DEMO_MARK,
    MANUFACTURER,
    NOT_FOR_CLINICAL_USE,
    EquipmentInfo,
    finish_common,
    series_description,
    series_number,
)
from dicom_node.outputs.objects import OutputObject

log = logging.getLogger(__name__)

_Group = hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations


def ai_statement(analysis: StudyAnalysis) -> str:
    """The plain-text statement that this is an AI result (with the demo warning when it applies)."""
    model = analysis.model
    text = (
        f"AI result produced automatically by {model.display_name} version {model.version} "
        f"(dicom-node); not reviewed by a physician."
    )
    if model.synthetic_demo:
        text += (
            f" {DEMO_MARK}: demo weights trained on generated phantoms. {NOT_FOR_CLINICAL_USE}."
        )
    return text


def summary(analysis: StudyAnalysis) -> str:
    """One line a radiologist reads first: what was found, or why nothing was."""
    if analysis.status == AnalysisStatus.NOT_ANALYSED:
        return f"Not analysed: {analysis.reason or 'no reason given'}"
    if analysis.status == AnalysisStatus.FAILED:
        return f"Analysis failed: {analysis.reason or 'no reason given'}"
    present = [f for f in analysis.findings if f.present]
    absent = [f for f in analysis.findings if f.present is not None and not f.present]
    parts = []
    if present:
        parts.append("Present: " + ", ".join(
            f"{codes.finding_concept(f.label).display} (probability {f.probability:.2f})" for f in present))
    if absent:
        parts.append("Absent: " + ", ".join(codes.finding_concept(f.label).display for f in absent))
    return ". ".join(parts) + "." if parts else "No findings reported."


def _findings(analysis: StudyAnalysis) -> list[Finding]:
    """Findings to report; every one Undetermined when the study was not analysed (never a silent negative)."""
    if analysis.status == AnalysisStatus.ANALYSED and analysis.findings:
        return list(analysis.findings)
    labels = [f.label for f in analysis.findings] or list(
        codes.labels_for_task(analysis.model.task, analysis.model.name))
    return [Finding(label=label, probability=0.0, threshold=0.0, present=None) for label in labels]


def _algorithm(analysis: StudyAnalysis, finding: Finding | None) -> hd.sr.AlgorithmIdentification:
    model = analysis.model
    parameters = [f"task={model.task}", f"manifest_sha256={model.manifest_sha256}"]
    if finding is not None and finding.present is not None:
        parameters.insert(0, f"threshold={finding.threshold:g}")
    if model.synthetic_demo:
        parameters.append(DEMO_MARK)
    return hd.sr.AlgorithmIdentification(
        name=model.display_name, version=model.version, parameters=parameters, manufacturer=MANUFACTURER)


def _region(finding: Finding, key: Dataset) -> hd.sr.ImageRegion:
    """A circle on the key image (SCOORD pixel coordinates: (column, row), 0.0 = top-left pixel corner)."""
    assert finding.region_center is not None
    row, col = finding.region_center
    radius = finding.region_radius or max(4.0, min(int(key.Rows), int(key.Columns)) / 32)
    center = (col + 0.5, row + 0.5)
    data = np.array([center, (center[0] + radius, center[1])], dtype=np.float32)
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.CIRCLE,
        graphic_data=data,
        source_image=hd.sr.SourceImageForRegion.from_source_image(key),
    )


def _group(analysis: StudyAnalysis, finding: Finding, key: Dataset | None) -> _Group:
    model = analysis.model
    concept = codes.finding_concept(finding.label)
    tracking = hd.sr.TrackingIdentifier(
        uid=uids.tracking_uid(analysis.study_uid, model.name, model.version, finding.label),
        identifier=f"{model.name} {finding.label}",
    )
    algorithm = _algorithm(analysis, finding)
    measurements = None
    if finding.present is not None:
        measurements = [hd.sr.Measurement(
            name=codes.PROBABILITY, value=float(finding.probability), unit=codes.UNIT_NO_UNITS)]
    evaluations = [hd.sr.QualitativeEvaluation(name=concept.code, value=codes.presence(finding.present))]
    if key is not None and finding.present and finding.region_center is not None:
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, referenced_region=_region(finding, key), finding_type=concept.code,
            algorithm_id=algorithm, measurements=measurements, qualitative_evaluations=evaluations)
    source_images = [hd.sr.SourceImageForMeasurementGroup.from_source_image(key)] if key is not None else None
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, finding_type=concept.code, algorithm_id=algorithm,
        measurements=measurements, qualitative_evaluations=evaluations, source_images=source_images)


def _procedure(primary: Dataset) -> list[CodedConcept]:
    """Procedure Reported: the imaging procedure (from the source when it names one), not the algorithm."""
    procedures = []
    for item in primary.get("ProcedureCodeSequence", []):
        try:
            procedures.append(CodedConcept(item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning))
        except (AttributeError, TypeError, ValueError):
            log.debug("skipping unusable Procedure Code Sequence item")
    return procedures or [codes.procedure_for_modality(str(primary.get("Modality", "")))]


def _observation_context(analysis: StudyAnalysis) -> hd.sr.ObservationContext:
    model = analysis.model
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=uids.device_uid(model.name, model.manifest_sha256),
        name=f"{model.display_name} {model.version}",
        manufacturer_name=MANUFACTURER,
        model_name=model.display_name,
    )
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=dcm_codes.DCM.Device, observer_identifying_attributes=device))


def _statements(analysis: StudyAnalysis) -> hd.sr.ContainerContentItem:
    """TID 1500 "Qualitative Evaluations" container with the AI statement and the summary or reason."""
    container = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    container.ContentSequence = hd.sr.ContentSequence([
        hd.sr.TextContentItem(name=codes.COMMENT, value=ai_statement(analysis),
                              relationship_type=hd.sr.RelationshipTypeValues.CONTAINS),
        hd.sr.TextContentItem(name=codes.IMPRESSION, value=summary(analysis),
                              relationship_type=hd.sr.RelationshipTypeValues.CONTAINS),
    ])
    return container


def _evidence(analysis: StudyAnalysis, sources: Mapping[str, Dataset], primary: Dataset) -> list[Dataset]:
    """Source datasets, plus header-only references to evaluated instances we hold no dataset for."""
    evidence = [primary, *(ds for uid, ds in sources.items() if ds is not primary)]
    series = list(dict.fromkeys(analysis.evaluated_series_uids))
    if len(series) != 1:
        return evidence  # without one evaluated series we cannot place the missing instances
    by_series = [ds for ds in sources.values() if ds.SeriesInstanceUID == series[0]]
    sop_class = (by_series or [primary])[0].SOPClassUID
    for sop_uid in analysis.evaluated_sop_instance_uids:
        if sop_uid in sources:
            continue
        ref = Dataset()
        ref.StudyInstanceUID = primary.StudyInstanceUID
        ref.SeriesInstanceUID = series[0]
        ref.SOPInstanceUID = sop_uid
        ref.SOPClassUID = sop_class
        evidence.append(ref)
    return evidence


def _primary(analysis: StudyAnalysis, sources: Mapping[str, Dataset]) -> Dataset:
    """The source that gives patient and study attributes: a key image, else an evaluated one, else any."""
    for finding in analysis.findings:
        key = finding.key_sop_instance_uid
        if key is not None and key in sources:
            return sources[key]
    for uid in analysis.evaluated_sop_instance_uids:
        if uid in sources:
            return sources[uid]
    return next(iter(sources.values()))


def build_sr(
    analysis: StudyAnalysis, sources: Mapping[str, Dataset], generation: int, device: EquipmentInfo | None
) -> OutputObject:
    """The SR for one model's analysis of one study generation."""
    if not sources:
        raise ValueError("build_sr needs at least one source dataset (patient and study attributes)")
    model = analysis.model
    primary = _primary(analysis, sources)
    study_uid = analysis.study_uid or str(primary.StudyInstanceUID)
    if str(primary.StudyInstanceUID) != study_uid:
        raise ValueError(f"source study {primary.StudyInstanceUID} is not the analysed study {study_uid}")
    findings = _findings(analysis)
    groups = [_group(analysis, f, sources.get(f.key_sop_instance_uid or "")) for f in findings]
    key_uids = (f.key_sop_instance_uid for f in findings)
    key_images = list({uid: sources[uid] for uid in key_uids if uid is not None and uid in sources}.values())
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(analysis),
        procedure_reported=_procedure(primary),
        imaging_measurements=groups,
        title=codes.IMAGING_MEASUREMENT_REPORT,
        referenced_images=key_images or None,
    )
    report[0].ContentSequence.append(_statements(analysis))
    series_uid = uids.series_uid(study_uid, model.name, model.version, uids.SR)
    sop_uid = uids.instance_uid(study_uid, model.name, model.version, uids.SR, generation)
    sr = hd.sr.Comprehensive3DSR(
        evidence=_evidence(analysis, sources, primary),
        content=report[0],
        series_instance_uid=series_uid,
        series_number=series_number(model, uids.SR),
        sop_instance_uid=sop_uid,
        instance_number=max(1, generation),
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        institution_name=device.institution_name if device else None,
    )
    if analysis.status != AnalysisStatus.ANALYSED and not key_images and not analysis.evaluated_sop_instance_uids:
        # Nothing was evaluated: the sources only lent patient/study attributes, they are no evidence.
        del sr.CurrentRequestedProcedureEvidenceSequence
    finish_common(sr, model, device, series_description(model, "triage"))
    log.debug("built SR", extra={"study_uid": study_uid, "model": model.name, "generation": generation,
                                 "sop_instance_uid": sop_uid, "groups": len(groups)})
    return OutputObject(kind=uids.SR, dataset=sr, sop_instance_uid=str(sop_uid), series_uid=str(series_uid),
                        sop_class_uid=str(sr.SOPClassUID))

