"""FLAIR white-matter hyperintensity extent (ml/wmh.py): the number the microbleed classifier reads beside
the bleeds, measured on hand-built volumes and on generated studies the way the worker measures it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_node.ml.datasets import by_study, scan_dicom
from dicom_node.ml.microbleeds import DEFAULT_RULES, SwiVolume
from dicom_node.ml.wmh import FLAIR_RULE, NO_FLAIR, measure_flair, wmh_extent
from dicom_node.synth.swi_study import write_mr_swi_study


def _head(n: int = 12, size: int = 96, lesion: float = 0.0, seed: int = 0) -> np.ndarray:
    """A FLAIR-like head: bright scalp ring, dark skull, brain tissue at 0.45 with noise, dark ventricles, and
    a confluent bright block covering `lesion` of the brain's width."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(yy, xx)
    sl = np.where(r < 44, 0.8, 0.0) * (r >= 41)  # scalp fat
    sl = sl + np.where(r < 41, 0.03, 0.0) * (r >= 37)  # bone
    brain = r < 37
    sl = sl + np.where(brain, 0.45, 0.0)
    sl = np.where(r < 6, 0.08, sl)  # ventricle
    vol = np.repeat(sl[None], n, axis=0).astype(np.float32)
    if lesion > 0:
        half = int(37 * lesion)
        vol[:, 30:60, 48 - half: 48 + half] = np.where(brain[30:60, 48 - half: 48 + half], 0.85,
                                                        vol[:, 30:60, 48 - half: 48 + half])
    return vol + rng.normal(0, 0.02, vol.shape).astype(np.float32) * (vol > 0)


def _volume(pixels: np.ndarray) -> SwiVolume:
    """5 mm slices of 1 mm pixels."""
    n = len(pixels)
    return SwiVolume([], pixels, 1.0, 1.0, 5.0, np.array([[0.0, 0.0, 5.0 * k] for k in range(n)]),
                     np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))


def test_extent_grows_with_the_confluent_lesion_and_ignores_the_bright_scalp() -> None:
    clean = wmh_extent(_volume(_head()))
    small = wmh_extent(_volume(_head(lesion=0.2)))
    large = wmh_extent(_volume(_head(lesion=0.6)))
    assert clean is not None and small is not None and large is not None
    assert clean < 0.01  # scalp fat (as bright as a lesion) lies shallower than MIN_DEPTH_MM
    assert 0.02 < small < large
    assert large > 0.15
    assert wmh_extent(_volume(np.zeros((12, 96, 96), np.float32))) is None  # no tissue: no figure at all


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    out: dict[str, list] = {}
    for svd_class in ("none", "cadasil"):
        folder = tmp_path_factory.mktemp(svd_class)
        write_mr_swi_study(folder, seed=3, svd_class=svd_class, size=96, n_slices=16)
        (refs,) = by_study([r for r in scan_dicom(folder) if r.modality == "MR"]).values()
        out[svd_class] = refs
    return out


def test_generated_cadasil_flair_measures_larger_than_a_normal_one(studies: dict[str, list]) -> None:
    none, cadasil = (measure_flair(studies[c], DEFAULT_RULES) for c in ("none", "cadasil"))
    assert none.present and cadasil.present
    assert cadasil.extent > 0.1 and none.extent < 0.03
    assert {r.series_description for r in cadasil.series} == {"FLAIR AX"}
    assert "FLAIR series" in cadasil.describe() and "white-matter hyperintensity" in cadasil.describe()
    assert cadasil.bag_features() == [pytest.approx(10 * cadasil.extent), 1.0]


def test_no_flair_series_or_no_rule_is_said(studies: dict[str, list]) -> None:
    without = [r for r in studies["cadasil"] if r.series_description != "FLAIR AX"]
    missing = measure_flair(without, DEFAULT_RULES)
    assert not missing.present and missing.bag_features() == [0.0, 0.0]
    assert "no FLAIR series" in missing.describe()
    assert measure_flair(studies["cadasil"], {"swi": DEFAULT_RULES["swi"]}) is NO_FLAIR


def test_a_flair_without_pixel_spacing_is_not_measured(studies: dict[str, list], tmp_path: Path) -> None:
    # a header that gives no usable geometry (PixelSpacing 0\\0): no depth, so no share is claimed
    refs = []
    for r in studies["cadasil"]:
        if r.series_description == "FLAIR AX":
            ds = pydicom.dcmread(r.path)
            ds.PixelSpacing = [0, 0]
            path = tmp_path / Path(r.path).name
            ds.save_as(path)
            r = replace(r, path=str(path))
        refs.append(r)
    result = measure_flair(refs, DEFAULT_RULES)
    assert not result.present and result.bag_features() == [0.0, 0.0]
    assert result.describe() == "FLAIR series not measurable: class from the microbleeds alone"


def test_flair_rule_reads_vendor_names_and_not_the_others() -> None:
    from dicom_node.ml.selection import reject_reason

    def series(description: str) -> list:
        from dicom_node.ml.analysis import InstanceRef

        return [InstanceRef(path=f"/x/{k}", study_uid="1", series_uid="2", sop_instance_uid=f"1.{k}",
                            sop_class_uid="1.2.840.10008.5.1.4.1.1.4", modality="MR", series_description=description,
                            image_position=(0.0, 0.0, 5.0 * k), image_orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
                            slice_thickness=5.0, instance_number=k) for k in range(20)]

    for name in ("FLAIR AX", "t2_tirm_tra_dark-fluid", "Ax T2 FLAIR", "T2W_FLAIR", "3D FLAIR SAG"):
        assert reject_reason(FLAIR_RULE, series(name)) is None, name
    for name in ("T2 AX", "SWI_Images", "FLAIR localizer"):
        assert reject_reason(FLAIR_RULE, series(name)) is not None, name
