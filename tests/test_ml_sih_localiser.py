"""Where the SIH signs are: the generator's strong annotation of them, the shipped SIH model's localiser on
studies it never saw (the mark on a sign, inside the head; masks that overlap the generator's; a valid SEG
that references its images and reads back as the masks), the manifest's rules for the localiser, and
`train --model sih-localiser`, which adds one to an SIH model without touching its verdicts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from e2e_helpers import MODELS, SIH_DEMO_VERSION
from outputs_helpers import written_seg
from pydicom.uid import generate_uid

from dicom_node.errors import ModelError
from dicom_node.ml.analysis import AnalysisStatus, instance_ref_from_file
from dicom_node.ml.annotations import seg_masks, sih_annotations
from dicom_node.ml.device import choose_device
from dicom_node.ml.localise import mask_dice, near, signal_head_mask
from dicom_node.ml.manifest import load_manifest
from dicom_node.ml.preprocess import read_image
from dicom_node.ml.registry import Pipeline, load_pipeline
from dicom_node.outputs.codes import SIH_SIGNS, finding_concept, sign_label, sign_named
from dicom_node.outputs.validate import dciodvfy_errors
from dicom_node.synth.anatomy import Tissue
from dicom_node.synth.mr_study import write_mr_sih_study
from dicom_node.synth.phantom_mr import POST_CONTRAST_ROLES, SIGN_TISSUES, render_mr_sih

SEED = 8811  # not a training seed (9241)


@pytest.fixture(scope="module")
def sih() -> Pipeline:
    return load_pipeline(MODELS, "sih", SIH_DEMO_VERSION, choose_device("cpu"))


def _truth(files: tuple[Path, ...]) -> dict[str, np.ndarray]:
    return sih_annotations(files)[0]


def test_sign_masks_are_the_tissues_of_the_signs_shown() -> None:
    for seed in range(6):
        vols = render_mr_sih(np.random.default_rng([seed, 0, 2]), True, size=96, n_axial=6, n_coronal=6)
        assert len(vols.signs) >= 2 and set(vols.sign_masks) == set(POST_CONTRAST_ROLES)
        for role in POST_CONTRAST_ROLES:
            mask = vols.sign_masks[role]
            assert mask.shape == vols.series[role].pixels.shape and mask.any()
            parts = vols.sign_parts[role]
            assert set(parts) == set(vols.signs)  # sign by sign: each its own tissues, none overlapping
            assert np.array_equal(np.sum([p.astype(int) for p in parts.values()], axis=0), mask.astype(int))
            post = vols.series[role].pixels.astype(float)
            # each part is its own tissue: the subdural fluid is dark after contrast, the dura and sinuses bright
            if "subdural" in parts and parts["subdural"].any():
                for bright in ("pachymeningeal", "sinus"):
                    if bright in parts and parts[bright].any():
                        assert post[parts["subdural"]].mean() < 0.7 * post[parts[bright]].mean(), (seed, role, bright)
        shown = {int(t) for s in vols.signs for t in SIGN_TISSUES[s]}
        if int(Tissue.DURA) in shown:  # the enhancing dura is brighter after contrast where the mask says so
            post = vols.series["t1_ax_post"].pixels.astype(float)
            pre = vols.series["t1_ax_pre"].pixels.astype(float)
            m = vols.sign_masks["t1_ax_post"]
            assert (post[m] - pre[m]).mean() > (post[~m] - pre[~m]).mean()
    negative = render_mr_sih(np.random.default_rng([0, 0, 2]), False, size=96, n_axial=6, n_coronal=6)
    assert negative.signs == () and not any(m.any() for m in negative.sign_masks.values())


def test_a_positive_study_gets_a_valid_seg_per_post_contrast_series(tmp_path: Path) -> None:
    st = write_mr_sih_study(tmp_path, 3, True, size=96, patient_index=1, n_axial=6, n_coronal=6)
    assert len(st.seg_files) == 2 and all(f.parent.name == "ground-truth" for f in st.seg_files)
    assert not set(st.seg_files) & set(st.files)  # sending the study never sends its answer
    for f, role in zip(st.seg_files, POST_CONTRAST_ROLES, strict=True):
        assert dciodvfy_errors(f) == []
        ds = pydicom.dcmread(f)
        assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == st.series_uids[role]
        back = seg_masks(f)[1]
        # the finding's segment first, then one per sign shown on this series, each named as the sign
        shown = [sign_label(s) for s in SIH_SIGNS if sign_label(s) in back]
        assert list(back) == ["sih", *shown] and len(shown) >= 1 and set(shown) <= {sign_label(s) for s in st.findings}
        assert [x.SegmentLabel for x in ds.SegmentSequence] == [finding_concept(k).display for k in back]
        for sop, union in back["sih"].items():
            parts = [back[k][sop] for k in shown if sop in back[k]]
            assert np.array_equal(np.sum(parts, axis=0), union.astype(int))  # the signs split the union
    neg = write_mr_sih_study(tmp_path, 3, False, size=96, patient_index=2, n_axial=6, n_coronal=6)
    assert neg.seg_files == ()
    again = write_mr_sih_study(tmp_path / "b", 3, True, size=96, patient_index=1, n_axial=6, n_coronal=6,
                               ground_truth=False)
    assert again.seg_files == () and not (tmp_path / "b" / "ground-truth").exists()


@pytest.mark.parametrize("index", [1, 2, 3])
def test_the_mark_is_on_a_sign_and_the_seg_lines_up(sih: Pipeline, index: int, tmp_path: Path) -> None:
    st = write_mr_sih_study(tmp_path, SEED, True, patient_index=index)
    refs = [instance_ref_from_file(str(f)) for f in st.files]
    result = sih.analyse(refs)
    assert result.status is AnalysisStatus.ANALYSED
    finding = result.findings[0]
    assert finding.present and finding.region_center is not None and finding.region_radius
    truth = _truth(st.seg_files)
    key = next(r for r in refs if r.sop_instance_uid == finding.key_sop_instance_uid)
    row, col = (round(v) for v in finding.region_center)
    assert signal_head_mask(read_image(key.path))[row, col], "the mark is outside the head"
    mask = truth.get(key.sop_instance_uid)
    assert mask is not None and near(mask, row, col), \
        f"{st.findings}: the mark at ({row}, {col}) is not on a sign"
    found = result.masks["sih"]
    assert set(found) <= set(result.evaluated_sop_instance_uids)
    dice = mask_dice(found, truth, result.evaluated_sop_instance_uids) or 0.0  # missed images count
    print(f"{st.findings}: Dice {dice:.2f} over the 3 analysed images")
    assert dice > 0.4, f"{st.findings}: Dice {dice:.2f}"

    # the shipped localiser tells the signs apart: it names the sign under the mark, and that sign is there
    signs = sih_annotations(st.seg_files)[1]
    assert finding.signs and set(finding.signs) <= set(st.findings), (finding.signs, st.findings)
    named = sign_named(finding.detail)
    assert named in finding.signs, finding.detail
    under = [s for s in SIH_SIGNS if key.sop_instance_uid in signs[s] and near(signs[s][key.sop_instance_uid], row, col)]
    assert named in under, f"the mark is on {under}, the report says {finding.detail}"

    path = written_seg(result, refs, tmp_path / "seg.dcm", key.series_uid)
    segments = seg_masks(path)[1]
    back = segments["sih"]
    assert key.sop_instance_uid in back
    assert np.array_equal(back[key.sop_instance_uid], found[key.sop_instance_uid])
    # a segment per sign marked on this series, which together are the finding's segment
    per_sign = [k for k in segments if k != "sih"]
    assert per_sign and set(per_sign) <= {sign_label(s) for s in finding.signs}
    assert sign_label(named) in per_sign
    for sop, union in back.items():
        assert np.array_equal(np.any([segments[k][sop] for k in per_sign if sop in segments[k]], axis=0), union)


def test_the_nodes_own_seg_in_a_site_export_is_not_ground_truth(sih: Pipeline, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A study exported from the PACS holds the node's AI SEG (same codes as an annotation) beside the
    site's own: training and evaluate read only the annotation, never the model's output."""
    from dicom_node.ml.annotations import annotation_segs
    from dicom_node.ml.datasets import find_annotations, scan_dicom

    data = tmp_path / "export"
    st = write_mr_sih_study(data, SEED, True, patient_index=1)
    refs = [instance_ref_from_file(str(f)) for f in st.files]
    result = sih.analyse(refs)
    key = next(r for r in refs if r.sop_instance_uid == result.findings[0].key_sop_instance_uid)
    ours = written_seg(result, refs, data / "ai-result-seg.dcm", key.series_uid)  # as the PACS returns it
    # the same result after a de-identifier blanked the equipment names, and another vendor's AI SEG: both
    # carry IHE AIR's Contributing Equipment item "Processing Algorithm", which marks an AI result
    for name, manufacturer, model in (("blanked", "", ""), ("vendor", "Other AI Inc.", "Bleed Finder")):
        ds = pydicom.dcmread(ours)
        ds.Manufacturer, ds.ManufacturerModelName = manufacturer, model
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(data / f"ai-result-{name}-seg.dcm")
    everything = scan_dicom(data)
    assert sum(r.modality == "SEG" for r in everything) == len(st.seg_files) + 3
    kept = annotation_segs(everything)
    assert sorted(Path(r.path) for r in kept) == sorted(st.seg_files)
    assert "AI result SEGs left out of the annotations" in caplog.text
    kind, by_sop, _ = find_annotations(data, everything, "auto")
    truth = _truth(st.seg_files)
    assert kind == "seg" and {sop for sop, m in by_sop.items() if "sih" in m} == set(truth)
    for sop, mask in truth.items():
        assert np.array_equal(by_sop[sop]["sih"], mask)  # the generator's masks, not the AI's
    # a radiologist's correction of the AI SEG in a viewer keeps the algorithm's Contributing Equipment
    # item, but its segments are no longer AUTOMATIC: an annotation
    corrected = pydicom.dcmread(ours)
    corrected.Manufacturer, corrected.ManufacturerModelName = "Viewer Co.", "Segment Editor"
    for segment in corrected.SegmentSequence:
        segment.SegmentAlgorithmType = "SEMIAUTOMATIC"
    corrected.SOPInstanceUID = corrected.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    (tmp_path / "corrected").mkdir()
    corrected.save_as(tmp_path / "corrected" / "seg.dcm")
    assert [Path(r.path).name for r in annotation_segs(scan_dicom(tmp_path / "corrected"))] == ["seg.dcm"]


