"""What the reader sees is consistent: final verdicts, evidence, superseding, series descriptions, marks,
and outputs from real-world headers (missing Type 2 attributes, de-identified, odd character sets)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from outputs_helpers import (
    ICH_MODEL,
    ich_analysis,
    make_series,
    not_analysed,
    roundtrip,
    sih_analysis,
    sources_of,
    sr_texts,
)
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from dicom_node.ml.analysis import AnalysisStatus, Finding
from dicom_node.ml.verdicts import reconcile
from dicom_node.outputs import build_outputs, wording
from dicom_node.outputs.lineage import PriorReport, content_digest
from dicom_node.outputs.marks import marker
from dicom_node.outputs.readback import sr_findings
from dicom_node.outputs.validate import dciodvfy_errors, dsr2html


def _epidural_only(series: list[Dataset]) -> object:
    """A model output that contradicts itself: "any" below threshold, epidural above it."""
    analysis = ich_analysis(series, positive=False)
    key = series[2]
    analysis.findings = [
        replace(f, probability=0.97, present=True, critical=True, key_sop_instance_uid=key.SOPInstanceUID,
                key_series_uid=key.SeriesInstanceUID, region_center=(50.0, 30.0), region_radius=6.0)
        if f.label == "epidural" else replace(f, probability=0.3 if f.label == "any" else f.probability)
        for f in analysis.findings]
    return analysis


def test_a_present_subtype_makes_the_study_level_finding_present(tmp_path: Path) -> None:
    series = make_series("CT", n=4)
    raw = _epidural_only(series)
    final = reconcile(raw)  # type: ignore[arg-type]
    by_label = {f.label: f for f in final.findings}
    assert by_label["any"].present and by_label["any"].probability == pytest.approx(0.97)
    assert by_label["any"].key_sop_instance_uid == series[2].SOPInstanceUID
    assert final.critical and "any present because epidural is present" in final.reason
    assert reconcile(final) == final  # idempotent
    # the SR (built from the raw output) says the same everywhere
    out = build_outputs(raw, sources_of(series), 1)  # type: ignore[arg-type]
    sr = roundtrip(out[0].dataset, tmp_path / "sr.dcm")
    reported = {f.finding: f for f in sr_findings(sr)}
    assert reported["Intracranial hemorrhage"].presence == "Present"
    assert reported["Epidural intracranial hemorrhage"].presence == "Present"
    assert sr.SeriesDescription == "AI ICH: PRESENT epidural (unverified, synthetic-demo)"
    assert [o.label for o in out[1:]] == ["epidural"]
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []


def test_no_present_subtype_changes_nothing() -> None:
    series = make_series("CT", n=3)
    negative = ich_analysis(series, positive=False)
    assert reconcile(negative) is negative
    assert reconcile(not_analysed(series)) is not None


def test_evidence_lists_every_evaluated_instance_across_series(tmp_path: Path) -> None:
    axial = make_series("MR", n=2, blob=(64, 64))
    coronal = make_series("MR", n=2)
    for ds in coronal:  # same study, another series (the two coronal images of SIH)
        ds.StudyInstanceUID = axial[0].StudyInstanceUID
    analysis = sih_analysis(axial)
    analysis.evaluated_series_uids = [axial[0].SeriesInstanceUID, coronal[0].SeriesInstanceUID]
    analysis.evaluated_sop_instance_uids = [axial[1].SOPInstanceUID, coronal[0].SOPInstanceUID,
                                            coronal[1].SOPInstanceUID]
    sources = {axial[1].SOPInstanceUID: axial[1]}
    for ds in coronal:  # headers only, as the worker reads them
        sources[ds.SOPInstanceUID] = pydicom.dcmread(_write(ds, tmp_path), stop_before_pixels=True)
    sr = roundtrip(build_outputs(analysis, sources, 1)[0].dataset, tmp_path / "sr.dcm")
    evidence = {(s.SeriesInstanceUID, ref.ReferencedSOPInstanceUID)
                for study in sr.CurrentRequestedProcedureEvidenceSequence
                for s in study.ReferencedSeriesSequence for ref in s.ReferencedSOPSequence}
    assert evidence == {(axial[0].SeriesInstanceUID, axial[1].SOPInstanceUID),
                        (coronal[0].SeriesInstanceUID, coronal[0].SOPInstanceUID),
                        (coronal[0].SeriesInstanceUID, coronal[1].SOPInstanceUID)}
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []


def _write(ds: Dataset, folder: Path) -> Path:
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _prior(out: object, analysis: object) -> PriorReport:
    return PriorReport(out.sop_instance_uid, out.sop_class_uid, out.series_uid,  # type: ignore[attr-defined]
                       content_digest(reconcile(analysis)))  # type: ignore[arg-type]


def test_a_changed_report_supersedes_and_an_identical_one_does_not(tmp_path: Path) -> None:
    series = make_series("CT", n=4, blob=(40, 80))
    first = ich_analysis(series, positive=True)
    a = build_outputs(first, sources_of(series), 1)[0]
    assert "PredecessorDocumentsSequence" not in a.dataset
    history = [_prior(a, first)]
    # identical content, later generation: same UID, nothing superseded
    same = build_outputs(first, sources_of(series), 2, history=history)[0]
    assert same.sop_instance_uid == a.sop_instance_uid and "PredecessorDocumentsSequence" not in same.dataset
    # changed content (e.g. `retry --jobs` after a fix): new UID in the same series, pointing at the old one
    second = ich_analysis(series, positive=False)
    b = build_outputs(second, sources_of(series), 2, history=history)
    sr = roundtrip(b[0].dataset, tmp_path / "b.dcm")
    assert b[0].sop_instance_uid != a.sop_instance_uid and b[0].series_uid == a.series_uid
    predecessor = sr.PredecessorDocumentsSequence[0]
    assert predecessor.StudyInstanceUID == sr.StudyInstanceUID
    ref = predecessor.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == a.series_uid
    assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == a.sop_instance_uid
    assert dciodvfy_errors(tmp_path / "b.dcm") == []
    # back to the first content: a third UID (the PACS must show the newest as current), superseding b
    history.append(_prior(b[0], second))
    c = build_outputs(first, sources_of(series), 3, history=history)[0]
    assert c.sop_instance_uid not in (a.sop_instance_uid, b[0].sop_instance_uid)
    chained = c.dataset.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert chained.ReferencedSOPInstanceUID == b[0].sop_instance_uid
    # a repeat of b while b is the latest keeps b's UID and b's predecessor
    repeat = build_outputs(second, sources_of(series), 2, history=history)[0]
    assert repeat.sop_instance_uid == b[0].sop_instance_uid
    assert (repeat.dataset.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
            .ReferencedSOPInstanceUID == a.sop_instance_uid)


def test_probability_noise_below_what_is_shown_is_not_a_new_report() -> None:
    series = make_series("CT", n=3)
    analysis = ich_analysis(series, positive=True)
    noisy = replace(analysis, findings=[replace(f, probability=f.probability + 1e-7) for f in analysis.findings])
    assert content_digest(analysis) == content_digest(noisy)


@pytest.mark.parametrize("present, expected", [
    ((), "AI ICH: ABSENT (unverified, synthetic-demo)"),
    (("any",), "AI ICH: PRESENT (unverified, synthetic-demo)"),
    (("any", "subdural"), "AI ICH: PRESENT subdural (unverified, synthetic-demo)"),
    (("any", "subdural", "subarachnoid"), "AI ICH: PRESENT SAH, SDH (unverified, synthetic-demo)"),
    (("any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"),
     "AI ICH: PRESENT EDH,IPH,IVH,SAH,SDH (unverified, synthetic-demo)"),
])
def test_series_description_carries_the_verdict(present: tuple[str, ...], expected: str) -> None:
    series = make_series("CT", n=2)
    analysis = ich_analysis(series, positive=False)
    analysis.findings = [replace(f, present=f.label in present) for f in analysis.findings]
    text = wording.sr_series_description(analysis)
    assert len(text) <= 64
    assert text == expected  # names, or abbreviations when the names do not fit
    clinical = replace(analysis, model=replace(ICH_MODEL, synthetic_demo=False))
    assert "synthetic-demo" not in wording.sr_series_description(clinical)


def test_series_description_when_not_analysed_or_failed() -> None:
    series = make_series("CT", n=2)
    assert wording.sr_series_description(not_analysed(series)) == "AI ICH: NOT ANALYSED (synthetic-demo)"
    failed = replace(not_analysed(series), status=AnalysisStatus.FAILED)
    assert wording.sr_series_description(failed) == "AI ICH: ANALYSIS FAILED (synthetic-demo)"


@pytest.mark.parametrize("center, radius", [((60.0, 127.0), 160.0), ((0.0, 0.0), 40.0), ((64.0, 64.0), None)])
def test_marks_are_small_and_inside_the_image(center: tuple[float, float], radius: float | None) -> None:
    image = make_series("CT", n=1)[0]
    finding = Finding("subdural", 0.9, 0.5, True, region_center=center, region_radius=radius)
    (x, y), r = marker(finding, image)
    assert r <= 0.05 * 128
    assert r <= x <= 128 - r and r <= y <= 128 - r


def test_dsr2html_labels_the_probability(tmp_path: Path) -> None:
    series = make_series("CT", n=4, blob=(40, 80))
    path = tmp_path / "sr.dcm"
    roundtrip(build_outputs(ich_analysis(series, positive=True), sources_of(series), 1)[0].dataset, path)
    text = re.sub(r"<[^>]+>", " ", dsr2html(path).stdout)
    text = re.sub(r"\s+", " ", text)
    assert "Probability: 93.0 %" in text  # in the located finding's group
    assert "Probability = 4.0 %" in text  # with each qualitative evaluation
    assert not re.search(r"Probability\S* [=:]? ?\d+\.\d{2,}", text)  # no bare many-digit numbers


def test_a_long_ensemble_name_is_shortened_whole_in_64_character_attributes(tmp_path: Path) -> None:
    # an ensemble's display name lists its members (> 64 characters): LO attributes (the SEG's algorithm
    # name, Manufacturer's Model Name) carry the name without the list, never cut mid-word; the SR's text
    # items keep the whole name
    full = ("dicom-node ICH ensemble (synthetic demo) [ich-all 0.2.0-synthetic-demo, ich-subdural "
            "0.2.0-synthetic-demo, ich 0.1.0-synthetic-demo]")
    series = make_series("CT", n=4, blob=(40, 80))
    analysis = replace(ich_analysis(series, positive=True), model=replace(ICH_MODEL, display_name=full))
    mask = np.zeros((int(series[1].Rows), int(series[1].Columns)), dtype=bool)
    mask[30:50, 70:90] = True
    analysis = replace(analysis, masks={"subdural": {series[1].SOPInstanceUID: mask}})
    outputs = build_outputs(analysis, sources_of(series), 1)
    seg = next(o.dataset for o in outputs if o.dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4")
    sr = outputs[0].dataset
    short = "dicom-node ICH ensemble (synthetic demo)"
    assert seg.SegmentSequence[0].SegmentAlgorithmName == short
    assert seg.ManufacturerModelName == short and sr.ManufacturerModelName == short
    assert seg.ContributingEquipmentSequence[-1].ManufacturerModelName == short
    path = tmp_path / "seg.dcm"
    seg.save_as(path)
    assert dciodvfy_errors(path) == []
    assert any(full in t for t in sr_texts(sr))
    assert wording.model_name_lo("x" * 70) == "x" * 61 + "..."


def test_a_small_probability_is_never_written_as_zero() -> None:
    # OHIF prints a NUM of 0 as an empty value ("Probability:  %"); a probability under 0.05 % keeps two
    # significant digits instead of rounding to 0.0, and under 0.01 % (0 and 8.8e-18 included) it is the
    # floor 0.01, never a figure like "8.8e-16 %"
    probs = (0.0, 8.8e-18, 2e-6, 0.00012, 0.0004, 0.0006, 0.5)
    assert [wording.percent(p) for p in probs] == [0.01, 0.01, 0.01, 0.012, 0.04, 0.1, 50.0]
    assert [wording.percent_text(p) for p in probs] == ["< 0.01", "< 0.01", "< 0.01", "0.012", "0.04", "0.1", "50"]
    series = make_series("CT", n=4, blob=(40, 80))
    analysis = ich_analysis(series, positive=False)
    analysis = replace(analysis, findings=[replace(f, probability=2e-6) for f in analysis.findings])
    stated = sr_findings(build_outputs(analysis, sources_of(series), 1)[0].dataset)
    assert stated and all(f.probability is not None and abs(f.probability - 1e-4) < 1e-12 for f in stated)  # 0.01 %


def _real_world(series: list[Dataset], kind: str) -> None:
    for ds in series:
        if kind == "no-birth-date":  # the old GE HiSpeed head CT in shared/data
            del ds.PatientBirthDate, ds.PatientSex
            del ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber
        elif kind == "de-identified":  # CQ500: PatientIdentityRemoved YES, no method
            ds.PatientIdentityRemoved = "YES"
        elif kind == "empty-charset":
            ds.SpecificCharacterSet = ""
        elif kind == "unknown-charset":
            ds.SpecificCharacterSet = "ISO_IR 999"
        elif kind == "garbage-dates":  # fuzzed and real: unparseable DA/TM, a sex outside M/F/O
            ds.PatientBirthDate, ds.StudyDate, ds.StudyTime, ds.PatientSex = "á024", "not-a-date", "99:99", "X"
            for tag, raw in ((0x00200037, b"a\\b"), (0x00280030, b"0 ")):  # as read from a broken file
                ds[tag] = RawDataElement(Tag(tag), "DS", len(raw), raw, 0, False, True)
        elif kind == "code-without-meaning":  # a real Siemens header: ProcedureCodeSequence item, no meaning
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator = "0FINGN ROUT STA1", "medneo"
            ds.ProcedureCodeSequence = [item]


@pytest.mark.parametrize("kind", ["no-birth-date", "de-identified", "empty-charset", "unknown-charset",
                                  "code-without-meaning", "garbage-dates"])
@pytest.mark.parametrize("positive", [True, False])
def test_outputs_from_real_world_headers_validate(tmp_path: Path, kind: str, positive: bool) -> None:
    series = make_series("CT", n=4, blob=(40, 80))
    _real_world(series, kind)
    outputs = build_outputs(ich_analysis(series, positive=positive), sources_of(series), 1)
    assert len(outputs) == (2 if positive else 1)
    for i, out in enumerate(outputs):
        path = tmp_path / f"{i}.dcm"
        back = roundtrip(out.dataset, path)
        assert dciodvfy_errors(path) == [], kind
        if kind == "de-identified":
            assert back.PatientIdentityRemoved == "YES" and back.DeidentificationMethod
        if kind == "no-birth-date":
            assert back.PatientBirthDate == "" and back.PatientSex == ""
    # the sources were not changed by the builders
    if kind == "no-birth-date":
        assert all("PatientBirthDate" not in ds for ds in series)
    if kind == "empty-charset":
        assert all(ds.SpecificCharacterSet == "" for ds in series)


def test_a_study_without_any_image_still_gets_a_valid_report(tmp_path: Path) -> None:
    """E.g. only a dose report or a header with Rows 0 reached the node: no region can be drawn."""
    series = make_series("CT", n=1)
    header = Dataset(dict(series[0].items()))
    del header.PixelData
    header.Rows = 0
    analysis = replace(not_analysed(series), status=AnalysisStatus.FAILED, reason="no image")
    out = build_outputs(analysis, {header.SOPInstanceUID: header}, 1)
    path = tmp_path / "sr.dcm"
    sr = roundtrip(out[0].dataset, path)
    assert dciodvfy_errors(path) == []
    assert not [i for i in sr.ContentSequence if i.ValueType == "SCOORD"]
    assert {f.presence for f in sr_findings(sr)} == {"Undetermined"}
