"""Windowing numbers, HU conversion, MR normalisation, aspect-preserving resize and its inverse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ml_helpers import write_ct_study

from dicom_node.errors import PixelDataError
from dicom_node.ml.preprocess import (
    ICH_WINDOWS,
    apply_window,
    ct_inputs,
    ct_windows,
    mr_normalise,
    read_image,
    resize_pad,
    unplace,
)


def test_brain_window_maps_0_to_80_hu_linearly() -> None:
    hu = np.array([-1000.0, 0.0, 20.0, 40.0, 60.0, 80.0, 1000.0])
    np.testing.assert_allclose(apply_window(hu, 40, 80), [0, 0, 0.25, 0.5, 0.75, 1, 1])


def test_three_ich_windows_stacked_in_order() -> None:
    hu = np.array([[60.0]])
    out = ct_windows(hu)
    assert out.shape == (3, 1, 1)
    # brain 40/80: (60-0)/80; subdural 80/200: (60+20)/200; soft tissue 40/380: (60+150)/380
    np.testing.assert_allclose(out[:, 0, 0], [0.75, 0.4, 210 / 380], rtol=1e-6)
    assert ICH_WINDOWS == ((40.0, 80.0), (80.0, 200.0), (40.0, 380.0))


def test_resize_keeps_aspect_and_centres() -> None:
    img = np.ones((1, 100, 50), dtype=np.float32)
    out, p = resize_pad(img, 64)
    assert out.shape == (1, 64, 64)
    assert (p.scaled_rows, p.scaled_cols, p.top, p.left) == (64, 32, 0, 16)
    assert out[0, :, 16:48].min() == pytest.approx(1.0)
    assert out[0, :, :16].max() == 0 and out[0, :, 48:].max() == 0


def test_unplace_maps_back_to_source_geometry() -> None:
    src = np.zeros((1, 120, 80), dtype=np.float32)
    src[0, 30:40, 60:70] = 1.0
    square, p = resize_pad(src, 48)
    back = unplace(square[0], p)
    assert back.shape == (120, 80)
    r, c = np.unravel_index(np.argmax(back), back.shape)
    assert 28 <= r <= 42 and 58 <= c <= 72


def test_context_slices_add_channels_and_clamp_at_ends() -> None:
    slices = [np.full((8, 8), float(v)) for v in (0, 40, 80)]
    x = ct_inputs(slices, 8, context=1)[0][0]
    assert x.shape == (9, 8, 8)
    np.testing.assert_allclose(x[0], x[3])  # slice -1 clamps to slice 0
    # channels 6-8 are slice 1 (40 HU): brain window value 0.5
    assert x[6, 4, 4] == pytest.approx(0.5)


@pytest.mark.parametrize("context", [0, 1, 2])
def test_series_inputs_equal_each_slice_s_input(context: int) -> None:
    rng = np.random.default_rng(context)
    hu = [rng.uniform(-1000, 1500, (96, 80)).astype(np.float32) for _ in range(5)]
    x, places = ct_inputs(hu, 32, context=context)
    assert x.shape == (5, 3 * (2 * context + 1), 32, 32) and len(places) == 5
    for i in range(5):
        # reference: slice i's own stack of neighbours' windows, resized on its own
        stack = [ct_windows(hu[min(max(j, 0), 4)]) for j in range(i - context, i + context + 1)]
        one, p = resize_pad(np.concatenate(stack), 32)
        np.testing.assert_array_equal(x[i], one)
        assert places[i] == p


def test_mr_percentile_normalisation() -> None:
    rng = np.random.default_rng(0)
    img = np.zeros((64, 64), dtype=np.float32)
    img[8:56, 8:56] = rng.uniform(100, 1100, (48, 48))
    out = mr_normalise(img)
    assert out.min() == 0.0 and out.max() == 1.0
    assert 0.4 < float(np.median(out[8:56, 8:56])) < 0.6
    assert out[0, 0] == 0.0


def test_read_image_applies_rescale(tmp_path: Path) -> None:
    ref = write_ct_study(tmp_path, seed=1, bleed=False, n=8, size=32, distractors=False)[0]
    hu = read_image(ref.path)
    assert hu.dtype == np.float32 and hu.shape == (32, 32)
    assert hu.min() == pytest.approx(-1000.0) and hu.max() == pytest.approx(1000.0)


def test_undecodable_pixel_data_is_a_clear_error(tmp_path: Path) -> None:
    import pydicom

    ref = write_ct_study(tmp_path, seed=1, bleed=False, n=8, size=32, distractors=False)[0]
    ds = pydicom.dcmread(ref.path)
    ds.PixelData = ds.PixelData[:100]
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad)
    with pytest.raises(PixelDataError, match="cannot decode pixel data"):
        read_image(str(bad))