def test_a_negative_study_has_no_mark_and_no_mask(sih: Pipeline, tmp_path: Path) -> None:
    st = write_mr_sih_study(tmp_path, SEED, False, patient_index=4)
    result = sih.analyse([instance_ref_from_file(str(f)) for f in st.files])
    assert result.findings[0].present is False and result.masks == {} and result.key_images == []


def _manifest_with(tmp_path: Path, change: dict[str, object]) -> Path:
    src = MODELS / "sih" / SIH_DEMO_VERSION
    folder = tmp_path / "sih" / "x"
    folder.mkdir(parents=True)
    raw = json.loads((src / "manifest.json").read_text())
    for c in raw["components"]:
        (folder / c["weights"]).write_bytes((src / c["weights"]).read_bytes())
        c.update(change.get(c["role"], {}))  # type: ignore[call-overload]
    (folder / "manifest.json").write_text(json.dumps(raw))
    return folder


def test_the_localiser_must_be_a_segmentation_network_and_the_classifiers_must_not(tmp_path: Path) -> None:
    shipped = load_manifest(MODELS / "sih" / SIH_DEMO_VERSION)
    signs = shipped.component("signs")
    assert signs.architecture.endswith("_seg") and signs.size == 256
    with pytest.raises(ModelError, match="localiser"):
        load_manifest(_manifest_with(tmp_path / "a", {"signs": {"architecture": "narrow_resnet"}}))
    with pytest.raises(ModelError, match="one mask per label"):
        load_manifest(_manifest_with(tmp_path / "b", {"axial": {"architecture": "narrow_resnet_seg"}}))
    # the signs a localiser tells apart are the coded ones, each once, and only a localiser names them
    for n, (role, signs, says) in enumerate((("signs", ["sag", "tonsils"], "distinct signs"),
                                             ("signs", ["sag", "sag"], "distinct signs"),
                                             ("axial", ["sag"], "only the SIH localiser"))):
        with pytest.raises(ModelError, match=says):
            load_manifest(_manifest_with(tmp_path / f"c{n}", {role: {"signs": signs}}))
    assert shipped.component("signs").signs == SIH_SIGNS and len(shipped.component("signs").least_share) == 4
    for n, shares in enumerate(([0.01, 0.01], [0.01, 0.01, 0.01, 1.5])):  # one share in [0, 1) per sign
        with pytest.raises(ModelError, match="least_share"):
            load_manifest(_manifest_with(tmp_path / f"d{n}", {"signs": {"least_share": shares}}))


