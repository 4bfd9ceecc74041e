"""The microbleed report: one displayable group per bleed (distinct tracking UIDs, the diameter inferred from
its region, 'Microbleed 2 (deep)'), counts and the small-vessel-disease class in Qualitative Evaluations,
one overlay, a SEG, the anchored study-level group when there is no bleed, 'not analysed' with every label
Undetermined; all valid for dciodvfy / dsrdump, and a changed count gives a new report UID."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
from outputs_helpers import make_series, sources_of

from dicom_node.ml.analysis import AnalysisStatus, Finding, KeyImage, Measurement, ModelInfo, StudyAnalysis
from dicom_node.outputs import build_outputs
from dicom_node.outputs.lineage import PriorReport, content_digest
from dicom_node.outputs.readback import sr_counts, sr_findings
from dicom_node.outputs.validate import dciodvfy_errors, sr_problems

CMB = ModelInfo(name="cmb", version="0.1.0-synthetic-demo", task="cmb-swi",
                display_name="dicom-node microbleed detector", manifest_sha256="c" * 64, synthetic_demo=True,
                labels=("microbleeds", "asvd", "caa", "cadasil"))


def _analysis(series: list[pydicom.Dataset], bleeds: int) -> StudyAnalysis:
    findings = [Finding("microbleeds", 0.97 if bleeds else 0.2, 0.5, bool(bleeds))]
    masks: dict[str, np.ndarray] = {}
    for k in range(1, bleeds + 1):
        image = series[k]
        center = (30.0 + 20 * k, 40.0 + 15 * k)
        findings.append(Finding("microbleed", 0.95 - 0.1 * k, 0.5, True, key_sop_instance_uid=image.SOPInstanceUID,
                                key_series_uid=image.SeriesInstanceUID, region_center=center, region_radius=3.0,
                                instance=k, detail="lobar" if k == 1 else "deep",
                                measurements=(Measurement("diameter", 4.5 + k, "mm"),)))
        m = np.zeros((int(image.Rows), int(image.Columns)), bool)
        m[int(center[0]) - 2: int(center[0]) + 3, int(center[1]) - 2: int(center[1]) + 3] = True
        masks[str(image.SOPInstanceUID)] = m
    findings += [Finding("asvd", 0.1, 0.8, False), Finding("caa", 0.8 if bleeds else 0.05, 0.1, bool(bleeds)),
                 Finding("cadasil", 0.05, 0.8, False)]
    key = [KeyImage(series[1].SOPInstanceUID, ["microbleed"], np.zeros((128, 128), np.float32))] if bleeds else []
    lobar = 1 if bleeds else 0
    return StudyAnalysis(
        model=CMB, status=AnalysisStatus.ANALYSED, reason="test", study_uid=series[0].StudyInstanceUID,
        evaluated_series_uids=[series[0].SeriesInstanceUID],
        evaluated_sop_instance_uids=[ds.SOPInstanceUID for ds in series], findings=findings, key_images=key,
        masks={"microbleed": masks} if masks else {},
        measurements=[Measurement("microbleed_count", bleeds, "{count}"),
                      Measurement("lobar_microbleed_count", lobar, "{count}"),
                      Measurement("deep_microbleed_count", bleeds - lobar, "{count}")])


def _groups(sr: pydicom.Dataset) -> list[pydicom.Dataset]:
    [measurements] = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"]
    return list(measurements.ContentSequence)


def _children(group: pydicom.Dataset, value_type: str) -> list[pydicom.Dataset]:
    return [c for c in group.ContentSequence if c.ValueType == value_type]


def test_one_group_per_bleed_with_its_diameter_on_its_region(tmp_path: Path) -> None:
    series = make_series("MR", n=4)
    outputs = build_outputs(_analysis(series, bleeds=2), sources_of(series), 1)
    assert [o.kind for o in outputs] == ["sr", "overlay", "seg"]  # one overlay for a label reported per bleed
    for o in outputs:
        path = tmp_path / f"{o.kind}.dcm"
        o.dataset.save_as(path, enforce_file_format=True)
        assert (sr_problems(path) if o.kind == "sr" else dciodvfy_errors(path)) == [], o.kind
    sr = outputs[0].dataset
    groups = _groups(sr)
    assert len(groups) == 2
    tracking = [next(c.UID for c in _children(g, "UIDREF")) for g in groups]
    assert len(set(tracking)) == 2
    assert [[c.TextValue for c in _children(g, "TEXT") if c.ConceptNameCodeSequence[0].CodeValue == "121106"]
            for g in groups] == [["Microbleed 1 (lobar)", "PRESENT, unverified AI"],
                                 ["Microbleed 2 (deep)", "PRESENT, unverified AI"]]
    for k, g in enumerate(groups, start=1):
        diameter, probability = _children(g, "NUM")
        assert diameter.ConceptNameCodeSequence[0].CodeValue == "81827009"
        assert float(diameter.MeasuredValueSequence[0].NumericValue) == 4.5 + k
        assert diameter.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "mm"
        assert diameter.ContentSequence[0].ValueType == "SCOORD"  # INFERRED FROM the region OHIF draws
        assert diameter.ContentSequence[0].RelationshipType == "INFERRED FROM"
        assert "ContentSequence" not in probability
    assert sr_counts(sr) == {"Number of cerebral microbleeds": 2.0, "Number of lobar cerebral microbleeds": 1.0,
                             "Number of deep cerebral microbleeds": 1.0}
    reported = {(f.finding, f.presence) for f in sr_findings(sr)}
    assert ("Cerebral amyloid angiopathy", "Present") in reported and ("CADASIL", "Absent") in reported
    assert "PRESENT microbleeds, caa" in sr.SeriesDescription
    impression = next(i.TextValue for c in sr.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "C0034375"
                      for i in c.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121073")
    assert "Number of cerebral microbleeds: 2" in impression and impression.count("Microbleed") == 0
    seg = outputs[2].dataset
    assert [str(s.SegmentLabel) for s in seg.SegmentSequence] == ["Microbleed"]
    assert int(seg.NumberOfFrames) == 2


def test_no_bleed_gets_the_study_level_group_and_not_analysed_names_every_label(tmp_path: Path) -> None:
    series = make_series("MR", n=4)
    outputs = build_outputs(_analysis(series, bleeds=0), sources_of(series), 1)
    assert [o.kind for o in outputs] == ["sr"]
    [group] = _groups(outputs[0].dataset)
    texts = [c.TextValue for c in _children(group, "TEXT") if c.ConceptNameCodeSequence[0].CodeValue == "121106"]
    assert texts == ["Cerebral microbleeds", "ABSENT, unverified AI", "study level, not a location"]
    not_analysed = StudyAnalysis(model=CMB, status=AnalysisStatus.NOT_ANALYSED, reason="no SWI series",
                                 study_uid=series[0].StudyInstanceUID)
    sr = build_outputs(not_analysed, sources_of(series), 1)[0].dataset
    path = tmp_path / "na.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert sr_problems(path) == []
    assert {f.presence for f in sr_findings(sr)} == {"Undetermined"}
    assert len(sr_findings(sr)) == 4 and sr_counts(sr) == {}


def test_the_count_is_part_of_the_report_content() -> None:
    series = make_series("MR", n=4)
    a = _analysis(series, bleeds=2)
    b = replace(a, measurements=[replace(m, value=m.value + 1) for m in a.measurements])
    c = replace(a, findings=[replace(f, measurements=(Measurement("diameter", 9.0, "mm"),)) if f.instance == 1 else f
                             for f in a.findings])
    assert len({content_digest(a), content_digest(b), content_digest(c)}) == 3
    first = build_outputs(a, sources_of(series), 1)[0]
    prior = PriorReport(first.sop_instance_uid, first.sop_class_uid, first.series_uid, content_digest(a))
    again = build_outputs(a, sources_of(series), 1, history=[prior])[0]
    changed = build_outputs(b, sources_of(series), 1, history=[prior])[0]
    assert again.sop_instance_uid == first.sop_instance_uid != changed.sop_instance_uid
    back = StudyAnalysis.from_json(a.to_json())
    assert back.measurements == a.measurements and back.findings == a.findings and back.model == a.model
