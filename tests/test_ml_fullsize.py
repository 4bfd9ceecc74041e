"""Full-size architectures (ResNeXt-50 32x4d at 512 px for ICH; three ResNet-50 + logistic ensemble for SIH)
load from a manifest through the registry and run a forward pass on CPU. Weights are random (built here):
nothing full-size is shipped, and the registry refuses a manifest whose weight file is missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dicom_node.ml.device import choose_device
from dicom_node.ml.ich import IchPipeline
from dicom_node.ml.manifest import ICH_LABELS, SIH_ROLES, sha256_file, write_manifest
from dicom_node.ml.nets import build_model
from dicom_node.ml.preprocess import ICH_WINDOW_NAMES, ICH_WINDOWS
from dicom_node.ml.registry import load_pipeline
from dicom_node.ml.sih import SihPipeline, ensemble_probability

CPU = choose_device("cpu")


def _weights(folder: Path, file_name: str, arch: str, in_channels: int, outputs: int) -> dict[str, str]:
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(build_model(arch, in_channels, outputs).state_dict(), folder / file_name)
    return {"architecture": arch, "weights": file_name, "sha256": sha256_file(folder / file_name)}


def test_ich_resnext50_512_loads_and_runs(tmp_path: Path) -> None:
    folder = tmp_path / "ich-resnext50" / "1.0.0"
    write_manifest(folder, {
        "name": "ich-resnext50", "version": "1.0.0", "task": "ich-ct", "labels": list(ICH_LABELS),
        "critical_labels": list(ICH_LABELS), "thresholds": dict.fromkeys(ICH_LABELS, 0.5),
        "input": {"modality": "CT", "size": 512, "channels": list(ICH_WINDOW_NAMES),
                  "windows": [list(w) for w in ICH_WINDOWS], "context_slices": 0},
        "preprocessing": {"study_aggregation": "topk_mean", "top_k": 2},
        "components": [{"role": "slice", **_weights(folder, "weights.pt", "resnext50_32x4d", 3, 6)}],
    })
    p = load_pipeline(tmp_path, "ich-resnext50", "1.0.0", CPU, batch_size=2)
    assert isinstance(p, IchPipeline)
    probs = p.predict(np.random.default_rng(0).random((2, 3, 512, 512), dtype=np.float32))
    assert probs.shape == (2, 6) and ((probs > 0) & (probs < 1)).all()
    np.testing.assert_allclose(p.aggregate(probs), probs.mean(axis=0), rtol=1e-6)  # top-2 mean of 2 slices


def test_sih_three_resnet50_and_ensemble_load_and_run(tmp_path: Path) -> None:
    folder = tmp_path / "sih-resnet50" / "1.0.0"
    components = [{"role": r, **_weights(folder, f"{r}.pt", "resnet50", 1, 1)} for r in SIH_ROLES]
    coefficients = {"axial": 1.0, "coronal1": 0.5, "coronal2": -0.25}
    write_manifest(folder, {
        "name": "sih-resnet50", "version": "1.0.0", "task": "sih-mr", "labels": ["sih"], "thresholds": {"sih": 0.5},
        "input": {"modality": "MR", "size": 256, "channels": ["t1c"], "percentiles": [1, 99]},
        "components": components,
        "ensemble": {"method": "logistic", "coefficients": coefficients, "intercept": 0.1},
    })
    p = load_pipeline(tmp_path, "sih-resnet50", "1.0.0", CPU)
    assert isinstance(p, SihPipeline) and p.modalities == frozenset({"MR"})
    from dicom_node.ml.preprocess import placement

    x = np.random.default_rng(1).random((1, 256, 256), dtype=np.float32)
    logits = p.logits({r: (x, placement(256, 256, 256)) for r in SIH_ROLES})
    assert set(logits) == set(SIH_ROLES)
    expected = 1 / (1 + np.exp(-(0.1 + sum(coefficients[r] * logits[r] for r in SIH_ROLES))))
    assert ensemble_probability(logits, coefficients, 0.1) == pytest.approx(expected)