def test_without_a_localiser_the_mark_is_the_explanation_peak_inside_the_head(tmp_path: Path) -> None:
    folder = _manifest_with(tmp_path, {})
    raw = json.loads((folder / "manifest.json").read_text())
    raw["components"] = [c for c in raw["components"] if c["role"] != "signs"]
    raw["version"] = "x"
    (folder / "manifest.json").write_text(json.dumps(raw))
    plain = load_pipeline(tmp_path, "sih", "x", choose_device("cpu"))
    assert plain.localiser is None  # type: ignore[attr-defined]
    st = write_mr_sih_study(tmp_path / "s", SEED, True, patient_index=1)
    refs = [instance_ref_from_file(str(f)) for f in st.files]
    result = plain.analyse(refs)
    finding = result.findings[0]
    assert finding.present and result.masks == {}  # no localiser: no SEG
    key = next(r for r in refs if r.sop_instance_uid == finding.key_sop_instance_uid)
    assert finding.region_center is not None
    row, col = (round(v) for v in finding.region_center)
    assert signal_head_mask(read_image(key.path))[row, col], "the explanation peak is outside the head"


def test_the_head_of_an_mr_image_is_its_bright_region_with_holes_filled() -> None:
    image = np.full((64, 64), 3.0)
    yy, xx = np.mgrid[:64, :64]
    head = (yy - 32) ** 2 + (xx - 30) ** 2 < 20**2
    image[head] = 400.0
    image[(yy - 32) ** 2 + (xx - 30) ** 2 < 6**2] = 10.0  # dark CSF inside: still head
    image[2:4, 60:62] = 500.0  # a bright speck in the background: not head
    mask = signal_head_mask(image)
    assert np.array_equal(mask, head)
    assert not signal_head_mask(np.zeros((8, 8))).any()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cli_in_process() -> Iterator[Callable[[list[str]], int]]:
    """`dicom-node` run in this process (no interpreter start per call); the root log handlers its
    `setup_logging` replaces are put back afterwards."""
    import logging

    from dicom_node.cli import main

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        yield main
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def union_only(data: Path) -> None:
    """Rewrite each ground-truth SEG under `data` with only its segment for all the signs ("Spontaneous
    intracranial hypotension"), as a site that outlines the signs as one segment exports them."""
    from dicom_node.synth.ground_truth import write_mask_seg

    images = [pydicom.dcmread(f) for f in data.rglob("*.dcm") if "ground-truth" not in f.parts]
    for k, path in enumerate(sorted((data / "ground-truth").glob("*.dcm"))):
        series = pydicom.dcmread(path).ReferencedSeriesSequence[0].SeriesInstanceUID
        sources = sorted((ds for ds in images if ds.SeriesInstanceUID == series), key=lambda ds: int(ds.InstanceNumber))
        write_mask_seg(path, "mr-sih", 0, k, sources, {"sih": seg_masks(path)[1]["sih"]})
        assert list(seg_masks(path)[1]) == ["sih"]


