"""`dicom-node train` and `dicom-node evaluate` end to end on a tiny generated set (in-process CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ml_helpers import write_ich_dataset

from dicom_node.cli import main
from dicom_node.ml.manifest import ICH_LABELS


def test_train_then_evaluate_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_ich_dataset(tmp_path / "data", 6, seed=1, n=9, size=48)
    model = tmp_path / "models" / "ich-cli" / "0.0.2"
    rc = main(["train", "--model", "ich", "--data", str(tmp_path / "data"), "--out", str(model), "--epochs", "1",
               "--size", "32", "--arch", "narrow_resnet_w8", "--seed", "1", "--synthetic-demo"])
    assert rc == 0 and (model / "weights.pt").is_file()
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["name"] == "ich-cli" and manifest["version"] == "0.0.2" and manifest["tags"] == ["synthetic-demo"]

    out = tmp_path / "eval"
    rc = main(["evaluate", "--model", "ich-cli", "--models-dir", str(tmp_path / "models"), "--data",
               str(tmp_path / "data"), "--out", str(out), "--bootstrap", "50", "--device", "cpu", "--record"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["labels"]) == list(ICH_LABELS) and metrics["level"] == "slice"
    anyl = metrics["labels"]["any"]
    assert {"auroc", "auroc_ci", "sensitivity", "specificity", "log_loss"} <= set(anyl)
    assert anyl["n"] == 54 and anyl["n_positive"] == 9  # 3 bleeding studies x 3 labelled positive slices
    assert 0 < metrics["rsna_weighted_log_loss"] < 5
    assert metrics["labels"]["epidural"]["auroc"] is None  # no positive: AUROC undefined, not invented
    assert (out / "roc_any.png").is_file() and (out / "pr_any.png").is_file() and (out / "roc_study_any.png").is_file()
    printed = capsys.readouterr().out
    assert "RSNA weighted log loss" in printed and "intraparenchymal" in printed
    recorded = json.loads((model / "manifest.json").read_text())["metrics"]
    assert recorded["labels"]["any"]["auroc"] == anyl["auroc"]


def test_evaluate_unknown_model_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    assert main(["evaluate", "--model", "nope", "--models-dir", str(tmp_path / "models"), "--data", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 1
