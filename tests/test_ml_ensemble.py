"""Seed 002's weighted ensemble: members trained by `train` (a segmentation model on the generator's SEG
masks and a subdural specialist at another input size), weights fitted by `train --model ich-ensemble`; the ensemble loads by
name and version like any model, refuses a member whose checksum differs, combines as its manifest says,
and names itself and its members in the SR."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from outputs_helpers import sr_texts

from dicom_node.errors import ModelError
from dicom_node.ml.analysis import AnalysisStatus, instance_ref_from_file
from dicom_node.ml.device import choose_device
from dicom_node.ml.extra_axial import FEATURE, epidural_length_feature
from dicom_node.ml.ich_ensemble import IchEnsemblePipeline, member_manifests
from dicom_node.ml.ich_outputs import sigmoid
from dicom_node.ml.manifest import ICH_LABELS
from dicom_node.ml.registry import load_pipeline
from dicom_node.ml.train import TrainOptions, train
from dicom_node.outputs import build_outputs
from dicom_node.synth import generate

CPU = choose_device("cpu", 1)
V = "0.0.1"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(models dir with ich-a, ich-b and the ensemble ich-ens, data dir)."""
    root = tmp_path_factory.mktemp("ensemble")
    data = root / "data"
    generate("ct-head", 14, seed=3, out=data, size=64, n_slices=8, distractors=False)
    # members of two input sizes, the second trained on crops of its input (as a full-resolution member is)
    for name, subset, size, crop in (("ich-a", "all", 32, 0), ("ich-b", "subdural", 48, 32)):
        train(TrainOptions(task="ich", data=data, out=root / "models" / name / V, epochs=1, size=size, name=name,
                           version=V, architecture="narrow_resnet_w8_seg", val_fraction=0.3, subset=subset,
                           context_slices=1, extra={"crop": crop}))
    exe = Path(sys.executable).parent / "dicom-node"
    proc = subprocess.run([str(exe), "train", "--model", "ich-ensemble", "--data", str(data), "--models-dir",
                           str(root / "models"), "--members", f"ich-a/{V},ich-b/{V}", "--out",
                           str(root / "models" / "ich-ens" / V)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "models", data


def _study(data: Path, positive: bool) -> list:
    with open(data / "studies.csv") as fh:
        import csv

        row = next(r for r in csv.DictReader(fh) if int(r["any"]) == int(positive))
    return [instance_ref_from_file(str(p)) for p in sorted((data / row["folder"]).rglob("*.dcm"))]


def _reweighted(root: Path, tmp_path: Path, weights: dict[str, float], mask_dice: dict | None = None
                ) -> tuple[Path, dict]:
    """A copy of the models whose ensemble manifest gives every label these member weights (others kept) and
    these calibration mask Dice figures (none: as an ensemble fitted without annotations, whose masks come
    from the finest members trained on a subtype)."""
    copy = tmp_path / "models"
    shutil.copytree(root, copy)
    path = copy / "ich-ens" / V / "manifest.json"
    ens = json.loads(path.read_text())
    for label in ICH_LABELS:
        ens["ensemble"]["weights"][label].update(weights)
    ens["ensemble"].pop("mask_dice", None)
    if mask_dice is not None:
        ens["ensemble"]["mask_dice"] = mask_dice
    else:  # fitted without annotations: no masks to measure the shape feature on either
        ens["ensemble"].pop("shape", None)
    path.write_text(json.dumps(ens))
    return copy, ens


def test_members_record_strong_annotations_and_one_validation_set(models: tuple[Path, Path]) -> None:
    root, _ = models
    a = json.loads((root / "ich-a" / V / "manifest.json").read_text())
    b = json.loads((root / "ich-b" / V / "manifest.json").read_text())
    assert a["training"]["annotations"] == "seg" and a["components"][0]["architecture"] == "narrow_resnet_w8_seg"
    assert b["training"]["subset"] == "subdural" and b["training"]["train_studies"] < a["training"]["train_studies"]
    assert b["training"]["crop"] == 32 and "crop" not in a["training"]
    assert a["training"]["validation_study_uids"] == b["training"]["validation_study_uids"]
    assert a["preprocessing"]["study_aggregation"] == "study_model"
    for label in ICH_LABELS:
        point = a["operating_points"][label]
        assert point["threshold"] == a["thresholds"][label] and "sensitivity" in point
    ens = json.loads((root / "ich-ens" / V / "manifest.json").read_text())
    assert [m["name"] for m in ens["ensemble"]["members"]] == ["ich-a", "ich-b"]
    assert all(w >= 0 for label in ICH_LABELS for w in ens["ensemble"]["weights"][label].values())
    # the subdural specialist's logit enters the subdural probability only
    assert all(ens["ensemble"]["weights"][label]["ich-b"] == 0 for label in ICH_LABELS if label != "subdural")
    # each member's mask Dice per subtype on the studies it was fitted on (the generator's SEGs are there)
    dice = ens["ensemble"]["mask_dice"]
    assert set(dice) == set(ICH_LABELS[1:]) and "best Dice" in ens["ensemble"]["masks"]
    values = [v for per_member in dice.values() for v in per_member.values()]
    assert any(v is not None for v in values) and all(v is None or 0 <= v <= 1 for v in values)


def test_ensemble_loads_by_name_and_combines_its_members(models: tuple[Path, Path]) -> None:
    root, data = models
    p = load_pipeline(root, "ich-ens", V, CPU)
    assert isinstance(p, IchEnsemblePipeline)
    assert p.info.name == "ich-ens" and p.info.version == V
    assert f"ich-a {V}" in p.info.display_name and f"ich-b {V}" in p.info.display_name
    refs = _study(data, positive=True)
    slices = p.select(refs)
    out = p.series_outputs(slices)
    ens = p.manifest.raw["ensemble"]
    z = np.array([ens["intercepts"][label] for label in ICH_LABELS], dtype=np.float64)
    for name in ("ich-a", "ich-b"):
        member = load_pipeline(root, name, V, CPU).series_outputs(slices).study
        w = np.array([ens["weights"][label][name] for label in ICH_LABELS])
        z += w * np.log(np.clip(member, 1e-6, 1 - 1e-6) / (1 - np.clip(member, 1e-6, 1 - 1e-6)))
    # the extra-axial shape feature of the served masks enters the epidural logit with its fitted weight
    shape = ens["shape"]
    assert shape["feature"] == FEATURE and set(shape["weights"]) == {"epidural"}
    spacing = float(pydicom.dcmread(slices[0].path, stop_before_pixels=True).PixelSpacing[0])
    feature = epidural_length_feature(out.masks, ICH_LABELS[1:], spacing * 64 / 24)
    z[ICH_LABELS.index("epidural")] += shape["weights"]["epidural"] * feature
    np.testing.assert_allclose(out.study, sigmoid(z), rtol=1e-5, atol=1e-6)
    # masks of a 32 px and a 48 px member (grids 16 and 24) averaged on the finer grid, as probabilities
    assert out.masks is not None and out.masks.shape == (len(slices), len(ICH_LABELS) - 1, 24, 24)
    assert 0.0 <= float(out.masks.min()) and float(out.masks.max()) <= 1.0
    result = p.analyse(refs)
    assert result.status is AnalysisStatus.ANALYSED and [f.label for f in result.findings] == list(ICH_LABELS)


def test_extra_data_joins_the_fit_and_is_for_the_ensemble_only(models: tuple[Path, Path], tmp_path: Path) -> None:
    """A further calibration folder, enriched with the two subtypes the members confuse, joins the fit."""
    root, data = models
    generate("ct-head", 4, seed=4, out=tmp_path / "extra", size=64, n_slices=8, distractors=False,
             only=("epidural", "subdural"))
    exe = Path(sys.executable).parent / "dicom-node"
    proc = subprocess.run([str(exe), "train", "--model", "ich-ensemble", "--data", str(data), "--models-dir",
                           str(root), "--members", f"ich-a/{V},ich-b/{V}", "--out", str(tmp_path / "ens"),
                           "--extra-data", str(tmp_path / "extra")], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ens = json.loads((tmp_path / "ens" / "manifest.json").read_text())
    validated = json.loads((root / "ich-a" / V / "manifest.json").read_text())["training"]["validation_study_uids"]
    assert ens["training"]["validation_studies"] == len(validated) + 4
    assert "and 4 calibration studies of" in ens["ensemble"]["fitted_on"]
    proc = subprocess.run([str(exe), "train", "--model", "ich", "--data", str(data), "--out", str(tmp_path / "m"),
                           "--extra-data", str(data)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "--extra-data applies to --model ich-ensemble only" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "m").exists()


def test_wrong_member_checksum_is_refused(models: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = models
    copy = tmp_path / "models"
    shutil.copytree(root, copy)
    path = copy / "ich-b" / V / "manifest.json"
    member = json.loads(path.read_text())
    member["thresholds"]["subdural"] = 0.01  # a changed member: its manifest's sha256 changes
    path.write_text(json.dumps(member))
    with pytest.raises(ModelError, match="member ich-b 0.0.1 has manifest sha256"):
        load_pipeline(copy, "ich-ens", V, CPU)
    shutil.copytree(root / "ich-b", copy / "ich-b", dirs_exist_ok=True)
    load_pipeline(copy, "ich-ens", V, CPU)  # restored: loads again
    (copy / "ich-a" / V / "weights.pt").write_bytes(b"not the weights")
    with pytest.raises(ModelError, match="sha256"):
        load_pipeline(copy, "ich-ens", V, CPU)
    shutil.rmtree(copy / "ich-a")
    with pytest.raises(ModelError, match="member ich-a 0.0.1 is missing"):
        load_pipeline(copy, "ich-ens", V, CPU)
    ens = copy / "ich-ens" / V / "manifest.json"
    twice = json.loads(ens.read_text())
    twice["ensemble"]["members"][1] = {**twice["ensemble"]["members"][0], "version": "0.0.2"}
    ens.write_text(json.dumps(twice))  # two versions of one name would share one set of weights
    with pytest.raises(ModelError, match="distinct names"):
        load_pipeline(copy, "ich-ens", V, CPU)
    with pytest.raises(ModelError, match="distinct names"):
        member_manifests(root, ["ich-a/" + V, "ich-a/" + V])


def test_sr_names_the_ensemble_and_its_members(models: tuple[Path, Path]) -> None:
    root, data = models
    p = load_pipeline(root, "ich-ens", V, CPU)
    refs = _study(data, positive=False)
    result = p.analyse(refs)
    sources = {r.sop_instance_uid: pydicom.dcmread(r.path) for r in refs}
    sr = build_outputs(result, sources, 1)[0].dataset
    names = sr_texts(sr)
    assert any(f"ich-a {V}" in t and f"ich-b {V}" in t for t in names), names
    assert p.info.manifest_sha256 in " ".join(names)


def test_specialist_subsets_choose_their_studies_and_the_normal_ones() -> None:
    """Each specialist learns from the studies with its subtype plus the normal ones; the intraparenchymal
    specialist also gets the intraventricular studies, and the subarachnoid-vs-extra-axial one the subdural
    and epidural ones: the look-alikes an all-ICH network confuses them with."""
    from dicom_node.ml.datasets import IchData
    from dicom_node.ml.train_ich import subset_studies

    # one slice per study: normal, epidural, intraparenchymal, intraventricular, subarachnoid, subdural
    order = ["normal", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"]
    labels = np.zeros((6, len(ICH_LABELS)), dtype=np.float32)
    for i, name in enumerate(order[1:], 1):
        labels[i, 0] = labels[i, ICH_LABELS.index(name)] = 1
    data = IchData(np.zeros((6, 1, 4, 4), np.float16), labels, np.arange(6), order, order)
    studies = np.arange(6)

    def chosen(subset: str) -> list[str]:
        return [order[s] for s in subset_studies(data, studies, subset)]

    assert chosen("all") == order
    assert chosen("subdural") == ["normal", "subdural"]
    assert chosen("subarachnoid") == ["normal", "subarachnoid"]
    assert chosen("subarachnoid-vs-extra-axial") == ["normal", "epidural", "subarachnoid", "subdural"]
    assert chosen("intraparenchymal") == ["normal", "intraparenchymal", "intraventricular"]
    assert chosen("intraparenchymal-only") == ["normal", "intraparenchymal"]
    assert chosen("intraparenchymal-and-extra-axial") == order  # ventricular blood as its hard negative
    assert chosen("epidural-vs-subdural") == ["normal", "epidural", "subdural"]
    with pytest.raises(ValueError, match="subset must be one of"):
        subset_studies(data, studies, "parenchyma")


def test_each_specialist_subset_names_the_masks_an_ensemble_averages() -> None:
    """A specialist's masks are averaged only for the subtypes its subset is built around: the
    subarachnoid-vs-extra-axial member's parenchymal and ventricular outlines (learned from the few such
    bleeds lying beside its subtypes) would otherwise draw part of every intraparenchymal outline."""
    from types import SimpleNamespace

    from dicom_node.ml.ich_ensemble import mask_labels_learned

    def learned(subset: str) -> list[str]:
        manifest = SimpleNamespace(raw={"training": {"subset": subset}})
        flags = mask_labels_learned(manifest)  # type: ignore[arg-type]
        return [label for label, f in zip(ICH_LABELS[1:], flags, strict=True) if f]

    assert learned("all") == list(ICH_LABELS[1:])
    assert learned("small-lesion") == list(ICH_LABELS[1:])
    assert learned("subarachnoid") == ["subarachnoid"]
    assert learned("subarachnoid-vs-extra-axial") == ["epidural", "subarachnoid", "subdural"]
    assert learned("intraparenchymal") == ["intraparenchymal", "intraventricular"]
    assert learned("intraparenchymal-only") == ["intraparenchymal"]
    assert learned("intraparenchymal-and-extra-axial") == ["epidural", "intraparenchymal", "subarachnoid", "subdural"]
    assert learned("epidural-vs-subdural") == ["epidural", "subdural"]


def test_a_subtype_mask_comes_from_the_members_trained_on_it(models: tuple[Path, Path], tmp_path: Path) -> None:
    """ich-b (subdural specialist) learned only the subdural mask: its epidural output is not averaged in;
    both members learned the subdural mask, and ich-b's, on the finer grid (48 px input, 24 px masks against
    ich-a's 16), draws it; ich-a's epidural mask is resampled to that grid."""
    from dicom_node.ml.ich_ensemble import on_grid

    root, data = models
    copy, _ = _reweighted(root, tmp_path, {"ich-a": 0.25, "ich-b": 0.75})
    p = load_pipeline(copy, "ich-ens", V, CPU)
    slices = p.select(_study(data, positive=True))
    a = on_grid(load_pipeline(copy, "ich-a", V, CPU).series_outputs(slices).masks, 24)
    b = on_grid(load_pipeline(copy, "ich-b", V, CPU).series_outputs(slices).masks, 24)
    out = p.series_outputs(slices).masks
    assert out is not None
    sdh, edh = ICH_LABELS.index("subdural") - 1, ICH_LABELS.index("epidural") - 1
    np.testing.assert_allclose(out[:, edh], a[:, edh], atol=1e-6)
    np.testing.assert_allclose(out[:, sdh], b[:, sdh], atol=1e-6)
    assert not np.allclose(a[:, sdh], b[:, sdh])  # ich-a's coarser subdural mask would have changed it
    assert not np.allclose(a[:, edh], b[:, edh])  # the rule changed something: b's epidural output differs


def test_the_member_whose_calibration_mask_matched_best_draws_it(models: tuple[Path, Path], tmp_path: Path) -> None:
    """With the members' mask Dice on the calibration studies in the manifest, a subtype's mask comes from the
    best of the members trained on it, not from the finest grid: here ich-a's coarser subdural mask, since
    ich-b's (the finer) matched worse; epidural, which only ich-a learned, stays ich-a's."""
    from dicom_node.ml.ich_ensemble import on_grid

    root, data = models
    copy, _ = _reweighted(root, tmp_path, {"ich-a": 0.25, "ich-b": 0.75},
                          {"subdural": {"ich-a": 0.8, "ich-b": 0.1}, "epidural": {"ich-a": 0.5, "ich-b": 0.9}})
    p = load_pipeline(copy, "ich-ens", V, CPU)
    slices = p.select(_study(data, positive=True))
    a = on_grid(load_pipeline(copy, "ich-a", V, CPU).series_outputs(slices).masks, 24)
    out = p.series_outputs(slices).masks
    assert out is not None
    sdh, edh = ICH_LABELS.index("subdural") - 1, ICH_LABELS.index("epidural") - 1
    np.testing.assert_allclose(out[:, sdh], a[:, sdh], atol=1e-6)
    np.testing.assert_allclose(out[:, edh], a[:, edh], atol=1e-6)  # ich-b's 0.9 is for a mask it never learned


def test_mask_dice_of_each_member_against_the_annotations() -> None:
    """`member_mask_dice`: a member whose mask is the annotation scores 1, one whose channel is dead scores 0,
    both on the finest member's grid; a subtype the study does not have, or a member with no mask head, is NaN."""
    from dicom_node.ml.analysis import InstanceRef
    from dicom_node.ml.datasets import slice_masks
    from dicom_node.ml.ich_findings import SeriesOutputs
    from dicom_node.ml.train_ensemble import member_mask_dice

    refs = [InstanceRef(f"/x/{i}.dcm", "1.2", "1.2.3", f"1.2.3.{i}", "1.2.840.10008.5.1.4.1.1.2", "CT") for i in range(3)]
    hu = [np.zeros((64, 64), np.float32) for _ in refs]
    blood = np.zeros((64, 64), bool)
    blood[10:30, 5:12] = True
    segs = {refs[1].sop_instance_uid: {"subdural": blood}}
    truth = np.stack([slice_masks((64, 64), 64, segs.get(r.sop_instance_uid), None) for r in refs]) / 255.0
    dead = np.zeros_like(truth)
    coarse = truth.reshape(3, 5, 16, 2, 16, 2).mean(axis=(3, 5))  # the same mask on a grid half as fine

    def outputs(masks: np.ndarray | None) -> SeriesOutputs:
        return SeriesOutputs(refs, hu, np.zeros((3, 3, 64, 64)), [], np.zeros((3, 6)), np.zeros(6), masks)

    dice = member_mask_dice([outputs(truth), outputs(dead), outputs(coarse), outputs(None)], segs, {})
    sdh = ICH_LABELS.index("subdural") - 1
    assert dice[0, sdh] == 1.0 and dice[1, sdh] == 0.0 and 0.8 < dice[2, sdh] <= 1.0
    assert np.isnan(np.delete(dice, sdh, axis=1)).all() and np.isnan(dice[3]).all()


def test_a_malformed_mask_dice_is_refused(models: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = models
    copy, _ = _reweighted(root, tmp_path, {}, {"subdural": {"ich-a": 1.5}})
    with pytest.raises(ModelError, match=r"mask_dice\['subdural'\]\['ich-a'\] must be a number in \[0, 1\]"):
        load_pipeline(copy, "ich-ens", V, CPU)
    copy, _ = _reweighted(root, tmp_path / "misspelt", {}, {"subdural": {"ich-aa": 0.5}})
    with pytest.raises(ModelError, match=r"mask_dice\['subdural'\] names \['ich-aa'\], which are not members"):
        load_pipeline(copy, "ich-ens", V, CPU)


def test_crop_training_centres_on_blood_and_labels_only_what_the_crop_holds() -> None:
    """Full-resolution crop training (`train --crop`): a crop of a slice with blood holds that blood (it
    is labelled positive), a crop elsewhere in the head is a negative, and crops are taken inside the head."""
    from dicom_node.ml.datasets import IchData
    from dicom_node.ml.train_ich import _crops

    size, crop = 64, 16
    x = np.zeros((2, 3, size, size), np.float16)
    x[:, 2, 8:56, 8:56] = 0.5  # the head (soft-tissue window above zero)
    masks = np.zeros((2, 5, size // 2, size // 2), np.uint8)
    masks[0, 1, 20:24, 6:10] = 255  # slice 0: intraparenchymal blood at full-res rows 40-47, cols 12-19
    labels = np.zeros((2, len(ICH_LABELS)), np.float32)
    labels[0, 0] = labels[0, 2] = 1
    data = IchData(x, labels, np.arange(2), ["a", "b"], ["a", "b"], masks, "seg")
    rng = np.random.default_rng(0)
    held = positives = 0
    for _ in range(200):
        xs, ms, ys = _crops(data, np.array([0, 1]), crop, rng)
        assert xs.shape == (2, 3, crop, crop) and ms.shape == (2, 5, crop // 2, crop // 2)
        for k in range(2):
            assert bool(ys[k, 2]) == (ms[k, 1].sum() >= 3) and ys[k, 0] == ys[k, 1:].max()
            assert xs[k, 2].max() > 0  # inside the head, never a crop of air alone
        held += ms[0, 1].sum() > 0
        positives += ys[0, 2]
        assert ys[1].sum() == 0
    assert 0.6 < positives / 200 <= held / 200 <= 1.0  # four in five crops of a bleeding slice hold its blood


def test_the_finest_members_trained_on_a_subtype_draw_its_mask() -> None:
    """Members on one grid share a subtype's mask by their weights; a member on a finer grid (the
    full-resolution parenchymal specialist) draws alone the subtypes it learned, since a coarse mask averaged
    in blurs a small clot under the 0.5 level; a subtype it did not learn keeps the coarse members' mean."""
    from dicom_node.ml.ich_ensemble import mask_shares

    weights = np.array([[0.25, 0.5, 0.3], [0.75, 0.5, 0.0]])  # 2 members x 3 subtypes
    learned = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    same = mask_shares(weights, learned, np.array([64, 64]))
    np.testing.assert_allclose(same, [[1.0, 0.5, 1.0], [0.0, 0.5, 0.0]])  # member 1 did not learn subtype 0
    finer = mask_shares(weights, learned, np.array([64, 256]))
    np.testing.assert_allclose(finer, [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # subtype 2: member 1 has no weight
    none = mask_shares(np.zeros((2, 3)), learned, np.array([64, 256]))
    assert not none.any()
    # with calibration mask Dice: the best member trained on a subtype draws it alone, whatever its grid or
    # weight (subtype 1: the finer member's channel is dead); a Dice for a mask not learned does not count
    # (subtype 0); a subtype with none measured keeps the grid rule (subtype 2)
    quality = np.array([[0.6, 0.7, np.nan], [0.9, 0.0, np.nan]])
    best = mask_shares(weights, learned, np.array([64, 256]), quality)
    np.testing.assert_allclose(best, [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])


def test_a_member_without_weight_is_not_run_and_changes_nothing(models: tuple[Path, Path], tmp_path: Path) -> None:
    """A member whose fitted weights are all 0 (ICH 0.6.0's subdural specialist) moves neither a probability
    nor a mask: the ensemble names it but does not run it, and gives what running it would."""
    root, data = models
    copy, ens = _reweighted(root, tmp_path, {"ich-b": 0.0})
    p = load_pipeline(copy, "ich-ens", V, CPU)
    assert isinstance(p, IchEnsemblePipeline)
    assert [m.info.name for m in p.members] == ["ich-a", "ich-b"] and [m.info.name for m in p.running] == ["ich-a"]
    assert f"ich-b {V}" in p.info.display_name
    slices = p.select(_study(data, positive=True))
    out = p.series_outputs(slices)
    member = load_pipeline(copy, "ich-a", V, CPU).series_outputs(slices)
    w = np.array([ens["ensemble"]["weights"][label]["ich-a"] for label in ICH_LABELS])
    b = np.array([ens["ensemble"]["intercepts"][label] for label in ICH_LABELS])
    study = np.clip(member.study, 1e-6, 1 - 1e-6)
    np.testing.assert_allclose(out.study, sigmoid(b + w * np.log(study / (1 - study))), rtol=1e-5, atol=1e-6)
    assert out.masks is not None and member.masks is not None
    assert out.masks.shape == member.masks.shape  # ich-a's grid: the unrun member's finer one is not used
    drawn = (w[1:] > 0)[None, :, None, None]  # a subtype no running member weighs has no mask
    assert drawn.any()
    np.testing.assert_allclose(out.masks, np.where(drawn, member.masks.astype(np.float32), 0.0), atol=1e-3)


def test_members_with_one_input_share_its_preprocessing(models: tuple[Path, Path]) -> None:
    from dicom_node.ml.ich_ensemble import run_members

    root, data = models
    a1, a2, b = (load_pipeline(root, name, V, CPU) for name in ("ich-a", "ich-a", "ich-b"))
    slices = a1.select(_study(data, positive=True))
    logits, outs = run_members([a1, a2, b], slices, 4, CPU)  # type: ignore[list-item]
    assert outs[0].inputs is outs[1].inputs and outs[2].inputs is not outs[0].inputs
    np.testing.assert_array_equal(logits[0], logits[1])
    assert outs[2].inputs.shape[-1] == 48 and outs[0].inputs.shape[-1] == 32


def test_the_fit_weighs_the_shape_feature_against_false_epidurals(models: tuple[Path, Path], tmp_path: Path) -> None:
    """Calibration studies where the members call half the subdural crescents epidural, and the shape feature
    (measured on the masks of the best-Dice members) marks exactly those: the fitted epidural weight of the
    feature is negative and the out-of-fold threshold then keeps them out. Without annotations (no Dice, so
    no telling which masks will be served) the ensemble is fitted without the feature."""
    from dicom_node.ml.train_ensemble import Calibration, shape_members, write_ensemble

    root, data = models
    manifests = member_manifests(root, [f"ich-a/{V}", f"ich-b/{V}"])
    rng = np.random.default_rng(0)
    n, epi, sdh = 160, ICH_LABELS.index("epidural"), ICH_LABELS.index("subdural")
    kind = np.arange(n) % 4  # normal, epidural, subdural, subdural the members call epidural
    y = np.zeros((n, len(ICH_LABELS)))
    y[kind > 0, 0], y[kind == 1, epi], y[kind >= 2, sdh] = 1, 1, 1
    x = rng.normal(-3.0, 1.0, (n, 2, len(ICH_LABELS))) + 6.0 * y[:, None, :]
    x[kind == 3, :, epi] += 6.0
    dice = np.full((n, 2, len(ICH_LABELS) - 1), np.nan)
    dice[:, 0, epi - 1], dice[:, 0, sdh - 1], dice[:, 1, sdh - 1] = 0.7, 0.8, 0.5  # ich-a draws both masks
    feature = np.full((n, 2, 2), np.nan)
    feature[:, 0, 0] = np.where(kind == 3, 1.0, 0.0)
    cal = Calibration(x, y, dice, feature)
    assert shape_members(manifests, cal.mean_dice()) == (0, 0)
    folder = write_ensemble(tmp_path / "ens", manifests, cal, "synthetic", "ich-x", V, True, data)
    ens = json.loads((folder / "manifest.json").read_text())
    assert ens["ensemble"]["shape"]["weights"]["epidural"] < -2.0
    point = ens["operating_points"]["epidural"]
    assert point["sensitivity"] >= 0.95 and point["specificity"] >= 0.95
    unannotated = Calibration(x, y, np.full_like(dice, np.nan), np.full_like(feature, np.nan))
    folder = write_ensemble(tmp_path / "plain", manifests, unannotated, "synthetic", "ich-y", V, True, data)
    assert "shape" not in json.loads((folder / "manifest.json").read_text())["ensemble"]


def test_the_shape_weight_moves_only_the_epidural_logit(models: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = models
    copy, ens = _reweighted(root, tmp_path, {}, ens_mask_dice(root))
    ens["ensemble"]["shape"]["weights"]["epidural"] = -3.0
    (copy / "ich-ens" / V / "manifest.json").write_text(json.dumps(ens))
    p = load_pipeline(copy, "ich-ens", V, CPU)
    logits = [np.zeros(len(ICH_LABELS)), np.zeros(len(ICH_LABELS))]
    moved = np.log(p.combine(logits, 1.5)) - np.log1p(-p.combine(logits, 1.5))
    still = np.log(p.combine(logits, 0.0)) - np.log1p(-p.combine(logits, 0.0))
    expected = np.zeros(len(ICH_LABELS))
    expected[ICH_LABELS.index("epidural")] = -4.5
    np.testing.assert_allclose(moved - still, expected, atol=1e-6)
    # the feature is measured on the served masks in millimetres: a crescent 20 grid pixels long, called
    # epidural, on the fixture's 64 px slices (grid 24) runs well past the reference length
    _, data = models
    out = p.series_outputs(p.select(_study(data, positive=True)))
    masks = np.zeros((3, len(ICH_LABELS) - 1, 24, 24), np.float32)
    masks[1, ICH_LABELS.index("epidural") - 1, 2:22, 2:4] = 1.0
    spacing = float(pydicom.dcmread(out.slices[0].path, stop_before_pixels=True).PixelSpacing[0])
    assert p.shape_feature(out, masks) == pytest.approx(
        min(2.0, float(np.log2(20 * spacing * 64 / 24 / 64))), abs=0.1) and p.shape_feature(out, masks) > 0.5
    assert p.shape_feature(out, None) == 0.0
    ens["ensemble"].pop("mask_dice")
    (copy / "ich-ens" / V / "manifest.json").write_text(json.dumps(ens))
    with pytest.raises(ModelError, match="shape feature needs the mask_dice"):
        load_pipeline(copy, "ich-ens", V, CPU)


def ens_mask_dice(root: Path) -> dict:
    return json.loads((root / "ich-ens" / V / "manifest.json").read_text())["ensemble"]["mask_dice"]
