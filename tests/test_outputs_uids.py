"""Deterministic output UIDs: same content, same UIDs; changed content changes instances, never series."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from outputs_helpers import ich_analysis, make_series, sources_of

from dicom_node.outputs import build_outputs, uids

STUDY = "1.2.3.4"
UID_RE = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")


def test_series_uid_is_stable_and_independent_of_generation() -> None:
    a = uids.series_uid(STUDY, "ich", "1.0", uids.SR)
    assert a == uids.series_uid(STUDY, "ich", "1.0", uids.SR)
    assert UID_RE.match(a) and len(a) <= 64
    assert a != uids.series_uid(STUDY, "ich", "1.0", uids.OVERLAY)
    assert a != uids.series_uid(STUDY, "ich", "1.1", uids.SR)
    assert a != uids.series_uid(STUDY, "sih", "1.0", uids.SR)
    assert a != uids.series_uid("1.2.3.5", "ich", "1.0", uids.SR)


def test_instance_uid_changes_with_content_and_label() -> None:
    g1 = uids.instance_uid(STUDY, "ich", "1.0", uids.OVERLAY, "report-a", "subdural")
    assert g1 == uids.instance_uid(STUDY, "ich", "1.0", uids.OVERLAY, "report-a", "subdural")
    assert g1 != uids.instance_uid(STUDY, "ich", "1.0", uids.OVERLAY, "report-b", "subdural")
    assert g1 != uids.instance_uid(STUDY, "ich", "1.0", uids.OVERLAY, "report-a", "any")
    assert g1 != uids.instance_uid(STUDY, "ich", "1.0", uids.SR, "report-a")
    assert UID_RE.match(g1) and len(g1) <= 64


def test_device_uid_changes_with_the_manifest() -> None:
    a = uids.device_uid("ich", "a" * 64)
    assert a == uids.device_uid("ich", "A" * 64)
    assert a != uids.device_uid("ich", "b" * 64)
    with pytest.raises(ValueError):
        uids.device_uid("ich", "")


def test_bad_kind_and_separator_are_refused() -> None:
    with pytest.raises(ValueError):
        uids.series_uid(STUDY, "ich", "1.0", "mask")
    with pytest.raises(ValueError):
        uids.series_uid(STUDY, "ich|x", "1.0", uids.SR)
    with pytest.raises(ValueError):
        uids.instance_uid(STUDY, "ich", "1.0", uids.SR, "")


def test_build_outputs_uids_follow_content_not_generation() -> None:
    series = make_series("CT", n=3, size=64)
    analysis = ich_analysis(series, positive=True, center=(20.0, 40.0))
    first = build_outputs(analysis, sources_of(series), generation=1)
    again = build_outputs(analysis, sources_of(series), generation=2)
    changed = replace(analysis, findings=[replace(f, probability=0.99) if f.label == "subdural" else f
                                          for f in analysis.findings])
    later = build_outputs(changed, sources_of(series), generation=2)
    assert [o.kind for o in first] == ["sr", "overlay"]
    assert [o.sop_instance_uid for o in first] == [o.sop_instance_uid for o in again]
    assert [o.series_uid for o in first] == [o.series_uid for o in later]
    assert not {o.sop_instance_uid for o in first} & {o.sop_instance_uid for o in later}
    # one SR series and one overlay series per model; every instance distinct
    assert len({o.series_uid for o in first}) == 2
    assert len({o.sop_instance_uid for o in first}) == 2
    for out in first:
        assert out.dataset.SOPInstanceUID == out.sop_instance_uid
        assert out.dataset.SeriesInstanceUID == out.series_uid
        assert out.dataset.SOPClassUID == out.sop_class_uid
        assert out.dataset.file_meta.MediaStorageSOPInstanceUID == out.sop_instance_uid
