"""Series and image selection rules, on headers (InstanceRef) and on generated files with distractors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from ml_helpers import CORONAL, MR, SC, ref, series, write_ct_study

from dicom_node.errors import SelectionError
from dicom_node.ml.selection import (
    ICH_CT_RULE,
    SIH_AXIAL_FRACTION,
    SIH_CORONAL1_FRACTION,
    SIH_CORONAL2_FRACTION,
    SIH_T1C_AXIAL_RULE,
    has_contrast,
    orientation_of,
    reject_reason,
    select_series,
    select_sih_images,
    sort_slices,
)


def reason(**kw: object) -> str | None:
    return reject_reason(ICH_CT_RULE, series("9.9", 12, **kw))


def test_plain_non_contrast_axial_head_ct_passes() -> None:
    assert reason() is None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"modality": "MR"}, "modality MR"),
        ({"image_type": ("ORIGINAL", "PRIMARY", "LOCALIZER")}, "LOCALIZER"),
        ({"image_type": ("DERIVED", "SECONDARY")}, "SECONDARY"),
        ({"sop_class_uid": SC}, "SOP class"),
        ({"body_part": "CHEST"}, "body part CHEST"),
        ({"series_description": "Topogram"}, "excluded pattern"),
        ({"series_description": "CTA HEAD"}, "excluded pattern"),
        ({"convolution_kernel": "H70h"}, "bone/sharp kernel"),
        ({"convolution_kernel": "BONEPLUS"}, "bone/sharp kernel"),
        ({"image_orientation": CORONAL}, "orientation is coronal"),
        ({"image_orientation": None}, "no ImageOrientationPatient"),
        ({"slice_thickness": 20.0}, "slice thickness 20"),
        ({"contrast_agent": "IOMERON 350"}, "contrast given"),
        ({"series_description": "HEAD POST CONTRAST"}, "contrast given"),
    ],
)
def test_each_ich_rule_rejects_with_its_reason(overrides: dict[str, object], expected: str) -> None:
    got = reason(**overrides)
    assert got is not None and expected in got


def test_too_few_images_rejected() -> None:
    got = reject_reason(ICH_CT_RULE, series("9.9", 3))
    assert got is not None and "fewer than 8" in got


def test_tilted_gantry_is_still_axial_up_to_the_limit() -> None:
    def tilted(deg: float) -> tuple[float, ...]:
        a = math.radians(deg)
        return (1.0, 0.0, 0.0, 0.0, math.cos(a), -math.sin(a))

    assert orientation_of(ref(image_orientation=tilted(20))) == ("axial", pytest.approx(20))
    assert reason(image_orientation=tilted(20)) is None
    assert "tilt 40" in (reason(image_orientation=tilted(40)) or "")


def test_contrast_from_agent_or_description_with_negations() -> None:
    assert has_contrast(ref(contrast_agent="Gadovist"))
    assert has_contrast(ref(series_description="T1 MPRAGE +C"))
    assert has_contrast(ref(series_description="T1 post Gd"))
    assert not has_contrast(ref(series_description="HEAD NON-CONTRAST"))
    assert not has_contrast(ref(series_description="T1 pre contrast"))
    assert not has_contrast(ref(contrast_agent="NONE"))


def test_ranking_prefers_the_thickness_the_model_expects_then_soft_kernel_then_more_slices() -> None:
    thin = series("1.1", 240, series_number=4, convolution_kernel="H31s", slice_thickness=0.625)
    thick = series("1.2", 30, series_number=2, convolution_kernel="H31s", slice_thickness=5.0)
    mid = series("1.3", 60, series_number=3, convolution_kernel="H31s", slice_thickness=2.5)
    assert ICH_CT_RULE.preferred_thickness_mm == 5.0
    assert select_series(thin + mid + thick, ICH_CT_RULE)[0].series_uid == "1.2"  # was 1.1: most slices won
    assert select_series(thin + mid, ICH_CT_RULE)[0].series_uid == "1.3"
    site = ICH_CT_RULE.replace(preferred_thickness_mm=0.625)
    assert select_series(thin + mid + thick, site)[0].series_uid == "1.1"
    soft = series("2.1", 12, series_number=5, convolution_kernel="Hr40")
    other = series("2.2", 12, series_number=3, convolution_kernel="FC68")
    assert select_series(other + soft, ICH_CT_RULE)[0].series_uid == "2.1"
    more = series("3.1", 30, series_number=7, convolution_kernel="H30s")
    fewer = series("3.2", 12, series_number=2, convolution_kernel="H30s")
    no_preference = ICH_CT_RULE.replace(preferred_thickness_mm=None)
    assert select_series(fewer + more, no_preference)[0].series_uid == "3.1"


def test_slices_sorted_by_position_not_instance_number() -> None:
    shuffled = [ref("1.1", i, instance_number=20 - i, image_position=(0.0, 0.0, float((i * 7) % 12))) for i in range(12)]
    z = [r.image_position[2] for r in sort_slices(shuffled)]  # type: ignore[index]
    assert z == sorted(z) and len(z) == 12


def test_picks_soft_axial_series_from_generated_study_with_distractors(tmp_path: Path) -> None:
    refs = write_ct_study(tmp_path, seed=3, bleed=False, n=10, size=32)
    assert len({r.series_uid for r in refs}) == 4  # soft, scout, bone kernel, dose report
    chosen = select_series(refs, ICH_CT_RULE)
    assert {r.series_description for r in chosen} == {"HEAD 5mm"}
    assert len(chosen) == 10


def test_study_without_usable_series_refused_with_every_reason(tmp_path: Path) -> None:
    refs = [r for r in write_ct_study(tmp_path, seed=4, bleed=False, n=10, size=32) if r.series_description != "HEAD 5mm"]
    with pytest.raises(SelectionError) as err:
        select_series(refs, ICH_CT_RULE)
    text = str(err.value)
    assert "no non-contrast axial head CT series" in text
    assert "LOCALIZER" in text and "Dose Report" in text and "BONE" in text


def test_empty_study_refused() -> None:
    with pytest.raises(SelectionError, match="no instances"):
        select_series([], ICH_CT_RULE)


def _mr(uid: str, n: int, orient: tuple[float, ...], desc: str, axis: int, agent: str = "Gadovist") -> list:
    out = []
    for i in range(n):
        pos = [0.0, 0.0, 0.0]
        pos[axis] = -50.0 + 100.0 * i / (n - 1)
        out.append(ref(uid, i, modality="MR", sop_class_uid=MR, series_description=desc, image_orientation=orient,
                       image_position=tuple(pos), contrast_agent=agent, convolution_kernel="", slice_thickness=3.0,
                       instance_number=n - i))
    return out


def test_sih_images_at_documented_fractions_and_distractors_ignored() -> None:
    axial = _mr("5.1", 21, (1, 0, 0, 0, 1, 0), "T1 AX +C", axis=2)
    coronal = _mr("5.2", 21, CORONAL, "T1 COR +C", axis=1)
    pre = _mr("5.3", 21, (1, 0, 0, 0, 1, 0), "T1 AX pre", axis=2, agent="")
    t2 = _mr("5.4", 21, (1, 0, 0, 0, 1, 0), "T2 TSE AX", axis=2)
    images = select_sih_images(pre + t2 + coronal + axial)
    assert images.axial.series_uid == "5.1" and images.coronal1.series_uid == "5.2"
    assert images.axial.image_position[2] == pytest.approx(-50 + 100 * SIH_AXIAL_FRACTION, abs=5)  # type: ignore[index]
    assert images.coronal1.image_position[1] == pytest.approx(-50 + 100 * SIH_CORONAL1_FRACTION, abs=5)  # type: ignore[index]
    assert images.coronal2.image_position[1] == pytest.approx(-50 + 100 * SIH_CORONAL2_FRACTION, abs=5)  # type: ignore[index]


def test_sih_refuses_without_post_contrast_coronal() -> None:
    axial = _mr("5.1", 21, (1, 0, 0, 0, 1, 0), "T1 AX +C", axis=2)
    pre_cor = _mr("5.3", 21, CORONAL, "T1 COR", axis=1, agent="")
    with pytest.raises(SelectionError, match="coronal.*no contrast agent recorded"):
        select_sih_images(axial + pre_cor)
    assert reject_reason(SIH_T1C_AXIAL_RULE, _mr("5.5", 21, (1, 0, 0, 0, 1, 0), "FLAIR +C", axis=2)) is not None
