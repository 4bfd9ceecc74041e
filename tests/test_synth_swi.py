"""Generated SWI studies for cerebral microbleeds: determinism, label files, vendor series, bleeds at the
sites of their class, mimics, ground-truth SEG and bleed centres, IOD validity, CLI."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_node.outputs.validate import dciodvfy_errors
from dicom_node.synth import generate
from dicom_node.synth.swi_phantom import CLASSES, Tissue, class_for_index, render_swi, tissue_at
from dicom_node.synth.swi_study import VENDORS, read_bleeds_csv, read_seg_bleeds, write_mr_swi_study

SIZE = 96
SLICES = 10


@pytest.fixture(scope="module")
def swi_set(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("swi")
    return out, generate("mr-swi", 4, seed=11, out=out, size=SIZE, n_slices=SLICES)


def test_label_files_have_the_contract_columns_and_match_the_studies(swi_set) -> None:
    out, studies = swi_set
    with open(out / "studies.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["StudyInstanceUID", "kind", "folder", "microbleeds", "svd_class"]
    assert [r["StudyInstanceUID"] for r in rows] == [s.study_uid for s in studies]
    bleeds = read_bleeds_csv(out / "bleeds.csv")
    for row, st in zip(rows, studies, strict=True):
        assert row["kind"] == "mr-swi" and (out / row["folder"]).is_dir()
        assert row["svd_class"] == st.svd_class in CLASSES
        assert int(row["microbleeds"]) == len(st.bleeds) == len(bleeds.get(st.study_uid, []))
    # one study of each class in every block of four indices
    assert sorted(s.svd_class for s in studies) == sorted(CLASSES)
    with open(out / "labels.csv", newline="") as fh:
        labels = {r["StudyInstanceUID"]: r for r in csv.DictReader(fh)}
    for st in studies:
        row = labels[st.study_uid]
        assert int(row["lobar"]) + int(row["deep"]) == int(row["microbleeds"])


def test_a_study_does_not_depend_on_how_many_are_generated(tmp_path: Path) -> None:
    two = generate("mr-swi", 2, seed=3, out=tmp_path / "two", size=64, n_slices=6, distractors=False)
    three = generate("mr-swi", 3, seed=3, out=tmp_path / "three", size=64, n_slices=6, distractors=False)
    assert [s.study_uid for s in two] == [s.study_uid for s in three[:2]]
    for a, b in zip(two, three[:2], strict=False):
        assert a.svd_class == b.svd_class and a.bleeds == b.bleeds
        for fa, fb in zip(a.files, b.files, strict=True):
            assert pydicom.dcmread(fa).PixelData == pydicom.dcmread(fb).PixelData
    assert [class_for_index(3, i) for i in range(8)] == [class_for_index(3, i) for i in range(8)]


@pytest.mark.parametrize("svd_class", CLASSES)
def test_bleeds_sit_where_their_class_puts_them(svd_class: str) -> None:
    for seed in range(3):
        vols = render_swi(np.random.default_rng([seed, 9]), svd_class, size=SIZE, n_slices=40)
        locations = [b.location for b in vols.bleeds]
        if svd_class == "none":
            assert locations == []
            continue
        assert len(locations) >= 2
        assert all(2.0 <= b.diameter_mm <= 10.0 for b in vols.bleeds)
        if svd_class == "caa":
            assert set(locations) == {"lobar"}
        elif svd_class == "asvd":
            assert locations.count("deep") >= len(locations) - 1
        else:
            assert {"lobar", "deep"} <= set(locations)
        for b in vols.bleeds:
            assert (vols.masks == b.index).any(), f"bleed {b.index} has no mask"
            i = int(np.argmin(np.abs(vols.z - b.center[2])))
            rows, cols = np.nonzero(vols.masks[i] == b.index)
            if len(rows) and b.diameter_mm >= 2.5 * vols.spacing:  # resolved: dark where its mask is
                tissue = np.median(vols.swi[i][vols.swi[i] > 0.2])
                assert vols.swi[i][rows, cols].mean() < 0.8 * tissue


def test_bleed_centres_lie_in_the_tissue_of_their_site() -> None:
    from dicom_node.synth.anatomy import HeadModel, HeadParams

    head = HeadModel(HeadParams())
    wanted = {"basal_ganglia": Tissue.DEEP_GM, "thalamus": Tissue.DEEP_GM, "brainstem": Tissue.BRAINSTEM,
              "cortex": Tissue.GM, "juxtacortical": Tissue.WM, "deep_white_matter": Tissue.WM}
    from dicom_node.synth.swi_phantom import place_bleeds

    for cls in ("caa", "asvd", "cadasil"):
        for b in place_bleeds(np.random.default_rng([4, len(cls)]), head, cls, (-45.0, 75.0)):
            assert tissue_at(head, b.center)[0] == wanted[b.site], b


def test_mimics_and_phase_sign() -> None:
    """Veins and bleeds are negative on the phase image, calcification positive (the opposite sign)."""
    found = None
    for seed in range(12):
        vols = render_swi(np.random.default_rng([seed, 21]), "asvd", size=192, n_slices=40)
        if vols.calcifications and vols.bleeds:
            found = vols
            break
    assert found is not None, "no subject with pallidal calcification in 12 seeds"
    vols = found
    assert len(vols.vessels) >= 30
    assert any(abs(v.end[2] - v.start[2]) > 10 for v in vols.vessels)  # through-plane: dots over slices
    assert any(abs(v.end[2] - v.start[2]) < 5 for v in vols.vessels)  # in-plane: lines

    def value(volume: np.ndarray, p: tuple[float, float, float]) -> float:
        i = int(np.argmin(np.abs(vols.z - p[2])))
        c = int(np.argmin(np.abs(vols.coords - p[0])))
        r = int(np.argmin(np.abs(vols.coords - p[1])))
        return float(volume[i, r, c])

    calc = max(vols.calcifications, key=lambda c: c.radius_mm)
    bleed = max(vols.bleeds, key=lambda b: b.diameter_mm)
    assert value(vols.phase, calc.center) > 0.2
    assert value(vols.phase, bleed.center) < -0.2
    # on SWI the bleed is darker than the calcification (blooming; calcium has no phase-mask darkening)
    assert value(vols.swi, bleed.center) < value(vols.swi, calc.center)


@pytest.mark.parametrize("vendor", VENDORS)
def test_vendor_series_descriptions_and_image_types(tmp_path: Path, vendor: str) -> None:
    st = write_mr_swi_study(tmp_path, seed=2, svd_class="caa", size=64, n_slices=6, vendor=vendor)
    by_uid: dict[str, pydicom.Dataset] = {}
    for f in st.files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        by_uid.setdefault(str(ds.SeriesInstanceUID), ds)
    assert {"T1 AX", "T2 AX", "FLAIR AX"} <= {str(ds.SeriesDescription) for ds in by_uid.values()}
    swi = by_uid[st.series_uids["swi"]]
    expected = {"siemens": "SWI_Images", "ge": "Ax SWAN", "philips": "SWIp", "canon": "VenBOLD"}[vendor]
    assert swi.SeriesDescription == expected
    assert swi.ScanningSequence == "GR" and swi.MRAcquisitionType == "3D"
    assert {"P", "PHASE", "PHASE MAP"} & set(by_uid[st.series_uids["phase"]].ImageType)
    assert {"MNIP", "MINIP", "MIN IP"} & set(by_uid[st.series_uids["mip"]].ImageType)
    assert ("mag" in st.series_uids) == (vendor == "siemens")


def test_ground_truth_seg_has_one_segment_per_bleed_on_the_swi_images(swi_set) -> None:
    out, studies = swi_set
    csv_bleeds = read_bleeds_csv(out / "bleeds.csv")
    for st in studies:
        if not st.bleeds:
            assert st.seg_file is None
            continue
        assert st.seg_file is not None and st.seg_file.parent.name == "ground-truth"
        assert st.seg_file not in st.files  # sending the study never sends its answer
        seg = pydicom.dcmread(st.seg_file)
        assert [str(s.SegmentLabel) for s in seg.SegmentSequence] == [
            f"Microbleed {b.index} ({b.location})" for b in st.bleeds]
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == st.series_uids["swi"]
        masks = read_seg_bleeds(st.seg_file)
        assert sorted(masks) == [b.index for b in st.bleeds]
        for b in csv_bleeds[st.study_uid]:
            by_sop = masks[b.index]
            largest = max(by_sop, key=lambda sop: int(by_sop[sop].sum()))
            assert largest == b.sop_instance_uid
            rows, cols = np.nonzero(by_sop[largest])
            assert abs(rows.mean() - b.row) < 0.01 and abs(cols.mean() - b.col) < 0.01


def test_dciodvfy_finds_no_errors(swi_set) -> None:
    _out, studies = swi_set
    checked = 0
    for st in studies:
        seen: set[str] = set()
        for f in st.files:
            series = f.parent.name
            if series in seen:
                continue
            seen.add(series)
            assert dciodvfy_errors(f) == [], f
            checked += 1
        if st.seg_file is not None:
            assert dciodvfy_errors(st.seg_file) == [], st.seg_file
            checked += 1
    assert checked >= 4 * 6


def test_cli_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "dicom_node.cli", "synth", "--kind", "mr-swi", "--n", "2", "--seed", "5",
         "--out", str(out), "--size", "64", "--slices", "6", "--no-progress"],
        capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "2 mr-swi studies" in proc.stdout
    assert (out / "studies.csv").is_file() and (out / "bleeds.csv").is_file() and (out / "labels.csv").is_file()
