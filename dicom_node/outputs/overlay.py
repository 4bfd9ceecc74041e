"""Key images with the finding marked: RGB secondary captures (highdicom `SCImage`) for positive findings.

Each overlay is the key image, windowed to grey (CT: brain window 40/80 HU; MR: 1st-99th percentile),
with the explanation map alpha-blended in colour, a circle at the finding's location (the same mark as
the SR region, `marks.marker`) and a caption (finding, verdict, probability, model, and "NOT FOR
CLINICAL USE" for demo weights) on a band added below the image, centred and narrower than the image,
so that a viewer's own corner texts and its cine control (OHIF shows one for OT series, at the top)
never cover it and it never covers anatomy. Small images are enlarged by an integer factor so the
caption stays readable.
"""

from __future__ import annotations

import logging

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.pixels import apply_rescale
from pydicom.uid import ExplicitVRLittleEndian

from dicom_node.ml.analysis import Finding, KeyImage, StudyAnalysis
from dicom_node.outputs import codes, uids, wording
from dicom_node.outputs.equipment import EquipmentInfo, finish_common, series_number
from dicom_node.outputs.headers import complete_header
from dicom_node.outputs.marks import marker
from dicom_node.outputs.objects import OutputObject

log = logging.getLogger(__name__)

BRAIN_WINDOW = (40.0, 80.0)  # center, width (HU)
MIN_DISPLAY_SIZE = 512  # images smaller than this are enlarged by an integer factor
MAX_ALPHA = 0.55  # opacity of the heat map at its peak
HEAT_FLOOR = 0.15  # heat below this is not drawn (keeps the anatomy visible)
CIRCLE_COLOUR = (255, 0, 255)  # magenta: not in the heat map's colour scale
TEXT_COLOUR = (255, 255, 255)
WARNING_COLOUR = (255, 230, 0)
CAPTION_WIDTH = 0.6  # the caption's widest line stays within this fraction of the image width, centred


