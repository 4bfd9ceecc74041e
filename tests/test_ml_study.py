"""Study-level decisions and localisation, as pure functions: study features, the study model and its
thresholds (operating points), the region a mask gives, and CIs that resample studies."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from dicom_node.ml import localise
from dicom_node.ml.metrics import auroc_ci
from dicom_node.ml.preprocess import placement
from dicom_node.ml.study_model import (
    FEATURES_CLS,
    FEATURES_SEG,
    REPEATS,
    StudyModel,
    choose_threshold,
    cross_fitted,
    fit_study_model,
    out_of_fold,
    pooled_threshold,
    study_features,
)


def test_threshold_is_the_middle_of_the_gap_when_studies_separate() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.01, 0.05, 0.2, 0.8, 0.9, 0.99])
    point = choose_threshold(y, p)
    assert point.sensitivity == 1.0 and point.specificity == 1.0
    assert 0.2 < point.threshold < 0.8
    assert point.threshold == pytest.approx(0.5, abs=0.01)  # logit midpoint of 0.2 and 0.8
    assert (point.n_positive, point.n_negative) == (3, 3)
    one_class = choose_threshold(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]))
    assert one_class.threshold == 0.5 and one_class.specificity == 1.0


def test_threshold_maximises_youden_when_scores_overlap() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.4, 0.8, 0.85, 0.9])
    point = choose_threshold(y, p)
    sens, spec = point.sensitivity, point.specificity
    assert sens + spec - 1 == pytest.approx(0.75)  # best achievable: one error
    assert point.to_json()["rule"] == "youden-midpoint"


def test_study_features_from_slice_logits_and_masks() -> None:
    logits = np.array([[-5.0, -5, -5], [2.0, 1, -4], [4.0, 3, -6]])  # 3 slices, labels any + 2 subtypes
    masks = np.zeros((3, 2, 8, 8), np.float32)
    masks[2, 0, 2:4, 2:5] = 0.9  # 6 pixels of subtype 1 on slice 2
    masks[1, 1, 0, 0] = 0.3  # below the mask level
    f = study_features(logits, masks, FEATURES_SEG)
    assert f.shape == (3, 4)
    assert f[:, 0].tolist() == [4.0, 3.0, -4.0]  # max logit
    assert f[0, 1] == pytest.approx((4 + 2 - 5) / 3)  # top-3 mean
    assert f[0, 2] == pytest.approx(np.log1p(6)) and f[1, 2] == pytest.approx(np.log1p(6)) and f[2, 2] == 0
    assert f[2, 3] == pytest.approx(np.log(0.3 / 0.7), abs=1e-3)
    assert study_features(logits, None, FEATURES_CLS).shape == (3, 2)
    with pytest.raises(ValueError, match="mask"):
        study_features(logits, None, FEATURES_SEG)


def test_mask_features_of_float16_network_masks_overlap_and_ties() -> None:
    """The masks come from the network as float16: a pixel at exactly the mask level counts, overlapping
    subtypes count once for "any", and the features equal those of the same masks in float32."""
    logits = np.zeros((2, 3))
    masks = np.zeros((2, 2, 4, 4), np.float16)
    masks[0, 0, 0, :2] = 0.5  # two pixels at the level
    masks[0, 1, 0, 1:3] = 0.75  # overlaps subtype 1 on one pixel
    masks[1, 1, 3, 3] = np.float16(0.4995)  # just under
    f16 = study_features(logits, masks, FEATURES_SEG)
    f32 = study_features(logits, masks.astype(np.float32), FEATURES_SEG)
    np.testing.assert_array_equal(f16, f32)
    assert np.expm1(f16[:, 2]).round().tolist() == [3, 2, 2]  # any = union: 3 pixels
    assert f16[0, 3] == pytest.approx(np.log(0.75 / 0.25))


def test_study_model_fits_predicts_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    n = 80
    y = (rng.random((n, 2)) < 0.4).astype(float)
    x = np.stack([y * 6 - 3 + rng.normal(0, 1, (n, 2)), y * 4 - 2 + rng.normal(0, 1, (n, 2))], axis=2)  # (S, L, F)
    model, points, oof = fit_study_model(x, y, ("any", "subdural"), FEATURES_CLS)
    assert oof.shape == (n, 2)
    for j, label in enumerate(("any", "subdural")):
        assert points[label].sensitivity >= 0.9 and points[label].specificity >= 0.9
        p = np.array([model.probabilities(x[i], ("any", "subdural"))[j] for i in range(n)])
        assert ((p >= points[label].threshold) == (y[:, j] > 0)).mean() >= 0.95
    problems: list[str] = []
    again = StudyModel.from_json(model.to_json(), ("any", "subdural"), problems)
    assert problems == [] and again is not None
    np.testing.assert_allclose(again.probabilities(x[0], ("any", "subdural")),
                               model.probabilities(x[0], ("any", "subdural")), atol=1e-5)
    assert StudyModel.from_json({"method": "logistic", "features": ["volume"]}, ("any",), problems) is None
    assert "features" in problems[-1]


def test_cross_fitted_threshold_comes_from_out_of_fold_probabilities() -> None:
    """The SIH combination and each ICH study model: the threshold is chosen on probabilities of studies
    the regression was not fitted on, and the model kept is the one fitted on every study."""
    rng = np.random.default_rng(1)
    n = 60
    y = (np.arange(n) % 3 == 0).astype(float)
    x = np.stack([y * 3 - 1.5 + rng.normal(0, 1.2, n), rng.normal(0, 1, n)], axis=1)  # (S, F), one noise feature
    w, b, point, oof = cross_fitted(x, y, np.random.default_rng(0))
    in_sample = 1 / (1 + np.exp(-(x @ w + b)))
    assert oof.shape == (n,) and not np.allclose(oof, in_sample)
    assert point.repeats == REPEATS and point.to_json()["chosen_on"].endswith(f"pooled over {REPEATS} repeats "
                                                                              "of 5-fold cross-fitting")
    assert (point.n_positive, point.n_negative) == (20, 40)  # studies, not studies x repeats
    assert w[0] > 1.0 and abs(w[1]) < w[0] / 3  # the informative feature carries the fit
    again = cross_fitted(x, y, np.random.default_rng(0))  # seeded: the same folds, the same point
    assert again[2] == point
    tiny = cross_fitted(x[[0, 1]], np.array([1.0, 0.0]), np.random.default_rng(0))  # one study per class
    assert tiny[2].n_positive == 1 and 0 < tiny[2].threshold < 1


def test_pooled_threshold_is_steadier_than_one_split() -> None:
    """One 5-fold split's threshold moves with which studies share a fold; pooling the repeats does not."""
    rng = np.random.default_rng(2)
    n = 60
    y = (rng.random(n) < 0.2).astype(float)
    x = (y * 1.5 + rng.normal(0, 1, n))[:, None]  # overlapping classes: a plateau of near-best thresholds

    def fit(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, float]:
        lr = LogisticRegression().fit(xs, ys)
        return lr.coef_[0], float(lr.intercept_[0])

    def predict(m: tuple[np.ndarray, float], xs: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(xs @ m[0] + m[1])))

    def spread(repeats: int) -> float:
        t = [pooled_threshold(y, out_of_fold(x, y, np.random.default_rng(s), fit, predict, fit(x, y), repeats))
             .threshold for s in range(8)]
        return max(t) - min(t)

    assert spread(REPEATS) < spread(1) / 2