def test_a_sign_is_named_above_the_share_that_best_splits_the_validation_studies() -> None:
    from dicom_node.ml.train_sih_signs import least_shares, study_shares

    # two signs, six studies: the first sign's true marks cover 0.02-0.05 of an image, its false specks
    # at most 0.004; the second is marked where it is not as much as where it is (no split is perfect)
    marked = np.array([[0.02, 0.01], [0.05, 0.0], [0.03, 0.02], [0.004, 0.02], [0.001, 0.0], [0.0, 0.01]])
    shown = np.array([[1, 1], [1, 0], [1, 1], [0, 0], [0, 0], [0, 1]], bool)
    first, second = least_shares(marked, shown)
    assert first == pytest.approx((0.004 + 0.02) / 2)  # the midpoint of the gap between false and true
    assert 0 < second <= 0.01  # a best split, and some mark is needed: an empty mask never names a sign
    # per study, the largest share over its three images (role-major, as `stacked` orders them)
    probs = np.zeros((6, 1, 10, 10), np.float32)
    probs[4, 0, :2, :] = 1.0  # study 0's third image: 20 of 100 cells
    probs[1, 0, :1, :5] = 1.0  # study 1's first image: 5 cells
    masks = np.zeros((6, 1, 10, 10), np.uint8)
    masks[2, 0, 0, 0] = 255  # study 0's second image shows it
    got, truth = study_shares(probs, masks, 2)
    assert got[:, 0].tolist() == [0.2, 0.05] and truth[:, 0].tolist() == [True, False]


