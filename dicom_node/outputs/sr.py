"""The AI result as a Comprehensive 3D SR, TID 1500 Measurement Report (highdicom), following IHE AIR.

Content tree (docs/conformance.md shows it in full and says which viewer behaviour each choice serves):

- Imaging Measurements: one Measurement Group (TID 1501, continuity SEPARATE) per *located* finding: the
  finding, its qualitative evaluation (CID 240), its probability as a NUM in UCUM "%" INFERRED FROM an
  image region (SCOORD circle on the key image), and two Comment TEXTs ("Subdural hemorrhage PRESENT",
  "unverified AI result"). OHIF draws the region and shows the comments and "Probability: 93.00 %".
  A study with no located finding still gets one such group: the study-level finding anchored on an
  evaluated image, with a comment that the marker is not a location (OHIF blanks its viewport on an SR
  without a displayable group, and on any group without a region).
- Qualitative Evaluations: every other finding as Present / Absent / Undetermined (CODE) with its
  probability (NUM, HAS PROPERTIES), the AI statement and the impression (TEXT).

UNVERIFIED, Algorithm Identification (TID 4019) in every group, Contributing Equipment, Procedure
Reported and the synthetic-demo marking follow IHE AIR. A report whose content changed gets a new SOP
Instance UID and a Predecessor Documents Sequence (see `lineage`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import highdicom as hd
import numpy as np
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes

from dicom_node.ml.analysis import AnalysisStatus, Finding, StudyAnalysis
from dicom_node.outputs import codes, uids, wording
from dicom_node.outputs.equipment import MANUFACTURER, EquipmentInfo, finish_common, series_number
from dicom_node.outputs.headers import complete_header, has_geometry
from dicom_node.outputs.lineage import Lineage, PriorReport
from dicom_node.outputs.marks import is_image, located_findings, marker
from dicom_node.outputs.objects import OutputObject

log = logging.getLogger(__name__)

REL = hd.sr.RelationshipTypeValues
_Group = hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
STUDY_LEVEL_NOTE = "study level, not a location"


def _findings(analysis: StudyAnalysis) -> list[Finding]:
    """Findings to report; every one Undetermined when the study was not analysed (never a silent negative)."""
    if analysis.status == AnalysisStatus.ANALYSED and analysis.findings:
        return list(analysis.findings)
    labels = [f.label for f in analysis.findings] or list(analysis.model.labels) or list(
        codes.labels_for_task(analysis.model.task, analysis.model.name))
    return [Finding(label=label, probability=0.0, threshold=0.0, present=None) for label in labels]


def _algorithm(analysis: StudyAnalysis, finding: Finding | None) -> hd.sr.AlgorithmIdentification:
    model = analysis.model
    parameters = [f"task={model.task}", f"manifest_sha256={model.manifest_sha256}"]
    if finding is not None and finding.present is not None:
        parameters.insert(0, f"threshold={finding.threshold:g}")
    if model.synthetic_demo:
        parameters.append(wording.DEMO_MARK)
    return hd.sr.AlgorithmIdentification(
        name=model.display_name, version=model.version, parameters=parameters, manufacturer=MANUFACTURER)


def _comment(text: str, relationship: hd.sr.RelationshipTypeValues = REL.CONTAINS) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=codes.COMMENT, value=text[:1024], relationship_type=relationship)


def _group(analysis: StudyAnalysis, finding: Finding, image: Dataset, located: bool) -> _Group:
    """A displayable group: a region on `image`, the probability inferred from it, comments OHIF shows.

    With a probability: TID 1501 with the NUM INFERRED FROM the region (OHIF shows the comments and the
    NUM). Without one (not analysed, failed): TID 1410 with the region at the top of the group, which
    OHIF draws without text; the comments still say why.
    """
    model = analysis.model
    concept = codes.finding_concept(finding.label)
    instance = f" {finding.instance}" if finding.instance else ""  # one finding of several with this label
    tracking = hd.sr.TrackingIdentifier(
        uid=uids.tracking_uid(analysis.study_uid, model.name, model.version, finding.label + instance),
        identifier=f"{model.name} {finding.label}{instance}",
    )
    (x, y), radius = marker(finding if located else None, image)
    circle = np.array([(x, y), (x + radius, y)], dtype=np.float32)
    evaluations = [hd.sr.QualitativeEvaluation(name=concept.code, value=codes.presence(finding.present))]
    # the signs of the finding the model localised (SIH), each Present: the SEG has a segment for each
    evaluations += [hd.sr.QualitativeEvaluation(name=codes.finding_concept(codes.sign_label(sign)).code,
                                                value=codes.PRESENT) for sign in finding.signs]
    group: _Group
    if finding.present is not None:
        coordinates = hd.sr.CoordinatesForMeasurement(
            graphic_type=hd.sr.GraphicTypeValues.CIRCLE, graphic_data=circle,
            source_image=hd.sr.SourceImageForRegion.from_source_image(image))
        # the finding's own measurements (a lesion's diameter) first, the first of them inferred from the region
        measured = [hd.sr.Measurement(name=name, value=float(m.value), unit=unit,
                                      referenced_coordinates=[coordinates] if k == 0 else None)
                    for k, (m, (name, unit)) in enumerate((m, codes.measurement(m.concept))
                                                          for m in finding.measurements)]
        probability = hd.sr.Measurement(
            name=codes.PROBABILITY, value=wording.percent(finding.probability), unit=codes.UNIT_PERCENT,
            referenced_coordinates=None if measured else [coordinates])
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, finding_type=concept.code, algorithm_id=_algorithm(analysis, finding),
            measurements=[*measured, probability], qualitative_evaluations=evaluations)
    else:
        region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.CIRCLE, graphic_data=circle,
                                   source_image=hd.sr.SourceImageForRegion.from_source_image(image))
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, referenced_region=region, finding_type=concept.code,
            algorithm_id=_algorithm(analysis, finding), qualitative_evaluations=evaluations)
    container = group[0]
    container.ContinuityOfContent = "SEPARATE"
    notes = wording.viewer_lines(finding)
    if not located:
        notes.append(STUDY_LEVEL_NOTE if finding.present is not None else wording.summary(analysis))
    for note in notes:  # after the template's own rows; OHIF lists comments first wherever they are
        container.ContentSequence.append(_comment(note))
    return group


def _unplaced_group(analysis: StudyAnalysis, finding: Finding) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The study-level finding without a region, for a study whose instances hold no image."""
    model = analysis.model
    concept = codes.finding_concept(finding.label)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uids.tracking_uid(analysis.study_uid, model.name, model.version, finding.label),
            identifier=f"{model.name} {finding.label}"),
        finding_type=concept.code, algorithm_id=_algorithm(analysis, finding),
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=concept.code, value=codes.presence(finding.present))])
    group[0].ContinuityOfContent = "SEPARATE"
    for note in [*wording.viewer_lines(finding), wording.summary(analysis)]:
        group[0].ContentSequence.append(_comment(note))
    return group


