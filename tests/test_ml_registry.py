"""Registry: a checkpoint written by `train` loads by manifest; wrong checksums and unsupported input
specs are refused with a clear ModelError; pipelines never raise for unsuitable studies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from ml_helpers import write_ct_study, write_ich_dataset

from dicom_node.config import parse_config
from dicom_node.errors import ModelError
from dicom_node.ml.analysis import AnalysisStatus, StudyAnalysis
from dicom_node.ml.device import choose_device
from dicom_node.ml.manifest import ICH_LABELS
from dicom_node.ml.registry import Pipeline, load_pipeline, load_pipelines
from dicom_node.ml.train import TrainOptions, train

CPU = choose_device("cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir holding `ich-tiny/0.0.1`, trained by `train` for one epoch on 6 small studies."""
    root = tmp_path_factory.mktemp("registry")
    write_ich_dataset(root / "data", 6, seed=0, n=9, size=48)
    train(TrainOptions(task="ich", data=root / "data", out=root / "models" / "ich-tiny" / "0.0.1", epochs=1,
                       size=32, name="ich-tiny", version="0.0.1", architecture="narrow_resnet_w8"))
    return root / "models"


def _copy(trained: Path, tmp_path: Path, edit: Any = None) -> Path:
    models = tmp_path / "models"
    shutil.copytree(trained, models)
    if edit is not None:
        path = models / "ich-tiny" / "0.0.1" / "manifest.json"
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return models


def test_checkpoint_from_train_loads_and_analyses(trained: Path, tmp_path: Path) -> None:
    p = load_pipeline(trained, "ich-tiny", "0.0.1", CPU)
    assert isinstance(p, Pipeline) and p.modalities == frozenset({"CT"})
    assert p.info.name == "ich-tiny" and len(p.info.manifest_sha256) == 64 and not p.info.synthetic_demo
    result = p.analyse(write_ct_study(tmp_path, seed=9, bleed=True, n=9, size=48))
    assert result.status is AnalysisStatus.ANALYSED
    assert [f.label for f in result.findings] == list(ICH_LABELS)
    assert all(0.0 <= f.probability <= 1.0 and f.critical for f in result.findings)
    assert len(result.evaluated_sop_instance_uids) == 9
    assert StudyAnalysis.from_json(result.to_json()).findings == result.findings


def test_unsuitable_study_is_not_analysed_with_reason(trained: Path, tmp_path: Path) -> None:
    p = load_pipeline(trained, "ich-tiny", "0.0.1", CPU)
    refs = [r for r in write_ct_study(tmp_path, seed=2, bleed=False, n=9, size=32) if r.series_description != "HEAD 5mm"]
    result = p.analyse(refs)
    assert result.status is AnalysisStatus.NOT_ANALYSED
    assert "no non-contrast axial head CT series" in result.reason and result.findings == []


def test_wrong_sha256_refused(trained: Path, tmp_path: Path) -> None:
    models = _copy(trained, tmp_path, lambda d: d["components"][0].update(sha256="0" * 64))
    with pytest.raises(ModelError, match="has sha256 .* manifest says 0000"):
        load_pipeline(models, "ich-tiny", "0.0.1", CPU)


def test_tampered_weights_refused(trained: Path, tmp_path: Path) -> None:
    models = _copy(trained, tmp_path)
    with open(models / "ich-tiny" / "0.0.1" / "weights.pt", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match="refusing to load"):
        load_pipeline(models, "ich-tiny", "0.0.1", CPU)


def test_missing_weights_refused(trained: Path, tmp_path: Path) -> None:
    models = _copy(trained, tmp_path)
    (models / "ich-tiny" / "0.0.1" / "weights.pt").unlink()
    with pytest.raises(ModelError, match="weights.pt is missing"):
        load_pipeline(models, "ich-tiny", "0.0.1", CPU)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["input"].update(modality="MR"), "input.modality: 'MR' is not supported for ich-ct"),
        (lambda d: d["input"].update(size=8), "input.size"),
        (lambda d: d["input"].update(windows=[[40, 80]]), "input.windows"),
        (lambda d: d["input"].update(context_slices=9), "input.context_slices"),
        (lambda d: d["input"].update(spacing_mm=0.5), "unsupported keys"),
        (lambda d: d.update(task="tumour-ct"), "task: 'tumour-ct' is not supported"),
        (lambda d: d.update(labels=["any", "contusion"]), "labels"),
        (lambda d: d["components"][0].update(architecture="vit_b_16"), "architecture: 'vit_b_16' not supported"),
        (lambda d: d["thresholds"].update(any=1.5), "thresholds.any"),
    ],
)
def test_unsupported_manifest_refused(trained: Path, tmp_path: Path, edit: Any, message: str) -> None:
    models = _copy(trained, tmp_path, edit)
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_pipeline(models, "ich-tiny", "0.0.1", CPU)


def test_weights_that_do_not_fit_the_architecture_refused(trained: Path, tmp_path: Path) -> None:
    models = _copy(trained, tmp_path, lambda d: d["components"][0].update(architecture="narrow_resnet"))
    with pytest.raises(ModelError, match="does not fit narrow_resnet"):
        load_pipeline(models, "ich-tiny", "0.0.1", CPU)


def test_load_pipelines_from_config_with_threshold_override(trained: Path, tmp_path: Path) -> None:
    enabled = [{"name": "ich-tiny", "version": "0.0.1", "thresholds": {"subdural": 0.3}},
               {"name": "ich-tiny", "version": "0.0.1", "enabled": False}]
    config = parse_config({"models": {"path": str(trained), "enabled": enabled}, "worker": {"device": "cpu"}}, tmp_path)
    pipelines = load_pipelines(config)
    assert len(pipelines) == 1 and pipelines[0].thresholds["subdural"] == 0.3
    bad = parse_config({"models": {"path": str(trained), "enabled": [
        {"name": "ich-tiny", "version": "0.0.1", "thresholds": {"sih": 0.3}}]}, "worker": {"device": "cpu"}}, tmp_path)
    with pytest.raises(ModelError, match="threshold override"):
        load_pipelines(bad)


def test_unknown_model_folder_refused(trained: Path) -> None:
    with pytest.raises(ModelError, match="no manifest"):
        load_pipeline(trained, "ich-tiny", "9.9.9", CPU)
    with pytest.raises(ModelError, match="invalid model name"):
        load_pipeline(trained, "../etc", "1", CPU)


def test_train_is_seeded(trained: Path, tmp_path: Path) -> None:
    data = trained.parent / "data"
    outs = []
    for k in range(2):
        out = tmp_path / f"m{k}"
        train(TrainOptions(task="ich", data=data, out=out, epochs=1, size=32, architecture="narrow_resnet_w8", seed=3))
        outs.append(json.loads((out / "manifest.json").read_text())["components"][0]["sha256"])
    assert outs[0] == outs[1]
