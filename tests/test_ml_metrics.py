"""Metrics on inputs with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dicom_node.ml.metrics import (
    auroc,
    auroc_ci,
    label_metrics,
    log_loss,
    plot_curves,
    rsna_weighted_log_loss,
    sensitivity_specificity,
    youden_threshold,
)


def test_auroc_known_values() -> None:
    y = np.array([0, 0, 1, 1])
    assert auroc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auroc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    # one of four positive/negative pairs mis-ordered -> 0.75
    assert auroc(y, np.array([0.1, 0.85, 0.8, 0.9])) == pytest.approx(0.75)
    assert math.isnan(auroc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_bootstrap_ci_brackets_the_estimate_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, 200), 0, 1)
    lo, hi = auroc_ci(y, p, n_boot=300, seed=5)
    assert lo < auroc(y, p) < hi and hi - lo < 0.2
    assert auroc_ci(y, p, n_boot=300, seed=5) == (lo, hi)


def test_sensitivity_specificity_at_threshold() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.5, 0.2, 0.1, 0.3, 0.7, 0.0, 0.4])
    assert sensitivity_specificity(y, p, 0.5) == (0.75, 0.8)


def test_log_loss_matches_hand_computation() -> None:
    assert log_loss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)


def test_rsna_weighted_log_loss_weights_any_twice() -> None:
    labels = ["any", "epidural"]
    y = np.array([[1, 0]])
    p = np.array([[0.5, 0.1]])
    expected = (2 * -math.log(0.5) + 1 * -math.log(0.9)) / 3
    assert rsna_weighted_log_loss(y, p, labels) == pytest.approx(expected)


def test_label_metrics_fields_and_youden() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.35, 0.4, 0.8, 0.9])
    m = label_metrics(y, p, 0.5, n_boot=50)
    assert set(m) >= {"auroc", "auroc_ci", "sensitivity", "specificity", "log_loss"}
    assert m["auroc"] == 1.0 and m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == 1.0
    assert 0.35 < youden_threshold(y, p) <= 0.4


def test_curves_written_as_png(tmp_path: Path) -> None:
    paths = plot_curves(np.array([0, 1, 0, 1]), np.array([0.2, 0.7, 0.4, 0.9]), "any", tmp_path, "test")
    assert [p.name for p in paths] == ["roc_any.png", "pr_any.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert plot_curves(np.array([0, 0]), np.array([0.1, 0.2]), "x", tmp_path, "t") == []
