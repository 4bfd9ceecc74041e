"""Lesion masks as a DICOM Segmentation (highdicom), one segment per finding label.

Used for the AI result (a located finding's mask, returned to the PACS with the SR; IHE AIR result
primitive that OHIF displays) and for the generator's ground truth (`synth` writes each study's lesion
masks). A segment's property category is (49755003, SCT, "Morphologically abnormal structure") and its
type is the finding's concept (`codes.finding_concept`), so SR and SEG name a finding the same way.

Frames are written only for source images where a segment has pixels (highdicom `omit_empty_frames`);
a SEG whose every mask is empty is refused (ValueError): there is nothing to show.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from dicom_node.ml.analysis import ModelInfo
from dicom_node.outputs import codes, uids, wording
from dicom_node.outputs.equipment import MANUFACTURER, EquipmentInfo, finish_common
from dicom_node.outputs.headers import complete_header
from dicom_node.outputs.objects import OutputObject

log = logging.getLogger(__name__)

SEG_SERIES_OFFSET = 2  # SEG series number = the model's SR series number + 2 (SR odd, overlays even)


@dataclass(frozen=True)
class SegmentMask:
    """One finding's mask: SOP Instance UID of a source image -> boolean (rows, columns) array. `name`
    replaces the finding's display name as the segment label (e.g. one segment per lesion: "Microbleed 3")."""

    label: str
    masks: Mapping[str, np.ndarray]
    name: str = ""


@dataclass(frozen=True)
class SegAlgorithm:
    """Who drew the masks: the AI model, or the phantom generator (ground truth)."""

    name: str
    version: str
    model: ModelInfo | None = None  # None for the generator


def _description(number: int, segment: SegmentMask, algorithm: SegAlgorithm) -> hd.seg.SegmentDescription:
    concept = codes.finding_concept(segment.label)
    identification = hd.AlgorithmIdentificationSequence(
        name=wording.model_name_lo(algorithm.name), family=codes.ARTIFICIAL_INTELLIGENCE, version=algorithm.version[:64],
        source="dicom-node")
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=(segment.name or concept.display)[:64],
        segmented_property_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        segmented_property_type=concept.code,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=identification,
    )


def build_seg(
    sources: Sequence[Dataset],
    segments: Sequence[SegmentMask],
    series_uid: str,
    sop_uid: str,
    series_number: int,
    instance_number: int,
    algorithm: SegAlgorithm,
    series_description: str,
    device: EquipmentInfo | None = None,
) -> OutputObject:
    """A binary SEG over `sources` (one image each, same series and geometry) with one segment per label."""
    if not sources:
        raise ValueError("build_seg needs the source images the masks were drawn on")
    on_sources = [str(ds.SOPInstanceUID) for ds in sources]
    segments = [s for s in segments if any(np.any(s.masks.get(uid, False)) for uid in on_sources)]
    if not segments:
        raise ValueError("every mask is empty: no segmentation to write")
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    pixels = np.zeros((len(sources), rows, cols, len(segments)), dtype=bool)
    for j, segment in enumerate(segments):
        for i, ds in enumerate(sources):
            mask = segment.masks.get(str(ds.SOPInstanceUID))
            if mask is not None:
                if mask.shape != (rows, cols):
                    raise ValueError(f"mask for {segment.label} is {mask.shape}, the image is {(rows, cols)}")
                pixels[i, ..., j] = mask
    headers = [complete_header(ds) for ds in sources]
    for ds in headers:  # highdicom reads only geometry and identifiers from the sources
        if "PixelData" in ds:
            del ds.PixelData
    seg = hd.seg.Segmentation(
        source_images=headers,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_description(j + 1, s, algorithm) for j, s in enumerate(segments)],
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=wording.model_name_lo(algorithm.name),
        software_versions=algorithm.version[:64],
        device_serial_number="0",
        content_label="LESIONS",
        content_description=f"{wording.model_name_lo(algorithm.name)} lesion masks"[:64],
        omit_empty_frames=True,
    )
    if algorithm.model is not None:
        finish_common(seg, algorithm.model, device, series_description, sources[0])
    else:
        seg.SeriesDescription = series_description[:64]
    log.debug("built SEG", extra={"segments": len(segments), "frames": int(seg.NumberOfFrames)})
    return OutputObject(kind=uids.SEG, dataset=seg, sop_instance_uid=str(sop_uid), series_uid=str(series_uid),
                        sop_class_uid=str(seg.SOPClassUID))


def seg_series_description(model: ModelInfo, labels: Sequence[str]) -> str:
    """E.g. "AI ICH lesion masks: subdural (unverified, synthetic-demo)"."""
    demo = f", {wording.DEMO_MARK}" if model.synthetic_demo else ""
    names = ", ".join(labels)
    text = f"AI {model.name.upper()} masks: {names} (unverified{demo})"
    return text if len(text) <= 64 else f"AI {model.name.upper()} masks (unverified{demo})"[:64]
