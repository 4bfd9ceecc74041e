"""Localisation with the shipped ICH model on generated studies it never saw: each subtype is found, its
region's centre lies inside the head and its circle on the true lesion (centre inside it, within its box
on that slice for a thin crescent, or the circle reaching it; bench/study_level.py counts centres), the masks overlap the generator's, and the SEG built from them is valid,
references the source images and reads back as the same masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from e2e_helpers import ICH_DEMO_VERSION, MODELS
from outputs_helpers import written_seg
from scipy import ndimage

from dicom_node.ml.analysis import AnalysisStatus, instance_ref_from_file
from dicom_node.ml.annotations import seg_masks
from dicom_node.ml.device import choose_device
from dicom_node.ml.localise import head_mask
from dicom_node.ml.preprocess import read_image
from dicom_node.ml.registry import Pipeline, load_pipeline
from dicom_node.synth import SUBTYPES, write_ct_head_study

SEED = 8801  # not a training seed (9031, 9133)
THIN_MM = 6.0


@pytest.fixture(scope="module")
def ich() -> Pipeline:
    return load_pipeline(MODELS, "ich", ICH_DEMO_VERSION, choose_device("cpu"))


def _dice(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    inter = sum(int((a[k] & b[k]).sum()) for k in set(a) & set(b))
    total = sum(int(m.sum()) for m in a.values()) + sum(int(m.sum()) for m in b.values())
    return 2 * inter / total if total else 0.0


@pytest.mark.parametrize("subtype", SUBTYPES)
def test_each_subtype_is_found_and_marked_on_the_lesion(ich: Pipeline, subtype: str, tmp_path: Path) -> None:
    st = write_ct_head_study(tmp_path, SEED, findings=(subtype,), n_slices=32, size=256,
                             patient_index=SUBTYPES.index(subtype))
    refs = [instance_ref_from_file(str(f)) for f in st.files]
    result = ich.analyse(refs)
    assert result.status is AnalysisStatus.ANALYSED
    present = {f.label for f in result.findings if f.present}
    # found (an extra subtype on a single study is a specificity question: bench/study_level.py measures it)
    assert {subtype, "any"} <= present, f"{subtype}: present {sorted(present)}"
    finding = next(f for f in result.findings if f.label == subtype)
    assert finding.key_sop_instance_uid and finding.region_center is not None and finding.region_radius
    row, col = finding.region_center
    key = next(r for r in refs if r.sop_instance_uid == finding.key_sop_instance_uid)
    assert head_mask(read_image(key.path))[int(row), int(col)], "the mark is outside the head"
    assert st.seg_file is not None
    truth = seg_masks(st.seg_file)[1][subtype]
    mask = truth.get(key.sop_instance_uid)
    assert mask is not None, "the key slice does not show the lesion"
    inside = bool(mask[int(row), int(col)])
    if not inside:  # a thin crescent: within its box on that slice
        spacing = float(pydicom.dcmread(key.path, stop_before_pixels=True).PixelSpacing[0])
        thin = 2 * float(ndimage.distance_transform_edt(mask).max()) * spacing < THIN_MM
        box = next(b for b in st.boxes if b.sop_instance_uid == key.sop_instance_uid and b.label == subtype)
        inside = thin and box.contains(row, col)
    if not inside:  # else the marked circle must at least reach the lesion (the reader sees it touch the blood)
        gap = float(ndimage.distance_transform_edt(~mask)[int(row), int(col)])
        inside = gap <= float(finding.region_radius)
    assert inside, f"{subtype}: the mark at ({row:.0f}, {col:.0f}) r={finding.region_radius:.0f} misses the lesion"
    # the masks travel with the analysis and overlap the truth
    dice = _dice(result.masks[subtype], truth)
    print(f"{subtype}: Dice {dice:.2f}")
    assert dice > 0.3, f"{subtype}: Dice {dice:.2f}"

    path = written_seg(result, refs, tmp_path / "seg.dcm", st.primary_series_uid)
    back = seg_masks(path)[1]
    assert set(back) == present - {"any"}  # one segment per subtype the analysis found
    assert _dice(back[subtype], result.masks[subtype]) == pytest.approx(1.0)


def test_a_normal_study_has_no_finding_and_no_mask(ich: Pipeline, tmp_path: Path) -> None:
    st = write_ct_head_study(tmp_path, SEED, findings=(), n_slices=32, size=256, patient_index=9)
    result = ich.analyse([instance_ref_from_file(str(f)) for f in st.files])
    assert result.status is AnalysisStatus.ANALYSED
    assert [f.label for f in result.findings if f.present] == [] and result.masks == {}
