"""Generated studies: determinism, label files, HU and geometry, lesion sites, distractors, IOD validity, CLI."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy.ndimage import binary_dilation

from dicom_node.synth import CT_LABELS, SUBTYPES, generate, write_ct_head_study, write_mr_sih_study
from dicom_node.synth.phantom_ct import render_ct_head
from dicom_node.synth.phantom_mr import render_mr_sih

SIZE = 128
SLICES = 12


def _read_series(files: list[Path], series_uid: str) -> list[pydicom.Dataset]:
    out = [ds for ds in (pydicom.dcmread(f) for f in files) if ds.SeriesInstanceUID == series_uid]
    return sorted(out, key=lambda ds: int(ds.InstanceNumber))


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


@pytest.fixture(scope="module")
def ct_set(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ct")
    return out, generate("ct-head", 6, seed=5, out=out, size=SIZE, n_slices=SLICES)


@pytest.fixture(scope="module")
def mr_set(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("mr")
    return out, generate("mr-sih", 4, seed=5, out=out, size=96, n_axial=8, n_coronal=8)


def test_same_seed_same_uids_and_pixels(tmp_path: Path) -> None:
    a = write_ct_head_study(tmp_path / "a", seed=3, findings=("subdural",), n_slices=6, size=96)
    b = write_ct_head_study(tmp_path / "b", seed=3, findings=("subdural",), n_slices=6, size=96)
    c = write_ct_head_study(tmp_path / "c", seed=4, findings=("subdural",), n_slices=6, size=96)
    assert a.study_uid == b.study_uid != c.study_uid
    assert a.slice_labels == b.slice_labels
    assert [f.relative_to(a.folder) for f in a.files] == [f.relative_to(b.folder) for f in b.files]
    for fa, fb in zip(a.files, b.files):
        da, db = pydicom.dcmread(fa), pydicom.dcmread(fb)
        assert da.SOPInstanceUID == db.SOPInstanceUID
        assert da.PixelData == db.PixelData
    assert pydicom.dcmread(a.files[0]).PixelData != pydicom.dcmread(c.files[0]).PixelData
    m1 = write_mr_sih_study(tmp_path / "m1", seed=3, sih=True, size=64, n_axial=4, n_coronal=4)
    m2 = write_mr_sih_study(tmp_path / "m2", seed=3, sih=True, size=64, n_axial=4, n_coronal=4)
    assert m1.study_uid == m2.study_uid and m1.findings == m2.findings
    assert all(pydicom.dcmread(x).PixelData == pydicom.dcmread(y).PixelData for x, y in zip(m1.files, m2.files))


def test_ct_labels_csv_is_rsna_format_and_matches_studies(ct_set) -> None:
    out, studies = ct_set
    with open(out / "labels.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["ID", "Label"]
    body = rows[1:]
    assert len(body) == len(studies) * SLICES * len(CT_LABELS)
    per_sop: dict[str, dict[str, int]] = {}
    for ident, value in body:
        assert ident.startswith("ID_") and value in ("0", "1")
        sop, label = ident[3:].rsplit("_", 1)
        per_sop.setdefault(sop, {})[label] = int(value)
    for st in studies:
        primary = _read_series(st.files, st.primary_series_uid)
        assert [ds.SOPInstanceUID for ds in primary] == list(st.slice_labels)
        for sop, labels in st.slice_labels.items():
            assert per_sop[sop] == labels
            assert labels["any"] == max(labels[s] for s in SUBTYPES)
        for label in CT_LABELS:
            assert st.study_labels[label] == max(v[label] for v in st.slice_labels.values())
    with open(out / "studies.csv", newline="") as fh:
        srows = list(csv.DictReader(fh))
    assert [r["StudyInstanceUID"] for r in srows] == [s.study_uid for s in studies]
    for r, st in zip(srows, studies):
        assert (out / r["folder"]).is_dir() and r["kind"] == "ct-head"
        assert {k: int(r[k]) for k in CT_LABELS} == st.study_labels


def test_ct_mix_has_normals_and_each_subtype() -> None:
    from dicom_node.synth.studies import draw_ct_findings

    drawn = draw_ct_findings(100, seed=1)
    assert 35 <= sum(1 for f in drawn if not f) <= 45
    for subtype in SUBTYPES:
        assert sum(1 for f in drawn if subtype in f) >= 12
    assert any(len(f) >= 2 for f in drawn)
    assert draw_ct_findings(100, seed=1) == drawn != draw_ct_findings(100, seed=2)


def test_an_enriched_set_holds_only_studies_led_by_the_subtypes_asked_for(tmp_path: Path) -> None:
    """`synth --only epidural,subdural`: no normal study, each has one of the two, both in equal shares, others
    still join them now and then; the plain mix is unchanged; an unknown subtype or another kind is refused."""
    from dicom_node.synth.studies import ct_findings

    only = ("epidural", "subdural")
    drawn = [ct_findings(9, i, only) for i in range(100)]
    assert all(set(f) & set(only) for f in drawn)
    assert all(sum(1 for f in drawn if s in f) >= 45 for s in only)
    assert any(set(f) - set(only) for f in drawn) and any(set(only) <= set(f) for f in drawn)
    assert [ct_findings(9, i) for i in range(20)] == [ct_findings(9, i, ()) for i in range(20)]
    assert sum(1 for i in range(100) if not ct_findings(9, i)) == 40
    exe = shutil.which("dicom-node", path=str(Path(sys.executable).parent)) or "dicom-node"
    out = tmp_path / "only"
    res = subprocess.run([exe, "synth", "--kind", "ct-head", "--n", "2", "--seed", "9", "--out", str(out), "--size",
                          "64", "--slices", "5", "--only", "epidural,subdural", "--no-progress", "--no-seg"],
                         check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    with open(out / "studies.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(int(r["epidural"]) or int(r["subdural"]) for r in rows)
    for args, why in ((["--kind", "ct-head", "--only", "epidural,extradural"], "extradural"),
                      (["--kind", "mr-sih", "--only", "epidural"], "ct-head")):
        bad = subprocess.run([exe, "synth", "--n", "1", "--seed", "1", "--out", str(tmp_path / "bad"), *args],
                             check=False, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and why in bad.stderr and "Traceback" not in bad.stderr
        assert not (tmp_path / "bad" / "labels.csv").exists()


def test_ct_header_geometry_and_hu(ct_set) -> None:
    _, studies = ct_set
    st = studies[0]
    primary = _read_series(st.files, st.primary_series_uid)
    assert len(primary) == SLICES
    zs = [float(ds.ImagePositionPatient[2]) for ds in primary]
    assert np.allclose(np.diff(zs), 5.0)
    for ds in primary:
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage and ds.Modality == "CT"
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"] and ds.ConvolutionKernel == "H30s"
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert float(ds.SliceThickness) == 5.0 and float(ds.RescaleIntercept) == -1024
        assert float(ds.RescaleSlope) == 1 and (float(ds.WindowCenter), float(ds.WindowWidth)) == (40, 80)
        assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 1 and ds.pixel_array.dtype == np.int16
        assert ds.StudyDescription == "CT HEAD WO CONTRAST" and ds.SeriesDescription == "Head 5mm"
        assert ds.BodyPartExamined == "HEAD" and ds.PatientID == "SYNTH0001"
        assert ds.FrameOfReferenceUID == primary[0].FrameOfReferenceUID
        assert float(ds.PixelSpacing[0]) * ds.Columns == pytest.approx(230, abs=1)
    hu = np.stack([_hu(ds) for ds in primary])
    mid = hu[SLICES // 2]
    c = SIZE // 2
    assert mid[:3, :3].mean() < -950  # air in the corner
    assert (mid > 700).sum() > 50  # skull
    brain = mid[c - 10:c + 10, c - 20:c - 10]
    assert 15 < float(np.median(brain)) < 45
    assert hu.min() >= -1024 and hu.max() <= 3071


@pytest.mark.parametrize("kind", SUBTYPES)
def test_blood_is_at_its_site_on_the_labelled_slices(kind: str) -> None:
    seed = 17
    lesion = render_ct_head(np.random.default_rng(seed), (kind,), n_slices=SLICES, size=160)
    normal = render_ct_head(np.random.default_rng(seed), (), n_slices=SLICES, size=160)
    assert not normal.labels.any()
    k = SUBTYPES.index(kind)
    positive = lesion.labels[:, k].astype(bool)
    assert positive.any()
    if kind in ("epidural", "intraparenchymal"):  # focal; others may span the whole 55 mm slab
        assert not positive.all()
    assert (lesion.labels[:, [j for j in range(5) if j != k]] == 0).all()
    diff = lesion.soft.astype(np.float32) - normal.soft.astype(np.float32)
    px_mm = lesion.spacing
    for i in range(SLICES):
        changed = (diff[i] > 8) & (normal.soft[i] < 60)  # not the blur spilling onto the skull
        if not positive[i]:
            obvious = changed & (diff[i] > 15) & (lesion.soft[i] >= 45)
            assert obvious.sum() * px_mm**2 < 8, f"slice {i} shows blood but is labelled negative"
            continue
        assert changed.sum() > 0
        blood = lesion.soft[i][changed]
        assert (blood >= 36).sum() * px_mm**2 >= 2 and np.median(blood) < 100
        before = normal.soft[i][changed]
        bone = normal.soft[i] > 500
        rows, cols = np.nonzero(changed)
        near_bone = [bone[max(r - 4, 0):r + 5, max(q - 4, 0):q + 5].any() for r, q in zip(rows, cols)]
        if kind in ("epidural", "subdural") and lesion.lesions[0].variant == "convexity":
            assert np.mean(near_bone) > 0.3  # extra-axial, against the inner table
        if kind in ("subarachnoid", "intraventricular"):
            assert np.median(before) < 28  # blood replaced CSF (sulci are partial-volumed with cortex)
        if kind == "intraventricular" and lesion.lesions[0].variant == "layering":
            assert rows.mean() > 160 / 2  # dependent: posterior half of the image (patient supine)
        if kind == "intraparenchymal":
            assert 18 < np.median(before) < 45  # in parenchyma
            assert np.mean(near_bone) < 0.2


def test_distractors_present_and_valid(ct_set) -> None:
    _, studies = ct_set
    st = studies[1]
    by_series: dict[str, list[pydicom.Dataset]] = {}
    for f in st.files:
        ds = pydicom.dcmread(f)
        by_series.setdefault(ds.SeriesDescription, []).append(ds)
    assert set(by_series) == {"Head 5mm", "Head 5mm bone", "Topogram 0.6 T20s", "Dose Report"}
    scout = by_series["Topogram 0.6 T20s"]
    assert len(scout) == 1 and list(scout[0].ImageType) == ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    assert [float(v) for v in scout[0].ImageOrientationPatient] == [0, 1, 0, 0, 0, -1]
    bone = by_series["Head 5mm bone"]
    assert all(ds.ConvolutionKernel == "H70h" and list(ds.ImageType)[2] == "AXIAL" for ds in bone)
    assert (float(bone[0].WindowCenter), float(bone[0].WindowWidth)) == (500, 2500)
    soft_pos = {tuple(ds.ImagePositionPatient) for ds in by_series["Head 5mm"]}
    assert {tuple(ds.ImagePositionPatient) for ds in bone} <= soft_pos
    dose = by_series["Dose Report"][0]
    assert dose.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert list(dose.ImageType) == ["DERIVED", "SECONDARY", "OTHER"] and dose.pixel_array.max() > 0
    assert len({ds.StudyInstanceUID for group in by_series.values() for ds in group}) == 1


def test_no_distractors(tmp_path: Path) -> None:
    ct = write_ct_head_study(tmp_path, seed=1, n_slices=5, size=64, distractors=False)
    assert {pydicom.dcmread(f).SeriesInstanceUID for f in ct.files} == {ct.primary_series_uid}
    mr = write_mr_sih_study(tmp_path, seed=1, sih=False, size=64, distractors=False, n_axial=4, n_coronal=4)
    assert {pydicom.dcmread(f).SeriesDescription for f in mr.files} == {"T1 AX POST GD", "T1 COR POST GD"}


def test_mr_series_headers_and_labels(mr_set) -> None:
    out, studies = mr_set
    with open(out / "labels.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["StudyInstanceUID", "sih"]
    assert {r[0]: int(r[1]) for r in rows[1:]} == {s.study_uid: s.study_labels["sih"] for s in studies}
    assert sorted(s.study_labels["sih"] for s in studies) == [0, 0, 1, 1]
    for st in studies:
        assert (len(st.findings) >= 2) == bool(st.study_labels["sih"])
        series: dict[str, list[pydicom.Dataset]] = {}
        for f in st.files:
            ds = pydicom.dcmread(f)
            series.setdefault(ds.SeriesDescription, []).append(ds)
        assert set(series) == {"T1 AX PRE", "T2 AX", "T1 AX POST GD", "T1 COR POST GD"}
        for desc, items in series.items():
            assert all(ds.SOPClassUID == pydicom.uid.MRImageStorage and ds.BitsAllocated == 16 for ds in items)
            post = "POST" in desc
            assert all(("ContrastBolusAgent" in ds) == post for ds in items)
            if post:
                assert items[0].ContrastBolusAgent == "Gadobutrol"
        cor = series["T1 COR POST GD"][0]
        assert [float(v) for v in cor.ImageOrientationPatient] == [1, 0, 0, 0, 0, -1]
        assert st.primary_series_uid == series["T1 AX POST GD"][0].SeriesInstanceUID


def test_sih_signs_change_post_contrast_images() -> None:
    size = 128
    changed_any = False
    for seed in range(3):
        pos = render_mr_sih(np.random.default_rng(seed), True, size=size, n_axial=8, n_coronal=8)
        neg = render_mr_sih(np.random.default_rng(seed), False, size=size, n_axial=8, n_coronal=8)
        assert len(pos.signs) >= 2 and neg.signs == ()
        assert (pos.params.scale, pos.params.vent_scale) == (neg.params.scale, neg.params.vent_scale)
        for role in ("t1_ax_post", "t1_cor_post"):
            d = np.abs(pos.series[role].pixels.astype(np.float32) - neg.series[role].pixels.astype(np.float32))
            changed_any |= bool((d > 200).sum() > 100)
        if "pachymeningeal" in pos.signs:
            p, n = pos.series["t1_cor_post"].pixels, neg.series["t1_cor_post"].pixels
            assert (p > 1200).sum() > (n > 1200).sum()
    assert changed_any


def _dciodvfy_errors(path: Path) -> list[str]:
    res = subprocess.run(["/usr/bin/dciodvfy", str(path)], check=False, capture_output=True, text=True, timeout=60)
    return [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")]


def test_dciodvfy_finds_no_errors(ct_set, mr_set) -> None:
    checked = 0
    for st in (ct_set[1][0], mr_set[1][0]):
        seen: set[str] = set()
        for f in st.files:
            parent = f.parent.name
            if parent not in seen:
                seen.add(parent)
                assert _dciodvfy_errors(f) == [], f
                checked += 1
    assert checked == 8


def test_cli_end_to_end(tmp_path: Path) -> None:
    exe = shutil.which("dicom-node", path=str(Path(sys.executable).parent)) or "dicom-node"
    out = tmp_path / "cli"
    res = subprocess.run([exe, "synth", "--kind", "ct-head", "--n", "2", "--seed", "9", "--out", str(out),
                          "--size", "64", "--slices", "5", "--no-progress"], check=False, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert (out / "labels.csv").read_text().count("\n") == 1 + 2 * 5 * 6
    assert len(list(out.glob("ct-head-s9-p*/*/*.dcm"))) == 2 * (5 + 5 + 2)
    bad = subprocess.run([exe, "synth", "--kind", "mr-sih", "--n", "1", "--seed", "1", "--out", str(out),
                          "--slices", "5"], check=False, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--slices" in bad.stderr


def test_a_study_does_not_depend_on_how_many_are_generated(tmp_path: Path) -> None:
    """`--seed 5 --n 2` and `--seed 5 --n 3` share their first two studies: UIDs, lesions and pixels."""
    from dicom_node.synth.studies import ct_findings, sih_flag

    assert [ct_findings(5, i) for i in range(12)] == [ct_findings(5, i) for i in range(12)]
    assert [ct_findings(5, i) for i in range(30)] != [ct_findings(6, i) for i in range(30)]
    for kind, kw in (("ct-head", {"size": 64, "n_slices": 6}), ("mr-sih", {"size": 64, "n_axial": 4, "n_coronal": 4})):
        two = generate(kind, 2, seed=5, out=tmp_path / f"{kind}-2", **kw)
        three = generate(kind, 3, seed=5, out=tmp_path / f"{kind}-3", **kw)
        for a, b in zip(two, three[:2], strict=True):
            assert (a.study_uid, a.findings, a.study_labels, a.slice_labels) == (
                b.study_uid, b.findings, b.study_labels, b.slice_labels)
            for fa, fb in zip(a.files, b.files, strict=True):
                assert pydicom.dcmread(fa).PixelData == pydicom.dcmread(fb).PixelData
    # the mix is still balanced and the same for every n
    flags = [sih_flag(5, i) for i in range(20)]
    assert sum(flags) == 10
    assert [ct_findings(5, i) for i in range(7)] == [f for f in (ct_findings(5, i) for i in range(7))]


def test_ground_truth_seg_and_boxes_match_the_rendered_lesions(tmp_path: Path) -> None:
    from dicom_node.outputs.validate import dciodvfy_errors
    from dicom_node.synth.ground_truth import read_boxes_csv, read_ground_truth

    size, n = 128, 12
    studies = generate("ct-head", 1, seed=5, out=tmp_path / "empty", size=size, n_slices=n)
    st = write_ct_head_study(tmp_path, seed=21, findings=("intraparenchymal", "subdural"), n_slices=n, size=size)
    assert st.seg_file is not None and st.seg_file.is_file() and st.seg_file not in st.files
    assert st.seg_file.parent == tmp_path / "ground-truth"
    assert dciodvfy_errors(st.seg_file) == []
    seg = pydicom.dcmread(st.seg_file)
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == st.study_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == st.primary_series_uid
    assert seg.SegmentSequence[0].SegmentAlgorithmName == "dicom-node phantom generator"
    truth = read_ground_truth(st.seg_file)
    assert set(truth) == {"intraparenchymal", "subdural"}
    primary = {ds.SOPInstanceUID: ds for ds in _read_series(st.files, st.primary_series_uid)}
    for label, by_sop in truth.items():
        # a mask on exactly the slices labelled positive, denser than the tissue just around it
        assert set(by_sop) == {sop for sop, row in st.slice_labels.items() if row[label]}
        inside = np.concatenate([_hu(primary[sop])[m] for sop, m in by_sop.items()])
        ring = np.concatenate([_hu(primary[sop])[binary_dilation(m, iterations=3) & ~m & (_hu(primary[sop]) < 100)
                                                 & (_hu(primary[sop]) > 0)] for sop, m in by_sop.items()])
        assert np.median(inside) > np.median(ring) + 4, label
    boxes = {(b.sop_instance_uid, b.label): b for b in st.boxes}
    assert set(boxes) == {(sop, label) for label, by_sop in truth.items() for sop in by_sop}
    for (sop, label), b in boxes.items():
        rows, cols = np.nonzero(truth[label][sop])
        assert (b.row_min, b.col_min, b.row_max, b.col_max) == (rows.min(), cols.min(), rows.max(), cols.max())
        assert b.pixels == len(rows) and b.study_uid == st.study_uid
    # a set writes boxes.csv for all its studies; a normal study has no SEG
    normal = write_ct_head_study(tmp_path, seed=21, findings=(), n_slices=n, size=size, patient_index=1)
    assert normal.seg_file is None and normal.boxes == ()
    assert read_boxes_csv(tmp_path / "empty" / "boxes.csv") == [b for s in studies for b in s.boxes]


def test_cli_no_seg(tmp_path: Path) -> None:
    exe = shutil.which("dicom-node", path=str(Path(sys.executable).parent)) or "dicom-node"
    out = tmp_path / "cli"
    res = subprocess.run([exe, "synth", "--kind", "ct-head", "--n", "5", "--seed", "9", "--out", str(out),
                          "--size", "64", "--slices", "6", "--no-progress", "--no-seg", "--no-distractors"],
                         check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert not (out / "ground-truth").exists() and (out / "boxes.csv").is_file()
    with open(out / "studies.csv", newline="") as fh:
        positives = sum(int(r["any"]) for r in csv.DictReader(fh))
    boxes = (out / "boxes.csv").read_text().splitlines()
    assert boxes[0].startswith("StudyInstanceUID,SOPInstanceUID,label,") and (len(boxes) > 1) == (positives > 0)