def test_the_naming_rule_is_chosen_on_the_studies_with_sih() -> None:
    """Signs are named only in a report with SIH present: a study without SIH, where the localiser marks a
    large false "sign", does not move the cut (it would, counted in), and the counts are over SIH studies."""
    from dicom_node.ml.train_sih_signs import naming_rule

    n = 4  # studies: SIH shows the sign (0.04 of an image), SIH without it (0.005), SIH with it (0.03), no SIH (0.02)
    probs = np.zeros((3 * n, 1, 20, 20), np.float32)
    masks = np.zeros((3 * n, 1, 20, 20), np.uint8)
    for study, cells in enumerate((16, 2, 12, 8)):
        probs[study, 0].flat[:cells] = 1.0  # first image of each study (role-major)
    masks[0, 0, 0, 0] = masks[2, 0, 0, 0] = 255
    sih = np.array([True, True, True, False])
    shares, naming = naming_rule(probs, masks, sih)
    assert shares == [pytest.approx((0.005 + 0.03) / 2)]
    assert naming == [{"least_share": shares[0], "studies": 3, "studies_showing": 2, "named_when_shown": 2,
                       "named_when_not_shown": 0}]
    counted_in, _ = naming_rule(probs, masks, np.ones(n, bool))
    assert counted_in[0] > shares[0]  # the study without SIH's large false mark would have raised it


