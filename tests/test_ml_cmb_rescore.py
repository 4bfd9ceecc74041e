"""The microbleed candidate rescorer (`ml/cmb_rescore.py`): fitting with folds by study, the confidence the
bleed threshold applies to, and a manifest that carries one."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from e2e_helpers import CMB_DEMO_VERSION, MODELS

from dicom_node.errors import ModelError
from dicom_node.ml.analysis import AnalysisStatus
from dicom_node.ml.cmb_rescore import SHAPE_FEATURES, CandidateRescorer, features, fit, matrix, rescore
from dicom_node.ml.datasets import scan_dicom
from dicom_node.ml.device import choose_device
from dicom_node.ml.microbleeds import INSTANCE_FEATURES, CmbModel, CmbSettings, reported
from dicom_node.ml.mil import AttentionMIL
from dicom_node.ml.registry import load_pipeline
from dicom_node.ml.train_cmb import rescore_candidates
from dicom_node.synth import generate

DET = 6  # detector feature width of the toy candidates


def _disc(center: tuple[int, int], radius: float, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius ** 2


def _candidate(rng: np.random.Generator, bleed: bool, where: tuple[int, int], score: float) -> SimpleNamespace:
    """A toy candidate: the detector scores bleeds and mimics alike; a bleed is round (1-2 slices) and dark
    around it (context < 1), a mimic spans more slices in bright surroundings."""
    context = rng.normal(0.75 if bleed else 1.1, 0.08)
    slices = int(rng.integers(1, 3)) if bleed else int(rng.integers(2, 5))
    instance = [0.5, 0.0, 0.3, 0.1, 1.2, score, slices / 3.0, context]
    return SimpleNamespace(masks={k: _disc(where, 3) for k in range(4, 4 + slices)}, instance=instance,
                           extent_mm=2.0 * slices, diameter_mm=4.0, features=rng.normal(0, 1, DET).astype(np.float32),
                           score=score, confidence=score, tubular=False, key_slice=4, location="lobar")


def _toy_studies(n: int, seed: int = 0) -> tuple[list[SimpleNamespace], list[list[SimpleNamespace]]]:
    rng = np.random.default_rng(seed)
    studies, candidates = [], []
    for _ in range(n):
        places = [(12, 12), (12, 50), (50, 12), (50, 50)]
        bleeds = [{4: _disc(p, 3)} for p in places[:2]]
        found = [_candidate(rng, True, p, float(rng.uniform(0.3, 0.9))) for p in places[:2]]
        found += [_candidate(rng, False, p, float(rng.uniform(0.3, 0.9))) for p in places[2:]]
        studies.append(SimpleNamespace(bleeds=bleeds))
        candidates.append(found)
    return studies, candidates


def test_fit_chooses_strength_by_folds_and_learns_what_the_detector_score_misses() -> None:
    _, candidates = _toy_studies(12)
    rows = [c for cs in candidates for c in cs]
    x = matrix(rows)
    assert x.shape == (48, len(INSTANCE_FEATURES) + len(SHAPE_FEATURES) + DET)
    y = np.array([c.instance[7] < 0.92 for c in rows])  # the toy's truth: dark surroundings
    groups = np.repeat(np.arange(12), 4)
    net, oof, record = fit(x, y, groups)
    assert record["folds"] == 5 and record["C"] in (0.003, 0.01, 0.03, 0.1)
    assert record["studies"] == 12 and record["bleeds"] == int(y.sum())
    assert record["cross_fitted_auc"] > 0.95  # the detector score alone is at chance on this toy
    p = net.probabilities(x)
    assert ((p >= 0.5) == y).mean() > 0.95
    assert not np.allclose(p, oof)  # each study's cross-fitted score comes from a model that did not see it
    assert net.probabilities(np.zeros((0, x.shape[1]))).shape == (0,)


def test_rescoring_sets_the_confidence_the_threshold_and_order_use() -> None:
    torch.manual_seed(0)
    width = len(INSTANCE_FEATURES) + DET
    rescorer = CandidateRescorer(width + len(SHAPE_FEATURES))
    with torch.no_grad():  # confidence rises with the "context" feature only
        rescorer.linear.weight.zero_()
        rescorer.linear.weight[0, 7] = 10.0
        rescorer.linear.bias.fill_(-10.0)
    rng = np.random.default_rng(1)
    high_score = _candidate(rng, False, (12, 12), 0.95)
    high_score.instance[7] = 0.5  # confidence sigmoid(-5)
    low_score = _candidate(rng, True, (40, 40), 0.2)
    low_score.instance[7] = 1.5  # confidence sigmoid(5)
    rescore(rescorer, [high_score, low_score])
    assert high_score.confidence == pytest.approx(1 / (1 + np.exp(5)), rel=1e-4)
    assert low_score.confidence == pytest.approx(1 / (1 + np.exp(-5)), rel=1e-4)
    assert reported([high_score, low_score], 0.5) == [low_score]
    model = CmbModel(CmbSettings(size=64, percentiles=(1, 99), threshold=0.5), torch.nn.Identity(),
                     AttentionMIL(width, 4).eval(), torch.device("cpu"), rescorer=rescorer)
    result = model.result([low_score, high_score], 0.5)
    assert result.bleeds == [low_score] and result.probability == pytest.approx(low_score.confidence)
    assert features(low_score)[len(INSTANCE_FEATURES)] == len(low_score.masks)  # slices spanned follow the 8


def test_training_fits_the_rescorer_on_honest_scores_or_says_why_not() -> None:
    studies, candidates = _toy_studies(12, seed=3)
    others = _toy_studies(2, seed=4)[1]
    rescorer, record = rescore_candidates(studies, candidates, others)  # type: ignore[arg-type]
    assert rescorer is not None and record["candidates"] == 48 and record["bleeds"] == 24
    conf = np.array([c.confidence for cs in candidates for c in cs])
    truth = np.array([k < 2 for cs in candidates for k in range(len(cs))])
    assert conf[truth].min() > conf[~truth].max() or np.mean((conf >= 0.5) == truth) > 0.9
    mimic = others[0][3]
    assert mimic.confidence != mimic.score and mimic.confidence < 0.5  # studies it did not see: the fitted one
    few, why = rescore_candidates(studies[:3], candidates[:3], [])  # type: ignore[arg-type]
    assert few is None and "too few to fit" in why["skipped"]


def _with_rescorer(source: Path, folder: Path, width: int | None = None) -> dict:
    shutil.copytree(source, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    in_features = len(INSTANCE_FEATURES) + len(SHAPE_FEATURES)  # + the demo detector's 128
    net = CandidateRescorer(width or in_features + 128)
    with torch.no_grad():
        net.linear.weight.zero_()
        net.linear.bias.fill_(5.0)  # every candidate a bleed, confidence 0.993
    torch.save(net.state_dict(), folder / "rescorer.pt")
    sha = hashlib.sha256((folder / "rescorer.pt").read_bytes()).hexdigest()
    manifest.update({"version": folder.name, "rescorer": {"architecture": "logistic",
                                                          "in_features": width or in_features + 128}})
    manifest["components"] = [*(c for c in manifest["components"] if c["role"] != "rescorer"),
                              {"role": "rescorer", "architecture": "logistic", "weights": "rescorer.pt", "sha256": sha}]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_a_manifest_with_a_rescorer_loads_reports_its_confidence_and_is_checked(tmp_path: Path) -> None:
    models = tmp_path / "models"
    demo = MODELS / "cmb" / CMB_DEMO_VERSION
    _with_rescorer(demo, models / "cmb" / "9.0.0-test")
    p = load_pipeline(models, "cmb", "9.0.0-test", choose_device("cpu", 1))
    assert p.model.rescorer is not None
    data = tmp_path / "data"
    generate("mr-swi", 1, seed=5, out=data, size=256, n_slices=12)
    refs = [r for r in scan_dicom(data) if r.modality == "MR"]
    analysis = p.analyse(refs)
    assert analysis.status == AnalysisStatus.ANALYSED
    bleeds = [f for f in analysis.findings if f.label == "microbleed"]
    assert bleeds and {round(f.probability, 3) for f in bleeds} == {0.993}  # the rescorer's, not the detector's
    _with_rescorer(demo, models / "cmb" / "9.0.1-test", width=12)  # not what this detector's candidates give
    with pytest.raises(ModelError, match="rescorer.in_features"):
        load_pipeline(models, "cmb", "9.0.1-test", choose_device("cpu", 1))
    bad = models / "cmb" / "9.0.2-test"
    manifest = _with_rescorer(demo, bad)
    (bad / "rescorer.pt").write_bytes(b"not the weights")
    with pytest.raises(ModelError, match="sha256"):
        load_pipeline(models, "cmb", "9.0.2-test", choose_device("cpu", 1))
    manifest["components"] = manifest["components"][:-1]
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="roles"):
        load_pipeline(models, "cmb", "9.0.2-test", choose_device("cpu", 1))


def test_a_fold_without_bleeds_to_learn_from_gives_its_prior_instead_of_failing() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (60, 12)).astype(np.float32)
    groups = np.repeat(np.arange(6), 10)
    y = groups == 0  # every bleed in one study: the fold that holds it out has none to learn from
    x[y, 0] += 3.0
    net, oof, record = fit(x, y, groups)
    assert np.all(oof[y] == 0.0)  # that fold's model would be the prior of its training studies: no bleed
    assert record["bleeds"] == 10 and net.probabilities(x[:1]).shape == (1,)
