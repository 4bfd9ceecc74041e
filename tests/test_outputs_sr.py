"""The TID 1500 SR: written, read back with pydicom, its content tree walked, and checked by the tools."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from outputs_helpers import (
    ICH_LABELS,
    ICH_MODEL,
    ich_analysis,
    make_series,
    not_analysed,
    roundtrip,
    sih_analysis,
    sources_of,
)
from pydicom.dataset import Dataset

from dicom_node.ml.analysis import AnalysisStatus, Finding, StudyAnalysis
from dicom_node.outputs import EquipmentInfo, build_outputs, codes, uids
from dicom_node.outputs.validate import dataset_problems, dciodvfy_errors, dsr2html, dsrdump

ICH_CODES = {
    "any": ("1386000", "SCT"),
    "subdural": ("35486000", "SCT"),
    "subarachnoid": ("21454007", "SCT"),
    "intraventricular": ("23276006", "SCT"),
    "intraparenchymal": ("449020009", "SCT"),
    "epidural": ("DN-0001", "99DCMNODE"),
}
PRESENT, ABSENT, UNDETERMINED = ("52101004", "SCT"), ("272519000", "SCT"), ("373068000", "SCT")


def walk(items: Iterator[Dataset] | list[Dataset]) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from walk(item.get("ContentSequence", []))


def code(seq_item: Dataset) -> tuple[str, str]:
    return (str(seq_item.CodeValue), str(seq_item.CodingSchemeDesignator))


def evaluations(ds: Dataset) -> dict[tuple[str, str], tuple[str, str]]:
    """Qualitative evaluations: finding concept code → Present/Absent/Undetermined code."""
    out = {}
    for item in walk(ds.ContentSequence):
        if item.ValueType == "CODE" and code(item.ConceptCodeSequence[0]) in (PRESENT, ABSENT, UNDETERMINED):
            out[code(item.ConceptNameCodeSequence[0])] = code(item.ConceptCodeSequence[0])
    return out


def items_named(ds: Dataset, value: str, scheme: str = "DCM") -> list[Dataset]:
    return [i for i in walk(ds.ContentSequence) if code(i.ConceptNameCodeSequence[0]) == (value, scheme)]


def texts(ds: Dataset) -> str:
    return "\n".join(str(i.TextValue) for i in walk(ds.ContentSequence) if i.ValueType == "TEXT")


def write_sr(analysis: StudyAnalysis, sources: dict[str, Dataset], tmp_path: Path, generation: int = 1,
             device: EquipmentInfo | None = None) -> tuple[Path, Dataset]:
    outputs = build_outputs(analysis, sources, generation, device)
    assert outputs[0].kind == "sr"
    path = tmp_path / "sr.dcm"
    return path, roundtrip(outputs[0].dataset, path)


def assert_valid(path: Path, *names: str) -> None:
    assert dciodvfy_errors(path) == []
    dump = dsrdump(path)
    assert dump.returncode == 0, dump.stderr
    html = dsr2html(path)
    assert html.returncode == 0 and "<html" in html.stdout.lower()
    for name in names:
        assert name in html.stdout


def test_ich_positive(tmp_path: Path) -> None:
    series = make_series("CT", n=4, blob=(40, 80))
    analysis = ich_analysis(series, positive=True, center=(40.0, 80.0))
    path, sr = write_sr(analysis, sources_of(series), tmp_path, generation=3,
                        device=EquipmentInfo(institution_name="Test Hospital"))
    assert_valid(path, "Subdural intracranial hemorrhage", "Present", "Absent")

    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.StudyInstanceUID == series[0].StudyInstanceUID and sr.PatientID == "SYN0001"
    assert sr.VerificationFlag == "UNVERIFIED" and sr.InstanceNumber == 3
    assert sr.InstitutionName == "Test Hospital"
    assert sr.SOPInstanceUID == build_outputs(analysis, sources_of(series), 1)[0].sop_instance_uid  # content, not job
    assert sr.SeriesDescription == "AI ICH: PRESENT subdural (unverified, synthetic-demo)"
    found = evaluations(sr)
    expected = {ICH_CODES[label]: PRESENT if label in ("any", "subdural") else ABSENT for label in ICH_LABELS}
    assert found == expected
    # the finding type of the group is its concept too
    assert [code(i.ConceptCodeSequence[0]) for i in items_named(sr, "121071")] == [ICH_CODES["subdural"]]
    probabilities = sorted(float(i.MeasuredValueSequence[0].NumericValue) for i in items_named(sr, "122157"))
    assert probabilities == [4.0] * 4 + [93.0] * 2  # percent, one decimal
    assert {code(i.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0])
            for i in items_named(sr, "122157")} == {("%", "UCUM")}
    text = texts(sr)
    assert "AI result" in text and "synthetic-demo" in text and "NOT FOR CLINICAL USE" in text
    assert "Present: Intracranial hemorrhage" in text and "Subdural hemorrhage (probability 93 %)" in text
    # the one located finding is the one displayable group; the others are qualitative evaluations
    groups = items_named(sr, "125007")
    assert len(groups) == 1 and groups[0].ContinuityOfContent == "SEPARATE"
    assert [i.TextValue for i in groups[0].ContentSequence if i.ValueType == "TEXT" and
            code(i.ConceptNameCodeSequence[0]) == ("121106", "DCM")] == [
        "Subdural hemorrhage", "PRESENT, unverified AI"]
    parameters = [i.TextValue for i in items_named(sr, "111002")]
    assert "threshold=0.5" in parameters and f"manifest_sha256={'a' * 64}" in parameters
    assert {i.TextValue for i in items_named(sr, "111001")} == {ICH_MODEL.display_name}
    assert {i.TextValue for i in items_named(sr, "111003")} == {ICH_MODEL.version}


def test_ich_positive_region_observer_procedure_equipment(tmp_path: Path) -> None:
    series = make_series("CT", n=4)
    analysis = ich_analysis(series, positive=True, center=(40.0, 80.0))
    _, sr = write_sr(analysis, sources_of(series), tmp_path)
    regions = [i for i in walk(sr.ContentSequence) if i.ValueType == "SCOORD"]
    assert len(regions) == 1 and {r.GraphicType for r in regions} == {"CIRCLE"}
    for region in regions:
        assert region.RelationshipType == "INFERRED FROM"  # the probability is inferred from the region
        cx, cy, px, py = (float(v) for v in region.GraphicData)
        assert (cx, cy) == (80.5, 40.5) and abs(px - cx) == pytest.approx(6.4) and py == cy
        ref = region.ContentSequence[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == series[1].SOPInstanceUID
    # observer is the device; procedure reported is the imaging procedure, not the algorithm
    device_uid = uids.device_uid("ich", "a" * 64)
    assert code(items_named(sr, "121005")[0].ConceptCodeSequence[0]) == ("121007", "DCM")
    assert items_named(sr, "121012")[0].UID == device_uid
    assert [code(i.ConceptCodeSequence[0]) for i in items_named(sr, "121058")] == [("24725-4", "LN")]
    # IHE AIR contributing equipment
    algorithm = [e for e in sr.ContributingEquipmentSequence
                 if code(e.PurposeOfReferenceCodeSequence[0]) == ("Newcode1", "99IHE")]
    assert len(algorithm) == 1
    assert algorithm[0].PurposeOfReferenceCodeSequence[0].CodeMeaning == "Processing Algorithm"
    assert algorithm[0].Manufacturer == "dicom-node"
    assert algorithm[0].ManufacturerModelName == ICH_MODEL.display_name
    assert algorithm[0].SoftwareVersions == ICH_MODEL.version
    assert algorithm[0].DeviceUID == device_uid
    assert {s.CodingSchemeDesignator for s in sr.CodingSchemeIdentificationSequence} >= {"99DCMNODE", "99IHE"}
    # every evaluated instance is referenced as evidence
    evidence = {ref.ReferencedSOPInstanceUID
                for study in sr.CurrentRequestedProcedureEvidenceSequence
                for s in study.ReferencedSeriesSequence for ref in s.ReferencedSOPSequence}
    assert evidence == {ds.SOPInstanceUID for ds in series}


def test_evidence_covers_evaluated_instances_without_datasets(tmp_path: Path) -> None:
    series = make_series("CT", n=4)
    analysis = ich_analysis(series, positive=True)
    path, sr = write_sr(analysis, {series[1].SOPInstanceUID: series[1]}, tmp_path)
    assert dciodvfy_errors(path) == []
    refs = [ref for study in sr.CurrentRequestedProcedureEvidenceSequence
            for s in study.ReferencedSeriesSequence for ref in s.ReferencedSOPSequence]
    assert {r.ReferencedSOPInstanceUID for r in refs} == {ds.SOPInstanceUID for ds in series}
    assert {r.ReferencedSOPClassUID for r in refs} == {series[0].SOPClassUID}


def test_ich_negative(tmp_path: Path) -> None:
    series = make_series("CT", n=4)
    analysis = ich_analysis(series, positive=False)
    outputs = build_outputs(analysis, sources_of(series), 1)
    assert [o.kind for o in outputs] == ["sr"]
    path = tmp_path / "sr.dcm"
    sr = roundtrip(outputs[0].dataset, path)
    assert_valid(path, "Intracranial hemorrhage", "Absent")
    assert evaluations(sr) == {c: ABSENT for c in ICH_CODES.values()}
    assert "Absent: Intracranial hemorrhage" in texts(sr)
    # one displayable group: the study-level finding anchored left of centre on the middle evaluated image
    regions = [i for i in walk(sr.ContentSequence) if i.ValueType == "SCOORD"]
    assert len(regions) == 1
    cx, cy, _, _ = (float(v) for v in regions[0].GraphicData)
    assert cx < 0.25 * 128 and cy == 64.0
    assert regions[0].ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == series[2].SOPInstanceUID
    assert "ABSENT, unverified AI" in texts(sr) and "study level, not a location" in texts(sr)
    assert sr.SeriesDescription == "AI ICH: ABSENT (unverified, synthetic-demo)"


def test_sih_positive(tmp_path: Path) -> None:
    series = make_series("MR", n=4, blob=(64, 64))
    analysis = sih_analysis(series)
    path, sr = write_sr(analysis, sources_of(series), tmp_path)
    assert_valid(path, "Spontaneous intracranial hypotension", "Present")
    assert evaluations(sr) == {("DN-0002", "99DCMNODE"): PRESENT}
    assert [code(i.ConceptCodeSequence[0]) for i in items_named(sr, "121058")] == [("24590-2", "LN")]
    assert [float(i.MeasuredValueSequence[0].NumericValue) for i in items_named(sr, "122157")] == [81.0]
    assert sr.SeriesDescription.startswith("AI SIH")


def test_sih_positive_names_the_signs_it_marked(tmp_path: Path) -> None:
    """A localiser that tells the signs apart: the SR states each sign it marked as Present in the
    finding's group and names the one under the mark; the SEG has the finding's segment, then one per sign."""
    from dicom_node.ml.annotations import seg_masks
    from dicom_node.outputs.lineage import content_digest
    from dicom_node.outputs.readback import sr_findings

    series = make_series("MR", n=4, blob=(64, 64))
    plain = sih_analysis(series)
    key = series[1].SOPInstanceUID
    dura, sag = np.zeros((128, 128), bool), np.zeros((128, 128), bool)
    dura[20:24, 30:90], sag[60:70, 60:68] = True, True
    finding = replace(plain.findings[0], signs=("pachymeningeal", "sag"), detail="brain sag", region_center=(64.0, 64.0))
    analysis = replace(plain, findings=[finding],
                       masks={"sih": {key: dura | sag}, "sih_pachymeningeal": {key: dura}, "sih_sag": {key: sag}})
    path, sr = write_sr(analysis, sources_of(series), tmp_path)
    assert_valid(path, "Spontaneous intracranial hypotension", "Pachymeningeal enhancement", "Brain sag",
                 "Mark: brain sag")
    assert evaluations(sr) == {("DN-0002", "99DCMNODE"): PRESENT, ("DN-0012", "99DCMNODE"): PRESENT,
                               ("DN-0014", "99DCMNODE"): PRESENT}
    assert "signs marked: pachymeningeal enhancement, brain sag" in texts(sr)
    stated = sr_findings(sr)[0]
    assert stated.presence == "Present" and stated.signs == ("Pachymeningeal enhancement", "Brain sag")
    assert stated.notes == ("Spontaneous intracranial hypotension", "Mark: brain sag", "PRESENT, unverified AI")
    seg = next(o for o in build_outputs(analysis, sources_of(series), 1) if o.kind == uids.SEG)
    seg_path = tmp_path / "seg.dcm"
    roundtrip(seg.dataset, seg_path)
    assert dciodvfy_errors(seg_path) == []
    assert [x.SegmentLabel for x in seg.dataset.SegmentSequence] == [
        "Spontaneous intracranial hypotension", "Pachymeningeal enhancement", "Brain sag"]
    assert seg.dataset.SeriesDescription == "AI SIH masks: sih (unverified, synthetic-demo)"  # the finding, not its signs
    back = seg_masks(seg_path)[1]
    assert np.array_equal(back["sih_sag"][key], sag) and np.array_equal(back["sih"][key], dura | sag)
    # naming another sign changes what the report says: a new SR that supersedes, not a silent repeat
    other = replace(analysis, findings=[replace(finding, detail="pachymeningeal enhancement")])
    assert content_digest(other) != content_digest(analysis)
    assert content_digest(replace(analysis, findings=[replace(finding, signs=("sag",))])) != content_digest(analysis)
    # a sign's mask without its finding Present goes nowhere
    absent = replace(analysis, findings=[replace(finding, present=False)])
    assert not [o for o in build_outputs(absent, sources_of(series), 1) if o.kind == uids.SEG]


@pytest.mark.parametrize("status, prefix", [(AnalysisStatus.NOT_ANALYSED, "Not analysed"),
                                            (AnalysisStatus.FAILED, "Analysis failed")])
def test_not_analysed_is_never_a_silent_negative(tmp_path: Path, status: AnalysisStatus, prefix: str) -> None:
    series = make_series("CT", n=2)
    analysis = replace(not_analysed(series), status=status)
    outputs = build_outputs(analysis, {series[0].SOPInstanceUID: series[0]}, 1)
    assert [o.kind for o in outputs] == ["sr"]
    path = tmp_path / "sr.dcm"
    sr = roundtrip(outputs[0].dataset, path)
    assert_valid(path, "Undetermined", prefix)
    assert evaluations(sr) == {c: UNDETERMINED for c in ICH_CODES.values()}
    assert items_named(sr, "122157") == []  # no probability where nothing was measured
    assert f"{prefix}: no non-contrast axial head CT series" in texts(sr)
    # the anchor image is the only evidence (nothing was evaluated)
    evidence = [ref.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for s in study.ReferencedSeriesSequence for ref in s.ReferencedSOPSequence]
    assert evidence == [series[0].SOPInstanceUID]
    assert len([i for i in walk(sr.ContentSequence) if i.ValueType == "SCOORD"]) == 1


def test_failed_with_findings_reports_them_undetermined(tmp_path: Path) -> None:
    series = make_series("CT", n=2)
    analysis = ich_analysis(series, positive=True)
    analysis.status, analysis.reason = AnalysisStatus.FAILED, "pixel data could not be decoded"
    outputs = build_outputs(analysis, sources_of(series), 1)
    assert [o.kind for o in outputs] == ["sr"]
    sr = roundtrip(outputs[0].dataset, tmp_path / "sr.dcm")
    assert set(evaluations(sr).values()) == {UNDETERMINED}
    assert "Analysis failed: pixel data could not be decoded" in texts(sr)


def test_clinical_model_is_not_marked_demo_and_source_procedure_is_used(tmp_path: Path) -> None:
    series = make_series("CT", n=2)
    procedure = Dataset()
    procedure.CodeValue, procedure.CodingSchemeDesignator, procedure.CodeMeaning = "CTHEADWO", "99HOSP", "CT head"
    for ds in series:
        ds.ProcedureCodeSequence = [procedure]
    analysis = ich_analysis(series, positive=False)
    analysis.model = replace(ICH_MODEL, version="2.0.0", synthetic_demo=False)
    path, sr = write_sr(analysis, sources_of(series), tmp_path)
    assert dciodvfy_errors(path) == []
    assert "synthetic-demo" not in sr.SeriesDescription and "synthetic-demo" not in texts(sr)
    assert "AI result" in texts(sr)
    assert [code(i.ConceptCodeSequence[0]) for i in items_named(sr, "121058")] == [("CTHEADWO", "99HOSP")]


def test_numpy_values_from_pipelines_are_accepted(tmp_path: Path) -> None:
    series = make_series("CT", n=2)
    analysis = ich_analysis(series, positive=True)
    analysis.findings = [replace(f, present=np.bool_(f.present), probability=np.float32(f.probability),
                                 threshold=np.float64(f.threshold)) for f in analysis.findings]
    path, sr = write_sr(analysis, sources_of(series), tmp_path)
    assert dciodvfy_errors(path) == []
    assert set(evaluations(sr).values()) == {PRESENT, ABSENT}
    assert "Absent: Epidural hemorrhage" in texts(sr)


def test_bad_input_is_refused() -> None:
    series = make_series("CT", n=2)
    other = make_series("CT", n=1)
    analysis = ich_analysis(series, positive=False)
    with pytest.raises(ValueError):
        build_outputs(analysis, {}, 1)
    with pytest.raises(ValueError):
        build_outputs(analysis, sources_of(other), 1)
    bad = replace(analysis, findings=[Finding(label="tumour", probability=0.9, threshold=0.5, present=True)])
    with pytest.raises(ValueError, match="tumour"):
        build_outputs(bad, sources_of(series), 1)


def test_codes_match_the_design_table() -> None:
    for label, expected in ICH_CODES.items():
        concept = codes.finding_concept(label).code
        assert (concept.value, concept.scheme_designator) == expected
    assert codes.presence(True).value == "52101004" and codes.presence(False).value == "272519000"
    assert codes.presence(None).value == "373068000"
    assert (codes.PROBABILITY.value, codes.PROBABILITY.scheme_designator) == ("122157", "DCM")
    assert codes.labels_for_task("sih-mr") == ("sih",)
    with pytest.raises(ValueError):
        codes.labels_for_task("cmb-swi", "cmb")


def test_written_file_has_file_meta(tmp_path: Path) -> None:
    series = make_series("CT", n=2)
    out = build_outputs(ich_analysis(series, positive=False), sources_of(series), 1)[0]
    path = tmp_path / "sr.dcm"
    pydicom.dcmwrite(path, out.dataset, enforce_file_format=True)
    back = pydicom.dcmread(path)
    assert back.file_meta.MediaStorageSOPClassUID == out.sop_class_uid
    assert back.file_meta.MediaStorageSOPInstanceUID == out.sop_instance_uid


def test_outputs_from_a_generated_head_ct_study_validate(tmp_path: Path) -> None:
    from dicom_node.synth import ct_study
    study = ct_study.write_ct_head_study(tmp_path / "in", seed=3, findings=("subdural",), n_slices=4, size=256,
                                         distractors=False)
    series = [pydicom.dcmread(f) for f in study.files]
    analysis = ich_analysis(series, positive=True, center=(100.0, 60.0))
    outputs = build_outputs(analysis, sources_of(series), 1)
    assert [o.kind for o in outputs] == ["sr", "overlay"]
    for out in outputs:
        assert dataset_problems(out.dataset) == []
    assert outputs[0].dataset.PatientID == series[0].PatientID