def _qualitative_evaluations(analysis: StudyAnalysis, findings: Sequence[Finding]) -> hd.sr.ContainerContentItem:
    """TID 1500 "Qualitative Evaluations": the AI statement, the impression, and each ungrouped finding."""
    container = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS, relationship_type=REL.CONTAINS)
    container.ContinuityOfContent = "SEPARATE"
    items: list[hd.sr.ContentItem] = [
        _comment(wording.ai_statement(analysis)),
        hd.sr.TextContentItem(name=codes.IMPRESSION, value=wording.summary(analysis)[:1024],
                              relationship_type=REL.CONTAINS),
    ]
    for m in analysis.measurements if analysis.status == AnalysisStatus.ANALYSED else ():  # study level: counts
        name, unit = codes.measurement(m.concept)
        items.append(hd.sr.NumContentItem(name=name, value=float(m.value), unit=unit, relationship_type=REL.CONTAINS))
    for finding in findings:
        concept = codes.finding_concept(finding.label)
        item = hd.sr.CodeContentItem(name=concept.code, value=codes.presence(finding.present),
                                     relationship_type=REL.CONTAINS)
        if finding.present is not None:
            probability = hd.sr.NumContentItem(
                name=codes.PROBABILITY, value=wording.percent(finding.probability), unit=codes.UNIT_PERCENT,
                relationship_type=REL.HAS_PROPERTIES)
            item.ContentSequence = hd.sr.ContentSequence([probability])
        items.append(item)
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


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


def _evidence(analysis: StudyAnalysis, sources: Mapping[str, Dataset], primary: Dataset) -> list[Dataset]:
    """Every evaluated instance (from `sources`, headers suffice), plus the key images."""
    evidence = [primary, *(ds for uid, ds in sources.items() if uid != primary.SOPInstanceUID)]
    missing = [uid for uid in analysis.evaluated_sop_instance_uids if uid not in sources]
    series = list(dict.fromkeys(analysis.evaluated_series_uids))
    if not missing:
        return evidence
    if len(series) != 1:
        log.warning("evaluated instances without a header: left out of the evidence",
                    extra={"study_uid": analysis.study_uid, "missing": len(missing)})
        return evidence
    by_series = [ds for ds in sources.values() if ds.SeriesInstanceUID == series[0]]
    sop_class = (by_series or [primary])[0].SOPClassUID
    for sop_uid in missing:
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


