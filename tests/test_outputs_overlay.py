"""Secondary-capture overlays: RGB key image, heat map at the finding, burned-in caption, valid IOD."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from outputs_helpers import (
    gaussian,
    ich_analysis,
    make_series,
    not_analysed,
    roundtrip,
    sih_analysis,
    sources_of,
)

from dicom_node.outputs import build_outputs
from dicom_node.outputs.overlay import CIRCLE_COLOUR, blend, draw_annotations, grey_image, jet, render
from dicom_node.outputs.validate import dciodvfy_errors
from dicom_node.outputs.wording import caption

SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"


def coloured(rgb: np.ndarray) -> np.ndarray:
    """Pixels of the heat map: saturated, and not the magenta circle."""
    spread = rgb.max(axis=-1).astype(int) - rgb.min(axis=-1).astype(int)
    magenta = (rgb[..., 0] > 200) & (rgb[..., 2] > 200) & (rgb[..., 1] < 80)
    return (spread > 40) & ~magenta


def test_ich_overlay_is_a_valid_rgb_secondary_capture(tmp_path: Path) -> None:
    series = make_series("CT", n=4, blob=(40, 80))
    analysis = ich_analysis(series, positive=True, center=(40.0, 80.0))
    outputs = build_outputs(analysis, sources_of(series), 2)
    overlays = [o for o in outputs if o.kind == "overlay"]
    assert [o.label for o in overlays] == ["subdural"]  # "any" is not marked again where its subtype is
    for out in overlays:
        path = tmp_path / f"{out.label}.dcm"
        sc = roundtrip(out.dataset, path)
        assert dciodvfy_errors(path) == []
        assert sc.SOPClassUID == SC_IMAGE and out.sop_class_uid == SC_IMAGE
        assert sc.StudyInstanceUID == series[0].StudyInstanceUID and sc.PatientID == "SYN0001"
        assert sc.SeriesInstanceUID != series[0].SeriesInstanceUID
        assert sc.PhotometricInterpretation == "RGB" and sc.SamplesPerPixel == 3
        assert sc.BurnedInAnnotation == "YES"
        assert sc.SeriesDescription == "AI ICH key images: subdural (unverified, synthetic-demo)"
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == series[1].SOPInstanceUID
        assert any(e.PurposeOfReferenceCodeSequence[0].CodeValue == "Newcode1"
                   for e in sc.ContributingEquipmentSequence)
        rows, cols, samples = sc.pixel_array.shape  # 128 px source enlarged x4, caption band below
        assert cols == 512 and 512 + 40 < rows < 512 + 160 and samples == 3
        assert "NOT FOR CLINICAL USE" in sc.ImageComments and "NOT FOR DIAGNOSTIC" not in sc.ImageComments
    assert overlays[0].dataset.InstanceNumber == 201


def test_mr_overlay_is_valid(tmp_path: Path) -> None:
    series = make_series("MR", n=4, size=256, blob=(100, 150))
    analysis = sih_analysis(series, center=(100.0, 150.0))
    overlays = [o for o in build_outputs(analysis, sources_of(series), 1) if o.kind == "overlay"]
    assert len(overlays) == 1
    path = tmp_path / "sih.dcm"
    sc = roundtrip(overlays[0].dataset, path)
    assert dciodvfy_errors(path) == []
    assert sc.pixel_array.shape[1:] == (512, 3) and sc.pixel_array.shape[0] > 512
    assert float(sc.PixelSpacing[0]) == pytest.approx(float(series[1].PixelSpacing[0]) / 2)


def test_heat_map_colours_sit_at_the_region_center() -> None:
    series = make_series("CT", n=3, size=128)
    analysis = ich_analysis(series, positive=True, center=(30.0, 90.0))
    finding = next(f for f in analysis.findings if f.label == "subdural")
    rgb, factor = render(series[1], finding, analysis.key_images[0].heatmap, lines=[])
    assert factor == 4
    mask = coloured(rgb)
    rows, cols = np.nonzero(mask)
    assert len(rows) > 200
    assert abs(rows.mean() - 30.5 * factor) < 8 and abs(cols.mean() - 90.5 * factor) < 8
    assert np.hypot(rows - 30.5 * factor, cols - 90.5 * factor).max() < 4 * 8 * factor  # within 4 sigma
    # the circle is drawn around the center
    circle = np.all(rgb == CIRCLE_COLOUR, axis=-1)
    crow, ccol = np.nonzero(circle)
    assert len(crow) > 50
    radius = np.hypot(crow - 30.5 * factor, ccol - 90.5 * factor)
    assert abs(np.median(radius) - 0.05 * 128 * factor) < 3  # radius capped at 5 % of the image side


def test_caption_is_burned_in() -> None:
    series = make_series("CT", n=3, size=128)
    analysis = ich_analysis(series, positive=True, center=(100.0, 64.0))
    finding = next(f for f in analysis.findings if f.label == "subdural")
    lines = caption(analysis, finding)
    assert lines[0] == "Subdural hemorrhage: PRESENT 93%"
    assert "dicom-node ICH classifier 0.1.0-synthetic-demo" in lines[1]
    assert lines[2] == "AI RESULT - NOT FOR CLINICAL USE"
    with_text, _ = render(series[1], finding, None, lines)
    without, _ = render(series[1], finding, None, [])
    # the image is untouched; the caption is on a band below it, centred, clear of the corners
    assert np.array_equal(with_text[:512], without)
    band = with_text[512:]
    white = np.all(band > 200, axis=-1)
    yellow = (band[..., 0] > 200) & (band[..., 1] > 180) & (band[..., 2] < 80)
    assert white.sum() > 300 and yellow.sum() > 100
    _, text_cols = np.nonzero(white | yellow)
    assert text_cols.min() > 0.15 * 512 and text_cols.max() < 0.85 * 512


def test_a_long_model_name_is_neither_cut_off_nor_crowding_the_caption() -> None:
    # an ensemble's display name lists its members (180 characters for ich 0.4.0): burned in at the smallest
    # font it ran past both edges of the image ("i) [ich-all 0.3.0-synthetic-demo, ... ich 0" in OHIF). The
    # caption names the ensemble without the list (the SR states it), and a line still too wide wraps.
    full = ("dicom-node ICH ensemble (synthetic demo) [ich-all 0.3.0-synthetic-demo, ich-subdural "
            "0.2.0-synthetic-demo, ich-subarachnoid 0.2.0-synthetic-demo, ich-small 0.2.0-synthetic-demo, "
            "ich 0.1.0-synthetic-demo]")
    series = make_series("CT", n=3, size=128)
    analysis = ich_analysis(series, positive=True, center=(100.0, 64.0))
    analysis = replace(analysis, model=replace(analysis.model, display_name=full))
    finding = next(f for f in analysis.findings if f.label == "subdural")
    lines = caption(analysis, finding)
    assert lines[1] == f"dicom-node ICH ensemble (synthetic demo) {analysis.model.version}"
    rgb = np.zeros((256, 256, 3), np.uint8)
    drawn = draw_annotations(rgb, None, None, [lines[0], full, lines[2]])
    band = drawn[256:]
    text = np.any(band > 100, axis=-1)
    _, cols = np.nonzero(text)
    assert cols.min() > 0.15 * 256 and cols.max() < 0.85 * 256  # inside the caption width, nothing clipped
    two_lines = draw_annotations(rgb, None, None, [lines[0], lines[2]])
    row_height = (two_lines.shape[0] - 256) / 3  # two lines and two half-line margins
    assert drawn.shape[0] - two_lines.shape[0] >= 2 * row_height  # the long name took several rows


def test_windowing_and_colour_scale() -> None:
    ct = make_series("CT", n=1, size=64, blob=(32, 32), blob_slice=0)[0]
    grey = grey_image(ct)
    assert grey[0, 0] == 0  # air
    assert grey[32, 32] == 223  # 70 HU in the 40/80 window
    assert grey[32, 10] == 112  # 35 HU brain
    mr = make_series("MR", n=1, size=64)[0]
    assert grey_image(mr).max() == 255 and grey_image(mr).min() == 0
    scale = jet(np.array([0.0, 1.0]))
    assert scale[0, 2] > scale[0, 0] and scale[1, 0] > scale[1, 2]
    plain = blend(grey, None)
    assert plain.shape == (64, 64, 3) and np.array_equal(plain[..., 0], grey)
    small_heat = gaussian(16, (8.0, 8.0), 2.0)  # a coarser map is resized to the image
    assert coloured(blend(grey, small_heat))[32, 32]


def test_no_overlays_for_negative_or_not_analysed() -> None:
    series = make_series("CT", n=2)
    assert [o.kind for o in build_outputs(ich_analysis(series, positive=False), sources_of(series), 1)] == ["sr"]
    assert [o.kind for o in build_outputs(not_analysed(series), sources_of(series), 1)] == ["sr"]


def test_missing_heat_map_and_key_image(tmp_path: Path) -> None:
    series = make_series("CT", n=3)
    analysis = ich_analysis(series, positive=True)
    analysis.key_images = []
    overlays = [o for o in build_outputs(analysis, sources_of(series), 1) if o.kind == "overlay"]
    assert len(overlays) == 1
    path = tmp_path / "plain.dcm"
    roundtrip(overlays[0].dataset, path)
    assert dciodvfy_errors(path) == []
    # a key image missing from the sources: the SR is still built, without that overlay
    sources = {ds.SOPInstanceUID: ds for ds in series if ds is not series[1]}
    assert [o.kind for o in build_outputs(analysis, sources, 1)] == ["sr"]