def test_region_of_a_crescent_lies_inside_it() -> None:
    rows, cols = np.mgrid[0:200, 0:200]
    r = np.hypot(rows - 100, cols - 100)
    crescent = (r > 80) & (r < 88) & (cols > 120)  # thin, concave: its centroid lies outside it
    blob = np.hypot(rows - 30, cols - 30) < 4
    (row, col), radius = localise.region_from_mask(crescent | blob)
    assert crescent[int(row), int(col)]
    assert radius == pytest.approx(np.sqrt(crescent.sum() / np.pi), rel=1e-6)
    centroid = np.argwhere(crescent).mean(axis=0).astype(int)
    assert not crescent[tuple(centroid)]
    assert localise.region_from_mask(np.zeros((5, 5), bool)) is None


def test_heat_map_peak_is_taken_inside_the_head() -> None:
    hu = np.full((64, 64), -1000.0)
    yy, xx = np.mgrid[0:64, 0:64]
    hu[np.hypot(yy - 32, xx - 32) < 20] = 30.0
    head = localise.head_mask(hu)
    heat = np.zeros((64, 64), np.float32)
    heat[2, 2] = 1.0  # the strongest response in air
    heat[30, 40] = 0.6
    (row, col), _ = localise.peak_inside(heat, head)
    assert (row, col) == (30.0, 40.0) and head[int(row), int(col)]


def test_masks_map_back_to_the_source_image() -> None:
    p = placement(100, 200, 64)  # a wide image: padded above and below
    square = np.zeros((1, 32, 32), np.float32)
    square[0, 14:18, 2:6] = 1.0  # half-resolution model space, left edge, middle rows
    src = localise.to_source(square, p)[0] >= 0.5
    assert src.shape == (100, 200)
    rows, cols = np.nonzero(src)
    assert 35 < rows.mean() < 65 and cols.mean() < 30


def test_bootstrap_by_study_is_wider_when_slices_of_a_study_agree() -> None:
    rng = np.random.default_rng(1)
    studies = np.repeat(np.arange(20), 10)
    y = np.repeat(rng.random(20) < 0.5, 10).astype(int)
    p = np.repeat(rng.random(20), 10) * 0.6 + y * 0.3 + rng.normal(0, 0.01, 200)
    lo_s, hi_s = auroc_ci(y, p, 300, 0)
    lo_g, hi_g = auroc_ci(y, p, 300, 0, groups=studies)
    assert hi_g - lo_g > 1.5 * (hi_s - lo_s)