def grey_image(ds: Dataset) -> np.ndarray:
    """The source image as uint8 grey: CT in the brain window from HU, other modalities by percentiles."""
    pixels = ds.pixel_array
    if pixels.ndim == 3:  # colour source: use its luminance
        pixels = pixels[..., :3].mean(axis=-1)
    values = np.asarray(apply_rescale(pixels, ds), dtype=np.float32)
    if str(ds.get("Modality", "")) == "CT":
        center, width = BRAIN_WINDOW
        low, high = center - width / 2, center + width / 2
    else:
        low, high = (float(v) for v in np.percentile(values, (1.0, 99.0)))
        if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            values = low + high - values
    if high <= low:
        high = low + 1.0
    return (np.clip((values - low) / (high - low), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def jet(values: np.ndarray) -> np.ndarray:
    """A jet-like colour scale: 0 blue → cyan → green → yellow → 1 red, as uint8 RGB."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    anchors = np.array([0.0, 0.25, 0.5, 0.75, 1.0], dtype=np.float32)
    colours = np.array([[0, 0, 200], [0, 200, 255], [40, 230, 40], [255, 230, 0], [230, 0, 0]], dtype=np.float32)
    rgb = np.stack([np.interp(v[..., 0], anchors, colours[:, c]) for c in range(3)], axis=-1)
    return rgb.astype(np.uint8)


def _resize(heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if heat.shape == shape:
        return heat.astype(np.float32)
    image = Image.fromarray(heat.astype(np.float32), mode="F").resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def blend(grey: np.ndarray, heat: np.ndarray | None) -> np.ndarray:
    """Grey image with the heat map in colour, opacity rising with heat above `HEAT_FLOOR`."""
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    if heat is None:
        return rgb.astype(np.uint8)
    heat = np.clip(np.nan_to_num(_resize(heat, grey.shape)), 0.0, 1.0)
    alpha = np.where(heat >= HEAT_FLOOR, MAX_ALPHA * heat, 0.0)[..., None]
    out = rgb * (1.0 - alpha) + jet(heat).astype(np.float32) * alpha
    return (out + 0.5).astype(np.uint8)


def _font(lines: list[str], width: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """PIL's default font at the largest size (up to width/32) at which every line fits the caption width."""
    size = max(10, width // 32)
    while True:
        font = ImageFont.load_default(size=size)
        widest = max(font.getbbox(line)[2] for line in lines)
        if widest <= width * CAPTION_WIDTH or size <= 8:
            return font
        size -= 1


def _wrap(line: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, limit: float) -> list[str]:
    """`line` broken at spaces into pieces no wider than `limit` (a single word wider than it stays whole)."""
    pieces: list[str] = []
    current = ""
    for word in line.split(" "):
        trial = f"{current} {word}" if current else word
        if current and font.getbbox(trial)[2] > limit:
            pieces.append(current)
            current = word
        else:
            current = trial
    return [*pieces, current]


def draw_annotations(rgb: np.ndarray, center: tuple[float, float] | None, radius: float | None,
                     lines: list[str], warning_lines: int = 1) -> np.ndarray:
    """Circle at `center` (row, col) and the caption, centred on a black band added below the image;
    the last `warning_lines` lines in yellow. Returns the taller image."""
    image = Image.fromarray(rgb, mode="RGB")
    draw = ImageDraw.Draw(image)
    width = rgb.shape[1]
    stroke = max(1, width // 256)
    if center is not None:
        r = radius or width / 32
        row, col = center
        draw.ellipse((col - r, row - r, col + r, row + r), outline=CIRCLE_COLOUR, width=stroke + 1)
    if not lines:
        return np.asarray(image, dtype=np.uint8)
    font = _font(lines, width)
    # a line too wide even at the smallest font is wrapped, never cut off at the image's edges
    rows = [(piece, WARNING_COLOUR if i >= len(lines) - warning_lines else TEXT_COLOUR)
            for i, line in enumerate(lines) for piece in _wrap(line, font, width * CAPTION_WIDTH)]
    line_height = font.getbbox("Ag")[3] + 6
    margin = line_height // 2
    band = line_height * len(rows) + 2 * margin
    canvas = Image.new("RGB", (width, rgb.shape[0] + band), (0, 0, 0))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (line, colour) in enumerate(rows):
        left = (width - font.getbbox(line)[2]) // 2
        draw.text((left, rgb.shape[0] + margin + i * line_height), line, fill=colour, font=font)
    return np.asarray(canvas, dtype=np.uint8)


def render(source: Dataset, finding: Finding, heat: np.ndarray | None, lines: list[str]) -> tuple[np.ndarray, int]:
    """The overlay's RGB pixels and the enlargement factor applied to the source geometry."""
    grey = grey_image(source)
    rgb = blend(grey, heat)
    factor = max(1, MIN_DISPLAY_SIZE // max(grey.shape))
    if factor > 1:
        rgb = np.asarray(Image.fromarray(rgb, mode="RGB").resize(
            (rgb.shape[1] * factor, rgb.shape[0] * factor), Image.Resampling.BILINEAR))
    center, radius = None, None
    if finding.region_center is not None:
        (x, y), r = marker(finding, source)
        center, radius = (y * factor, x * factor), r * factor
    return draw_annotations(rgb, center, radius, lines), factor


def _orientation(ds: Dataset) -> tuple[str, str]:
    """Patient Orientation (row, column directions) from Image Orientation (Patient); axial by default."""
    letters = (("L", "R"), ("P", "A"), ("H", "F"))
    iop = ds.get("ImageOrientationPatient")
    if not iop or len(iop) != 6:
        return ("L", "P")

    def letter(vector: list[float]) -> str:
        axis = int(np.argmax(np.abs(vector)))
        return letters[axis][0] if vector[axis] >= 0 else letters[axis][1]

    values = [float(v) for v in iop]
    return (letter(values[:3]), letter(values[3:]))


def build_overlay(analysis: StudyAnalysis, finding: Finding, key_image: KeyImage | None, source: Dataset,
                  index: int, generation: int, report_uid: str, device: EquipmentInfo | None) -> OutputObject:
    """One secondary capture for one present finding (index: 1-based position among the overlays).

    Its UID follows the report's (`report_uid`): a superseding report brings new overlays, a repeat the same.
    """
    model = analysis.model
    study_uid = analysis.study_uid or str(source.StudyInstanceUID)
    lines = wording.caption(analysis, finding)
    pixels, factor = render(source, finding, key_image.heatmap if key_image else None, lines)
    series_uid = uids.series_uid(study_uid, model.name, model.version, uids.OVERLAY)
    sop_uid = uids.instance_uid(study_uid, model.name, model.version, uids.OVERLAY, report_uid, finding.label)
    spacing = source.get("PixelSpacing")
    pixel_spacing: tuple[float, float] | None = None
    if spacing and len(spacing) == 2:
        pixel_spacing = (float(spacing[0]) / factor, float(spacing[1]) / factor)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=complete_header(source),
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_uid,
        series_number=series_number(model, uids.OVERLAY),
        sop_instance_uid=sop_uid,
        instance_number=max(1, generation) * 100 + index,
        manufacturer="dicom-node",
        # highdicom 0.28 annotates from_ref_dataset's pixel_spacing as tuple[int, int] (stub gap: it is mm,
        # and SCImage.__init__, which receives it, takes tuple[float, float]).
        pixel_spacing=pixel_spacing,  # type: ignore[arg-type]
        patient_orientation=_orientation(source),
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    sc.BurnedInAnnotation = "YES"
    # Our models are head-only; a body part also settles General Series' Laterality condition.
    sc.BodyPartExamined = str(source.get("BodyPartExamined") or "HEAD")[:16]
    sc.ImageComments = " / ".join(lines)[:10240]
    sc.DerivationDescription = (
        f"Key image {'enlarged x' + str(factor) + ', ' if factor > 1 else ''}with AI explanation map, "
        f"and a caption band below it, for {codes.finding_concept(finding.label).display}")[:1024]
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [reference]
    finish_common(sc, model, device, wording.overlay_series_description(analysis), source)
    log.debug("built overlay", extra={"study_uid": study_uid, "model": model.name, "label": finding.label,
                                      "generation": generation, "sop_instance_uid": sop_uid})
    return OutputObject(kind=uids.OVERLAY, dataset=sc, sop_instance_uid=str(sop_uid), series_uid=str(series_uid),
                        sop_class_uid=str(sc.SOPClassUID), label=finding.label)
