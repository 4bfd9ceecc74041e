"""DICOM SEG: one segment per finding, references the source images, reads back as the masks written."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from outputs_helpers import ICH_MODEL, make_series, roundtrip

from dicom_node.outputs.seg import SegAlgorithm, SegmentMask, build_seg, seg_series_description
from dicom_node.outputs.validate import dciodvfy_errors


def _crescent(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    return (r > 0.36 * size) & (r < 0.4 * size) & (xx < size / 2)


def test_seg_reads_back_as_written_and_validates(tmp_path: Path) -> None:
    series = make_series("CT", n=4, size=128)
    crescent, blob = _crescent(128), np.zeros((128, 128), bool)
    blob[60:70, 60:70] = True
    segments = [SegmentMask("subdural", {series[1].SOPInstanceUID: crescent, series[2].SOPInstanceUID: crescent}),
                SegmentMask("intraparenchymal", {series[2].SOPInstanceUID: blob})]
    out = build_seg(series, segments, "1.2.3.4.5", "1.2.3.4.6", 9003, 1,
                    SegAlgorithm(ICH_MODEL.display_name, ICH_MODEL.version, ICH_MODEL),
                    seg_series_description(ICH_MODEL, ["subdural", "intraparenchymal"]))
    path = tmp_path / "seg.dcm"
    ds = roundtrip(out.dataset, path)
    assert dciodvfy_errors(path) == []
    assert ds.StudyInstanceUID == series[0].StudyInstanceUID and ds.PatientID == "SYN0001"
    assert int(ds.NumberOfFrames) == 3  # empty frames are not written
    seg = hd.seg.Segmentation.from_dataset(ds)
    labels = {d.segment_label: d.segment_number for d in seg.SegmentSequence}
    assert set(labels) == {"Subdural hemorrhage", "Intraparenchymal hemorrhage"}
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "35486000"
    referenced = {r.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert referenced == {d.SOPInstanceUID for d in series}
    back = seg.get_pixels_by_source_instance(
        [series[2].SOPInstanceUID], segment_numbers=[labels["Subdural hemorrhage"], labels["Intraparenchymal hemorrhage"]])
    assert np.array_equal(back[0, ..., 0] > 0, crescent) and np.array_equal(back[0, ..., 1] > 0, blob)
    assert "synthetic-demo" in ds.SeriesDescription


def test_empty_or_mismatched_masks_are_refused() -> None:
    series = make_series("CT", n=2, size=64)
    algorithm = SegAlgorithm("x", "1")
    with pytest.raises(ValueError, match="empty"):
        build_seg(series, [SegmentMask("subdural", {series[0].SOPInstanceUID: np.zeros((64, 64), bool)})],
                  "1.2.3", "1.2.4", 1, 1, algorithm, "x")
    with pytest.raises(ValueError, match="image is"):
        build_seg(series, [SegmentMask("subdural", {series[0].SOPInstanceUID: np.ones((32, 32), bool)})],
                  "1.2.3", "1.2.4", 1, 1, algorithm, "x")


def test_build_outputs_returns_a_seg_of_the_present_findings_masks(tmp_path: Path) -> None:
    from outputs_helpers import ich_analysis, sources_of

    from dicom_node.outputs import build_outputs

    series = make_series("CT", n=4, size=128, blob=(40, 80))
    analysis = ich_analysis(series, positive=True, center=(40.0, 80.0))
    mask = np.zeros((128, 128), bool)
    mask[34:46, 74:86] = True
    analysis.masks = {"subdural": {series[1].SOPInstanceUID: mask},
                      "epidural": {series[1].SOPInstanceUID: mask}}  # absent: not in the SEG
    outputs = build_outputs(analysis, sources_of(series), 1)
    assert [o.kind for o in outputs] == ["sr", "overlay", "seg"]
    seg = outputs[-1]
    path = tmp_path / "seg.dcm"
    ds = roundtrip(seg.dataset, path)
    assert dciodvfy_errors(path) == []
    assert [d.SegmentLabel for d in ds.SegmentSequence] == ["Subdural hemorrhage"]
    assert seg.sop_instance_uid == build_outputs(analysis, sources_of(series), 2)[-1].sop_instance_uid
    assert ds.SeriesNumber < 9000 and ds.SeriesDescription.startswith("AI ICH masks: subdural")