def _anchor_image(analysis: StudyAnalysis, sources: Mapping[str, Dataset]) -> Dataset | None:
    """The image that carries the study-level group: the middle evaluated image, else any image we hold."""
    evaluated = [sources[uid] for uid in analysis.evaluated_sop_instance_uids if uid in sources]
    images = [ds for ds in evaluated if is_image(ds)] or [ds for ds in sources.values() if is_image(ds)]
    return images[len(images) // 2] if images else None


def _groups(analysis: StudyAnalysis, findings: list[Finding], sources: Mapping[str, Dataset]
            ) -> tuple[list[_Group], list[Finding], list[Dataset]]:
    """Displayable groups, the findings left for Qualitative Evaluations, and the images the groups mark."""
    groups: list[_Group] = []
    marked: list[Dataset] = []
    grouped: set[str] = set()
    # OHIF opens the report on the first group's image and draws only that image's groups: strongest first.
    for finding in sorted(located_findings(findings, sources), key=lambda f: -float(f.probability)):
        image = sources[finding.key_sop_instance_uid or ""]
        groups.append(_group(analysis, finding, image, located=True))
        marked.append(image)
        grouped.add(finding.label)
    if not groups and findings:
        anchor = _anchor_image(analysis, sources)
        study_level = next((f for f in findings if f.label == wording.SUMMARY_LABEL), findings[0])
        if anchor is not None:
            groups.append(_group(analysis, study_level, anchor, located=False))
            marked.append(anchor)
        else:  # no image to mark (TID 1500 needs one group): a viewer has nothing to show anyway
            groups.append(_unplaced_group(analysis, study_level))
        grouped.add(study_level.label)
    return groups, [f for f in findings if f.label not in grouped], marked


def _image_library(marked: list[Dataset]) -> list[Dataset] | None:
    """The marked images for the Image Library (TID 1600); one whose geometry is broken is left out (the
    library is optional, the region still references it)."""
    images = [complete_header(ds) for ds in {ds.SOPInstanceUID: ds for ds in marked}.values()]
    return [ds for ds in images if has_geometry(ds)] or None


def _predecessor(study_uid: str, prior: PriorReport) -> list[Dataset]:
    """Predecessor Documents Sequence (SR Document General): the report this one replaces."""
    sop = Dataset()
    sop.ReferencedSOPClassUID = prior.sop_class_uid
    sop.ReferencedSOPInstanceUID = prior.sop_instance_uid
    series = Dataset()
    series.SeriesInstanceUID = prior.series_uid
    series.ReferencedSOPSequence = [sop]
    study = Dataset()
    study.StudyInstanceUID = study_uid
    study.ReferencedSeriesSequence = [series]
    return [study]


def build_sr(analysis: StudyAnalysis, sources: Mapping[str, Dataset], generation: int,
             device: EquipmentInfo | None, lineage: Lineage) -> OutputObject:
    """The SR for one model's analysis of one study generation, with the UID `lineage` decided."""
    if not sources:
        raise ValueError("build_sr needs at least one source dataset (patient and study attributes)")
    model = analysis.model
    primary = complete_header(_primary(analysis, sources))
    study_uid = analysis.study_uid or str(primary.StudyInstanceUID)
    if str(primary.StudyInstanceUID) != study_uid:
        raise ValueError(f"source study {primary.StudyInstanceUID} is not the analysed study {study_uid}")
    findings = _findings(analysis)
    groups, ungrouped, marked = _groups(analysis, findings, sources)
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(analysis),
        procedure_reported=_procedure(primary),
        imaging_measurements=groups or None,
        title=codes.IMAGING_MEASUREMENT_REPORT,
        referenced_images=_image_library(marked),
    )
    report[0].ContentSequence.append(_qualitative_evaluations(analysis, ungrouped))
    series_uid = uids.series_uid(study_uid, model.name, model.version, uids.SR)
    sr = hd.sr.Comprehensive3DSR(
        evidence=_evidence(analysis, sources, primary),
        content=report[0],
        series_instance_uid=series_uid,
        series_number=series_number(model, uids.SR),
        sop_instance_uid=lineage.sop_instance_uid,
        instance_number=max(1, generation),
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        institution_name=device.institution_name if device else None,
    )
    if analysis.status != AnalysisStatus.ANALYSED and not analysis.evaluated_sop_instance_uids and not marked:
        # Nothing was evaluated: the sources only lent patient/study attributes, they are no evidence.
        del sr.CurrentRequestedProcedureEvidenceSequence
    if lineage.predecessor is not None:
        sr.PredecessorDocumentsSequence = _predecessor(study_uid, lineage.predecessor)
    finish_common(sr, model, device, wording.sr_series_description(analysis), primary)
    log.debug("built SR", extra={"study_uid": study_uid, "model": model.name, "generation": generation,
                                 "sop_instance_uid": lineage.sop_instance_uid, "groups": len(groups)})
    return OutputObject(kind=uids.SR, dataset=sr, sop_instance_uid=lineage.sop_instance_uid,
                        series_uid=str(series_uid), sop_class_uid=str(sr.SOPClassUID))