def test_train_adds_a_localiser_and_keeps_the_classifiers(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          cli_in_process: Callable[[list[str]], int]) -> None:
    main = cli_in_process

    data = tmp_path / "data"
    assert main(["synth", "--kind", "mr-sih", "--n", "6", "--seed", "31", "--size", "96", "--no-distractors",
                 "--no-progress", "--out", str(data)]) == 0
    base = MODELS / "sih" / SIH_DEMO_VERSION
    out = tmp_path / "models" / "sih" / "9.9.9-test"
    capsys.readouterr()
    rc = main(["train", "--model", "sih-localiser", "--base", str(base), "--data", str(data), "--out", str(out),
               "--size", "64", "--epochs", "1", "--batch-size", "6"])
    assert rc == 0, capsys.readouterr().err[-2000:]
    new = load_manifest(out)
    old = load_manifest(base)
    for role in ("axial", "coronal1", "coronal2"):
        assert new.component(role).sha256 == old.component(role).sha256 == _sha(out / f"{role}.pt")
    assert new.thresholds == old.thresholds and new.ensemble == old.ensemble
    assert new.component("signs").size == 64 and new.version == "9.9.9-test"
    # the generator's SEGs have a segment per sign: the localiser has a mask per sign, and says how well
    assert new.component("signs").signs == SIH_SIGNS
    localiser = json.loads((out / "manifest.json").read_text())["localiser"]
    assert localiser["from"] == f"sih {SIH_DEMO_VERSION}" and localiser["signs"] == list(SIH_SIGNS)
    assert set(localiser["validation"]["signs"]) == {*SIH_SIGNS, "mark_names_its_sign"}
    shares = new.component("signs").least_share
    assert len(shares) == 4 and all(0 <= v < 1 for v in shares)
    assert [localiser["validation"]["signs"][s]["least_share"] for s in SIH_SIGNS] == list(shares)
    pipeline = load_pipeline(tmp_path / "models", "sih", "9.9.9-test", choose_device("cpu"))
    assert pipeline.localiser is not None and pipeline.sign_names == SIH_SIGNS  # type: ignore[attr-defined]
    # a site whose SEGs have one segment for all the signs gets a localiser with one mask, naming none
    union_only(data)
    capsys.readouterr()
    one = tmp_path / "models" / "sih" / "9.9.8-test"
    assert main(["train", "--model", "sih-localiser", "--base", str(base), "--data", str(data), "--out", str(one),
                 "--size", "64", "--epochs", "1", "--batch-size", "6"]) == 0, capsys.readouterr().err[-2000:]
    assert load_manifest(one).component("signs").signs == ()
    single = load_pipeline(tmp_path / "models", "sih", "9.9.8-test", choose_device("cpu"))
    assert single.sign_names == () and single.localiser is not None  # type: ignore[attr-defined]
    st = write_mr_sih_study(tmp_path / "one", SEED, True, patient_index=1)
    result = single.analyse([instance_ref_from_file(str(f)) for f in st.files])
    finding = result.findings[0]
    assert finding.present and finding.signs == () and finding.detail == ""  # marks, names nothing
    assert set(result.masks) <= {"sih"}
    no_seg = tmp_path / "no-seg"
    assert main(["synth", "--kind", "mr-sih", "--n", "2", "--seed", "31", "--size", "96", "--no-distractors",
                 "--no-progress", "--no-seg", "--out", str(no_seg)]) == 0
    for wrong, says in ((["--data", str(no_seg), "--base", str(base), "--out", str(tmp_path / "m2")], "no annotation DICOM SEG"),
                        (["--base", str(MODELS / "ich" / "0.1.0-synthetic-demo"), "--out", str(tmp_path / "m3")],
                         "a sih-mr model is needed"),
                        (["--base", str(out), "--out", str(out)], "needs a folder of its own"),
                        (["--base", str(base), "--out", str(tmp_path / "m4"), "--size", "63"], "even input size")):
        capsys.readouterr()
        rc = main(["train", "--model", "sih-localiser", "--data", str(data), "--epochs", "1", *wrong])
        err = capsys.readouterr().err
        assert rc == 1 and says in err and "Traceback" not in err, err[-800:]
        assert len(err.strip().splitlines()) == 1, err  # one line says why
    assert load_manifest(out).version == "9.9.9-test"  # --out == --base left the model as it was


def test_evaluate_scores_where_the_shipped_model_marks_sih(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dicom_node.cli import main
    from dicom_node.synth.studies import generate

    data = tmp_path / "data"
    studies = generate("mr-sih", 4, SEED, data)
    positives = sum(st.study_labels["sih"] for st in studies)
    assert 0 < positives < 4
    out = tmp_path / "eval"
    rc = main(["evaluate", "--model", "sih", "--version", SIH_DEMO_VERSION, "--models-dir", str(MODELS),
               "--data", str(data), "--out", str(out), "--bootstrap", "20", "--device", "cpu"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"]["sih"]["n"] == 4 and metrics["labels"]["sih"]["sensitivity"] == 1.0
    loc = metrics["localisation"]["sih"]
    assert loc["n"] == positives and loc["in_head"] == positives and loc["on_sign"] == positives
    assert loc["dice_n"] == positives and loc["dice_mean"] > 0.5
    # the shipped localiser names the signs: the one named at each mark is there, and each sign's masks
    # are scored against the generator's segment for it
    assert loc["named_n"] == positives and loc["named"] == positives
    shown = {s for st in studies if st.study_labels["sih"] for s in st.findings}
    assert {s for s, v in loc["signs"].items() if v["dice_n"]} <= shown
    assert all(v["named_when_not_shown"] == 0 for v in loc["signs"].values()), loc["signs"]
    printed = capsys.readouterr().out
    assert f"{positives} true present findings, mark inside the head {positives}" in printed
    assert f"the sign named at the mark is the one there for {positives} of {positives}" in printed
