"""A brain MR study for cerebral microbleeds as a scanner sends it: SWI series in one vendor's style plus
T1 / T2 / FLAIR distractors, with ground truth (a SEG of every bleed and the bleeds' centres).

Vendor styles (descriptions and ImageType as the four main vendors write them; one per study, drawn from
(seed, index)); the SWI geometry is the same in each:

| vendor | SWI image read by the model | phase | minimum intensity projection |
| --- | --- | --- | --- |
| Siemens | `SWI_Images` DERIVED\\PRIMARY\\M\\SWI (+ raw `Mag_Images` ORIGINAL\\PRIMARY\\M\\ND) | `Pha_Images` ORIGINAL\\PRIMARY\\P\\ND | `mIP_Images(SW)` DERIVED\\PRIMARY\\MNIP |
| GE | `Ax SWAN` ORIGINAL\\PRIMARY\\OTHER | `Ax SWAN Filt_Phase` ORIGINAL\\PRIMARY\\PHASE | `Ax SWAN MinIP` DERIVED\\SECONDARY\\REFORMATTED\\MIN IP |
| Philips | `SWIp` ORIGINAL\\PRIMARY\\M_FFE\\M\\FFE | `SWIp_Pha` ORIGINAL\\PRIMARY\\PHASE MAP\\P\\FFE | `SWIp mIP` DERIVED\\PRIMARY\\MINIP\\M\\FFE |
| Canon | `VenBOLD` ORIGINAL\\PRIMARY\\OTHER | `VenBOLD_Phase` ORIGINAL\\PRIMARY\\PHASE | `VenBOLD mIP` DERIVED\\SECONDARY\\MINIP |

Ground truth (outside the study folder, so sending a study never sends its answer): the SEG
`<out>/ground-truth/<folder>-seg.dcm` over the SWI image series with one segment per bleed ("Microbleed 3
(lobar)"), written by `outputs.seg.build_seg` with the generator as its algorithm; the bleeds (`SwiBleed`:
centre in patient mm, diameter, lobar/deep, site, the slice where it is largest and its pixel centre there)
go to `bleeds.csv` through `studies.generate`.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from dicom_node import __version__
from dicom_node.synth.dicom_writer import mr_image, synth_uid, write
from dicom_node.synth.ground_truth import GENERATOR, seg_path
from dicom_node.synth.study import SynthStudy, series_info, study_folder, study_info
from dicom_node.synth.swi_phantom import (
    CLASSES,
    SLICE_MM,
    STRUCT_GAP_MM,
    STRUCT_SLICE_MM,
    SwiVolumes,
    class_for_index,
    render_swi,
)

log = logging.getLogger(__name__)

KIND = "mr-swi"
FULL_SIZE = 256
VENDORS = ("siemens", "ge", "philips", "canon")
SWI_LABELS: tuple[str, ...] = ("microbleeds", "svd_class")
BLEED_FIELDS = ("StudyInstanceUID", "bleed", "x_mm", "y_mm", "z_mm", "diameter_mm", "location", "site",
                "SOPInstanceUID", "row", "col")
SEG_SERIES_NUMBER = 900
SEG_DESCRIPTION = "Ground truth microbleed masks (generated)"

_SWI_SEQUENCE = {"scanning_sequence": "GR", "sequence_variant": ["SP", "OSP"], "scan_options": "", "name": "*swi3d1r",
                 "tr": 28.0, "te": 20.0, "flip": 15}
_T1 = {"scanning_sequence": "SE", "sequence_variant": "SP", "scan_options": "", "name": "*se2d1", "tr": 550.0,
       "te": 9.0, "flip": 90}
_T2 = {"scanning_sequence": "SE", "sequence_variant": ["SK", "SP"], "scan_options": "", "name": "*tse2d1_15",
       "tr": 4500.0, "te": 95.0, "etl": 15, "flip": 150}
_FLAIR = {"scanning_sequence": ["SE", "IR"], "sequence_variant": ["SK", "SP", "MP"], "scan_options": "IR",
          "name": "*tir2d1_21", "tr": 9000.0, "te": 90.0, "ti": 2500.0, "etl": 21, "flip": 150}

# vendor -> [(role, description, ImageType)] in series order; roles: swi, mag, phase, mip
_VENDOR_SERIES: dict[str, list[tuple[str, str, list[str]]]] = {
    "siemens": [("mag", "Mag_Images", ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"]),
                ("phase", "Pha_Images", ["ORIGINAL", "PRIMARY", "P", "ND"]),
                ("mip", "mIP_Images(SW)", ["DERIVED", "PRIMARY", "MNIP", "ND", "NORM"]),
                ("swi", "SWI_Images", ["DERIVED", "PRIMARY", "M", "SWI", "ND", "NORM"])],
    "ge": [("swi", "Ax SWAN", ["ORIGINAL", "PRIMARY", "OTHER"]),
           ("phase", "Ax SWAN Filt_Phase", ["ORIGINAL", "PRIMARY", "PHASE"]),
           ("mip", "Ax SWAN MinIP", ["DERIVED", "SECONDARY", "REFORMATTED", "MIN IP"])],
    "philips": [("swi", "SWIp", ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"]),
                ("phase", "SWIp_Pha", ["ORIGINAL", "PRIMARY", "PHASE MAP", "P", "FFE"]),
                ("mip", "SWIp mIP", ["DERIVED", "PRIMARY", "MINIP", "M", "FFE"])],
    "canon": [("swi", "VenBOLD", ["ORIGINAL", "PRIMARY", "OTHER"]),
              ("phase", "VenBOLD_Phase", ["ORIGINAL", "PRIMARY", "PHASE"]),
              ("mip", "VenBOLD mIP", ["DERIVED", "SECONDARY", "MINIP"])],
}
_DISTRACTORS = (("t1", 2, "T1 AX", _T1), ("t2", 3, "T2 AX", _T2), ("flair", 4, "FLAIR AX", _FLAIR))


@dataclass(frozen=True)
class SwiBleed:
    """One ground-truth bleed as `bleeds.csv` lists it."""

    study_uid: str
    index: int
    center: tuple[float, float, float]
    diameter_mm: float
    location: str
    site: str
    sop_instance_uid: str  # the SWI image where its mask is largest
    row: float  # mask centroid there (pixels)
    col: float


@dataclass(frozen=True)
class SwiStudy(SynthStudy):
    svd_class: str = "none"
    bleeds: tuple[SwiBleed, ...] = ()
    vendor: str = ""


def vendor_for_index(seed: int, patient_index: int) -> str:
    return VENDORS[int(np.random.default_rng([seed, patient_index, 304]).integers(len(VENDORS)))]


def write_mr_swi_study(out_dir: Path, seed: int, svd_class: str | None = None, size: int = FULL_SIZE,
                       n_slices: int = 40, distractors: bool = True, patient_index: int = 0,
                       ground_truth: bool = True, vendor: str | None = None) -> SwiStudy:
    """Generate and write one SWI brain MR study. The class and vendor default to those of (seed, index)."""
    svd_class = svd_class or class_for_index(seed, patient_index)
    vendor = vendor or vendor_for_index(seed, patient_index)
    if svd_class not in CLASSES:
        raise ValueError(f"svd_class must be one of {CLASSES}, got {svd_class!r}")
    if vendor not in _VENDOR_SERIES:
        raise ValueError(f"vendor must be one of {VENDORS}, got {vendor!r}")
    rng = np.random.default_rng([seed, patient_index, 3])
    vols = render_swi(rng, svd_class, size=size, n_slices=n_slices)
    info = study_info(KIND, seed, patient_index, "MR BRAIN WO CONTRAST")
    folder = study_folder(out_dir, KIND, seed, patient_index)
    gain = float(np.random.default_rng([seed, patient_index, 5]).uniform(1900, 2600))
    files: list[Path] = []
    series_uids: dict[str, str] = {}
    swi_datasets: list[Dataset] = []
    arrays = {"swi": vols.swi, "mag": vols.magnitude, "mip": vols.mip, "phase": vols.phase}
    if distractors:
        for role, number, description, sequence in _DISTRACTORS:
            pix = {"t1": vols.t1, "t2": vols.t2, "flair": vols.flair}[role]
            files += _write_series(folder, info, seed, patient_index, role, number, description, sequence, pix,
                                   vols, vols.z_struct, STRUCT_SLICE_MM, STRUCT_GAP_MM, None, gain, series_uids)
    for k, (role, description, image_type) in enumerate(_VENDOR_SERIES[vendor]):
        written = _write_series(folder, info, seed, patient_index, role, 5 + k, description, _SWI_SEQUENCE,
                                arrays[role], vols, vols.z, SLICE_MM, 0.0, image_type, gain, series_uids,
                                keep=swi_datasets if role == "swi" else None)
        files += written
    bleeds = _bleed_records(info.study_uid, vols, swi_datasets)
    seg_file = _write_seg(out_dir, folder.name, seed, patient_index, swi_datasets, vols) if ground_truth else None
    counts = {"microbleeds": len(vols.bleeds), "lobar": sum(b.location == "lobar" for b in vols.bleeds),
              "deep": sum(b.location == "deep" for b in vols.bleeds)}
    log.debug("wrote SWI study", extra={"study_uid": info.study_uid, "files": len(files), "class": svd_class,
                                        "microbleeds": len(vols.bleeds), "vendor": vendor})
    return SwiStudy(info.study_uid, folder, files, series_uids["swi"], {}, counts, KIND, series_uids, seed,
                    patient_index, (svd_class,), seg_file, (), svd_class=svd_class, bleeds=bleeds, vendor=vendor)


def _write_series(folder: Path, info: Any, seed: int, index: int, role: str, number: int, description: str,
                  sequence: dict[str, Any], pixels: np.ndarray, vols: SwiVolumes, z: np.ndarray, thickness: float,
                  gap: float, image_type: list[str] | None, gain: float, series_uids: dict[str, str],
                  keep: list[Dataset] | None = None) -> list[Path]:
    series = series_info(info, KIND, seed, index, role, number, description, "MR", "BRAIN", number * 3)
    series_uids[role] = series.uid
    c0 = float(vols.coords[0])
    files = []
    if role == "phase":
        stored = np.clip(np.rint(pixels / np.pi * 2048 + 2048), 0, 4095)
    else:
        stored = np.clip(np.rint(pixels * gain), 0, 4095)
    for i in range(len(pixels)):
        ds = mr_image(info, series, synth_uid(KIND, seed, index, role, i), i + 1, stored[i],
                      (c0, c0, float(z[i])), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), (vols.spacing, vols.spacing),
                      thickness, gap, sequence, None)
        if image_type is not None:
            ds.ImageType = image_type
            ds.MRAcquisitionType = "3D"
        if role == "phase":
            ds.WindowCenter, ds.WindowWidth = "2048", "4096"
        slug = "".join(ch if ch.isalnum() else "-" for ch in description.lower()).strip("-")
        files.append(write(ds, folder / f"{number:03d}-{slug}" / f"{i + 1:04d}.dcm"))
        if keep is not None:
            keep.append(ds)
    return files


def _bleed_records(study_uid: str, vols: SwiVolumes, swi: list[Dataset]) -> tuple[SwiBleed, ...]:
    out = []
    for b in vols.bleeds:
        areas = (vols.masks == b.index).sum(axis=(1, 2))
        i = int(np.argmax(areas))
        rows, cols = np.nonzero(vols.masks[i] == b.index)
        out.append(SwiBleed(study_uid, b.index, b.center, b.diameter_mm, b.location, b.site,
                            str(swi[i].SOPInstanceUID), round(float(rows.mean()), 2), round(float(cols.mean()), 2)))
    return tuple(out)


def bleed_name(index: int, location: str) -> str:
    """How a bleed is named on screen, in the SEG and the SR: "Microbleed 3 (lobar)"."""
    return f"Microbleed {index} ({location})"


def _write_seg(out_dir: Path, folder_name: str, seed: int, index: int, swi: list[Dataset],
               vols: SwiVolumes) -> Path | None:
    from dicom_node.outputs.codes import coding_scheme_identification
    from dicom_node.outputs.seg import SegAlgorithm, SegmentMask, build_seg

    if not vols.bleeds:
        return None
    segments = []
    for b in vols.bleeds:
        masks = {str(ds.SOPInstanceUID): vols.masks[i] == b.index for i, ds in enumerate(swi)
                 if (vols.masks[i] == b.index).any()}
        segments.append(SegmentMask("microbleed", masks, bleed_name(b.index, b.location)))
    seg = build_seg(swi, segments,
                    series_uid=synth_uid(KIND, seed, index, "series", "ground-truth-seg"),
                    sop_uid=synth_uid(KIND, seed, index, "ground-truth-seg", 0),
                    series_number=SEG_SERIES_NUMBER, instance_number=1,
                    algorithm=SegAlgorithm(GENERATOR, __version__, None), series_description=SEG_DESCRIPTION)
    seg.dataset.CodingSchemeIdentificationSequence = coding_scheme_identification()  # 99DCMNODE is private
    return write(seg.dataset, seg_path(out_dir, folder_name))


def write_swi_labels(studies: list[SwiStudy], out: Path) -> None:
    """`labels.csv` (`StudyInstanceUID,microbleeds,lobar,deep,svd_class`), `studies.csv`
    (`StudyInstanceUID,kind,folder,microbleeds,svd_class`) and `bleeds.csv` (one row per bleed)."""
    with open(out / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["StudyInstanceUID", "microbleeds", "lobar", "deep", "svd_class"])
        for st in studies:
            w.writerow([st.study_uid, st.study_labels["microbleeds"], st.study_labels["lobar"],
                        st.study_labels["deep"], st.svd_class])
    with open(out / "studies.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["StudyInstanceUID", "kind", "folder", *SWI_LABELS])
        for st in studies:
            w.writerow([st.study_uid, st.kind, st.folder.relative_to(out).as_posix(), st.study_labels["microbleeds"],
                        st.svd_class])
    with open(out / "bleeds.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(BLEED_FIELDS)
        for st in studies:
            for b in st.bleeds:
                w.writerow([b.study_uid, b.index, *(f"{v:.2f}" for v in b.center), f"{b.diameter_mm:.2f}", b.location,
                            b.site, b.sop_instance_uid, f"{b.row:.2f}", f"{b.col:.2f}"])


def read_bleeds_csv(path: Path) -> dict[str, list[SwiBleed]]:
    """`bleeds.csv` back as {StudyInstanceUID: [SwiBleed, ...]}."""
    out: dict[str, list[SwiBleed]] = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            out.setdefault(r["StudyInstanceUID"], []).append(SwiBleed(
                r["StudyInstanceUID"], int(r["bleed"]), (float(r["x_mm"]), float(r["y_mm"]), float(r["z_mm"])),
                float(r["diameter_mm"]), r["location"], r["site"], r["SOPInstanceUID"], float(r["row"]),
                float(r["col"])))
    return out


def read_seg_bleeds(path: Path) -> dict[int, dict[str, np.ndarray]]:
    """A ground-truth SEG (one segment per bleed) back as {bleed index: {source SOPInstanceUID: bool mask}};
    the index is the number in the segment label ("Microbleed 3 (lobar)"), else the segment number."""
    import re

    import highdicom as hd

    seg = hd.seg.segread(str(path))
    sources = [str(uid) for _, _, uid in seg.get_source_image_uids()]
    numbers = list(seg.segment_numbers)
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=sources, segment_numbers=numbers,
                                               ignore_spatial_locations=True, assert_missing_frames_are_empty=True)
    out: dict[int, dict[str, np.ndarray]] = {}
    for j, number in enumerate(numbers):
        label = str(seg.get_segment_description(number).segment_label)
        found = re.search(r"(\d+)", label)
        index = int(found.group(1)) if found else int(number)
        for i, sop in enumerate(sources):
            m = pixels[i, ..., j] > 0
            if m.any():
                out.setdefault(index, {})[sop] = m
    return out
