"""Every series in ../shared/data (real scanners and tools) gets the selection decision written here from
the rules the shipped manifests declare: "ich", "axial"/"coronal" (SIH), or a fragment of the reason
it is refused. A series added to the folder fails the test until it is given its decision.

Path from DICOM_NODE_SHARED_DATA, default <repo>/../shared/data; the suite fails, with what to do, when that folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ml_helpers import decide
from shared_data import DATA, require_data

from dicom_node.ml.datasets import scan_dicom
from dicom_node.ml.selection import group_series

pytestmark = pytest.mark.shared_data

require_data()

NOT_READ = "is not a single-frame image class"  # Enhanced (multi-frame) CT/MR: neither pipeline reads them
T1_WORDS = "matches none of ['t1'"

# the series' first file (sorted path) -> decision
DECISIONS = {
    "brain_mr/ge_brain_sella_3plane_loc/mr.dcm": T1_WORDS,  # GE 3-PLANE LOC
    "brain_mr/nema_wg04_mr1_toshiba_t2_brain_slice/MR1_J2KI.dcm": "ImageType contains SECONDARY",
    "brain_mr/nema_wg04_mr1_toshiba_t2_brain_slice/MR1_RLE.dcm": "ImageType contains SECONDARY",
    "brain_mr/nema_wg04_mr4_philips_stir_brain_slice/MR4_J2KI.dcm": T1_WORDS,  # STIR, no description
    "brain_mr/nema_wg04_mr4_philips_stir_brain_slice/MR4_RLE.dcm": "ImageType contains SECONDARY",
    "brain_mr/philips_head_survey_j2k/GH064.dcm": T1_WORDS,  # Philips Survey_MST
    "brain_mr/siemens_epi_mosaic_compressed/jp2k1.dcm": T1_WORDS,  # fMRI mosaic
    "brain_mr/siemens_epi_mosaic_compressed/jpg1.dcm": T1_WORDS,
    "brain_mr/siemens_head_loc_mpr_cor_jpegll/GH1261.dcm": "ImageType contains MPR",  # Siemens localizer MPR
    "head_ct/cq500_ct310_ich_single_slice/693_J2KI.dcm": "fewer than 8",  # "5/5mm Plain": one slice, 3 encodings
    "head_ct/ge_hispeed_head_gantry_tilt_series/01.dcm": "ich",  # 28 slices, 18.5 deg gantry tilt, no description
    "head_ct/nema_wg04_ct2_toshiba_head_slice/CT2_J2KI.dcm": "ImageType contains SECONDARY",
    "head_ct/nema_wg04_ct2_toshiba_head_slice/CT2_RLE.dcm": "ImageType contains SECONDARY",
    "odd/compressed/D_CLUNIE_CT1_RLE_FRAGS.dcm": "ImageType contains SECONDARY",
    "odd/compressed/bad_sequence.dcm": "body part NECK",
    "odd/compressed/explicit_VR-UN.dcm": "body part PANCREAS",
    "odd/multi_fragment_compressed/5001_anat-T1w_acq-tfl_5001047.dcm": "orientation is sagittal",
    "odd/multi_fragment_compressed/6001_anat-T1w_acq-tfl_6001047_1.3.12.2.1107.5.2.43.67093."
    "30000023011319484937100000539.dcm": "orientation is sagittal",
    "odd/multiframe_enhanced/eCT_Supplemental.dcm": NOT_READ,
    "odd/multiframe_enhanced/emri_small.dcm": NOT_READ,
    "odd/private_tags_agfa_renamed/Agfa_011-0001.img.dcm": NOT_READ,
    "odd/private_tags_agfa_renamed/Siemens_011-0001.img.dcm": NOT_READ,
    "odd/private_tags_overlays/MR-SIEMENS-DICOM-WithOverlays.dcm": "ImageType contains MPR/SECONDARY",
    "sr_seg_sc/dcm4che_enhanced_sr_deflate/report_dfl.dcm": "modality SR",
    "sr_seg_sc/dcmqi_liver_seg/ct-3slice/01.dcm": "fewer than 8",
    "sr_seg_sc/dcmqi_liver_seg/liver.dcm": "modality SEG",
    "sr_seg_sc/dcmqi_liver_seg/partial_overlaps.dcm": "modality SEG",
    "sr_seg_sc/dcmqi_qin_headneck/rwvm.dcm": "modality RWV",
    "sr_seg_sc/dcmqi_qin_headneck/seg.dcm": "modality SEG",
    "sr_seg_sc/dcmqi_qin_headneck/sr.dcm": "modality SR",
    "sr_seg_sc/dcmtk_offis_sr/reportsi.dcm": "modality SR",
    "sr_seg_sc/dcmtk_offis_sr/test-SR.dcm": "modality SR",
    "sr_seg_sc/highdicom/ct_image.dcm": "contrast given ('ISOVUE300/100')",  # ContrastBolusAgent set
    "sr_seg_sc/highdicom/seg_image_ct_binary.dcm": "modality SEG",
    "sr_seg_sc/highdicom/seg_image_ct_binary_fractional.dcm": "modality SEG",
    "sr_seg_sc/highdicom/seg_image_ct_binary_overlap.dcm": "modality SEG",
    "sr_seg_sc/highdicom/seg_image_ct_binary_single_frame.dcm": "modality SEG",
    "sr_seg_sc/highdicom/seg_image_ct_true_fractional.dcm": "modality SEG",
    "sr_seg_sc/highdicom/sr_document_with_multiple_groups.dcm": "modality SR",
    "sr_seg_sc/openrem_ct_dose_sr/CT-ESR-GE_Optima.dcm": "modality SR",  # dose reports
    "sr_seg_sc/openrem_ct_dose_sr/CT-RDSR-GEPixelMed.dcm": "modality SR",
    "sr_seg_sc/openrem_ct_dose_sr/CT-RDSR-Siemens_Flash-TAP-SS.dcm": "modality SR",
    "sr_seg_sc/openrem_ct_dose_sr/CT-RDSR-Toshiba_DoseCheck.dcm": "modality SR",
    "sr_seg_sc/secondary_capture_philips_ct_exam_summary/I10.dcm": "ImageType contains SECONDARY",  # Exam Summary
}


def test_every_shared_series_gets_its_decision() -> None:
    got = {}
    for group in group_series(scan_dicom(DATA)).values():
        got[min(str(Path(r.path).relative_to(DATA)) for r in group)] = decide(group)
    assert sorted(got) == sorted(DECISIONS), "series added or removed under shared/data: give each a decision"
    wrong = {k: v for k, v in got.items() if DECISIONS[k] not in v}
    assert not wrong, wrong
