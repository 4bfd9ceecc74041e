"""The extra-axial shape feature (`extra_axial`): a short lens the epidural mask marks scores 0, a long
crescent it marks scores by how far it runs past the reference length, whatever else the study holds; the
manifest entry is refused when it was fitted for another definition; and the ensemble fit gives the feature a
negative epidural weight when it tells the members' false epidurals apart (`train_ensemble`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dicom_node.errors import ModelError
from dicom_node.ml.datasets import MASK_LABELS
from dicom_node.ml.extra_axial import (
    CLIP,
    REFERENCE_MM,
    collections,
    epidural_length_feature,
    mm_per_grid_pixel,
    shape_entry,
    shape_weights,
)
from dicom_node.ml.manifest import ICH_LABELS
from dicom_node.synth import write_ct_head_study

E, S = MASK_LABELS.index("epidural"), MASK_LABELS.index("subdural")
MM = 1.0  # mm per mask pixel in these drawings


def _arc(grid: int, radius: float, half_angle: float, thickness: float, centre_angle: float = 0.0) -> np.ndarray:
    """A band against a circle of `radius` (the inner table), `half_angle` radians either side of
    `centre_angle`, `thickness` pixels deep: a lens when short, a crescent when long."""
    yy, xx = np.mgrid[:grid, :grid] - grid / 2
    r = np.hypot(yy, xx)
    a = np.angle(np.exp(1j * (np.arctan2(yy, xx) - centre_angle)))
    return (r <= radius) & (r >= radius - thickness) & (np.abs(a) <= half_angle)


def _study(epidural: list[np.ndarray], subdural: list[np.ndarray], n: int = 5) -> np.ndarray:
    """(n, L-1, g, g) mask probabilities: the drawings on the middle three slices."""
    g = (epidural or subdural)[0].shape[0]
    masks = np.zeros((n, len(MASK_LABELS), g, g), np.float32)
    for k in range(1, n - 1):
        for m in epidural:
            masks[k, E] = np.maximum(masks[k, E], m)
        for m in subdural:
            masks[k, S] = np.maximum(masks[k, S], m)
    return masks


def test_a_lens_scores_zero_and_a_long_crescent_scores_its_length() -> None:
    lens = _arc(256, 100, 0.25, 14)  # about 50 mm long
    crescent = _arc(256, 100, 0.75, 12)  # about 135 mm long
    assert epidural_length_feature(_study([lens], []), MASK_LABELS, MM) == 0.0
    lengths = [length for length, _ in collections(_study([], [crescent])[:, S] >= 0.5,
                                                   _study([], [crescent])[:, S] >= 0.5, MM)]
    assert len(lengths) == 1 and 120 < lengths[0] < 150
    # the members call half the crescent epidural: the collection the epidural channel marks is long
    half = crescent & (np.arange(256)[:, None] < 128)
    f = epidural_length_feature(_study([half], [crescent]), MASK_LABELS, MM)
    assert f == pytest.approx(np.log2(lengths[0] / REFERENCE_MM), abs=0.05) and 0.9 < f < CLIP
    # longer than CLIP allows: clipped
    assert epidural_length_feature(_study([crescent], []), MASK_LABELS, MM / 4) == 0.0  # 34 mm: a lens
    assert epidural_length_feature(_study([crescent], []), MASK_LABELS, 4 * MM) == CLIP


def test_a_lens_beside_a_crescent_and_studies_without_one_score_zero() -> None:
    lens = _arc(256, 100, 0.25, 14, centre_angle=np.pi)  # the other side of the head
    crescent = _arc(256, 100, 0.75, 12)
    assert epidural_length_feature(_study([lens], [crescent]), MASK_LABELS, MM) == 0.0  # both subtypes
    assert epidural_length_feature(_study([], [crescent]), MASK_LABELS, MM) == 0.0  # no epidural marked
    assert epidural_length_feature(None, MASK_LABELS, MM) == 0.0
    assert epidural_length_feature(np.zeros((3, 5, 32, 32), np.float32), MASK_LABELS, MM) == 0.0
    # an epidural speck on the crescent (under MIN_AREA_MM2 on every slice) does not mark it
    speck = np.zeros((256, 256), bool)
    ys, xs = np.nonzero(crescent)
    speck[ys[0]:ys[0] + 3, xs[0]:xs[0] + 3] = True
    assert epidural_length_feature(_study([speck & crescent], [crescent]), MASK_LABELS, MM) == 0.0


def test_a_collection_is_joined_across_slices_where_it_overlaps() -> None:
    """A crescent seen as two short pieces on neighbouring slices that overlap is one long collection."""
    g = 256
    upper, lower = _arc(g, 100, 0.75, 12) & (np.arange(g)[:, None] < 140), _arc(g, 100, 0.75, 12)
    mask = np.zeros((3, g, g), bool)
    mask[0], mask[1] = upper, lower
    found = collections(mask, mask, MM)
    assert len(found) == 1 and found[0][0] > 120
    apart = np.zeros((3, g, g), bool)
    apart[0], apart[2] = _arc(g, 100, 0.25, 14), _arc(g, 100, 0.25, 14, np.pi)
    assert len(collections(apart, apart, MM)) == 2


def test_millimetres_per_grid_pixel_come_from_the_header(tmp_path: Path) -> None:
    st = write_ct_head_study(tmp_path, 5, findings=(), size=64, n_slices=4, distractors=False, ground_truth=False)
    import pydicom

    ds = pydicom.dcmread(st.files[0], stop_before_pixels=True)
    spacing = float(ds.PixelSpacing[0])
    assert mm_per_grid_pixel(str(st.files[0]), 64, 64, 32) == pytest.approx(spacing * 2)
    del ds.PixelSpacing
    ds.save_as(tmp_path / "nospacing.dcm")
    assert mm_per_grid_pixel(str(tmp_path / "nospacing.dcm"), 64, 64, 32) == pytest.approx(230.0 / 32)
    assert mm_per_grid_pixel(str(tmp_path / "missing.dcm"), 64, 64, 32) == pytest.approx(230.0 / 32)


def test_the_manifest_entry_round_trips_and_another_definition_is_refused() -> None:
    w = np.zeros(len(ICH_LABELS))
    w[ICH_LABELS.index("epidural")] = -2.5
    entry = shape_entry(w, ICH_LABELS)
    assert entry["weights"] == {"epidural": -2.5}
    np.testing.assert_array_equal(shape_weights(entry, ICH_LABELS, "m"), w)
    assert shape_weights(None, ICH_LABELS, "m") is None
    for bad, why in (({**entry, "reference_mm": 80.0}, "must be"), ({**entry, "feature": "volume"}, "must be"),
                     ({**entry, "weights": {"subdural": 1.0}}, "some of"), ({**entry, "weights": {}}, "some of"),
                     ({**entry, "weights": {"epidural": "x"}}, "must be a number"), ("shape", "must be")):
        with pytest.raises(ModelError, match=why):
            shape_weights(bad, ICH_LABELS, "m")
