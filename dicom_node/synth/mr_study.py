"""A whole brain MR study for SIH: T1 axial pre, T2 axial, T1 axial and coronal post-gadolinium."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from dicom_node.outputs.codes import sign_label
from dicom_node.synth.dicom_writer import mr_image, synth_uid, write
from dicom_node.synth.ground_truth import seg_path, write_mask_seg
from dicom_node.synth.phantom_mr import GAP_MM, POST_CONTRAST_ROLES, SLICE_MM, render_mr_sih
from dicom_node.synth.study import SynthStudy, series_info, study_folder, study_info

log = logging.getLogger(__name__)

KIND = "mr-sih"
CONTRAST_AGENT = "Gadobutrol"

_T1_SE = {"scanning_sequence": "SE", "sequence_variant": "SP", "scan_options": "", "name": "*se2d1",
          "tr": 550.0, "te": 9.0, "flip": 90}
_T2_TSE = {"scanning_sequence": "SE", "sequence_variant": ["SK", "SP"], "scan_options": "", "name": "*tse2d1_15",
           "tr": 4500.0, "te": 95.0, "etl": 15, "flip": 150}
# role, series number, description, sequence, contrast, minutes after study start
_SERIES = (
    ("t1_ax_pre", 2, "T1 AX PRE", _T1_SE, False, 2),
    ("t2_ax", 3, "T2 AX", _T2_TSE, False, 6),
    ("t1_ax_post", 4, "T1 AX POST GD", _T1_SE, True, 12),
    ("t1_cor_post", 5, "T1 COR POST GD", _T1_SE, True, 16),
)


def write_mr_sih_study(out_dir: Path, seed: int, sih: bool, size: int = 256, distractors: bool = True,
                       patient_index: int = 0, n_axial: int = 20, n_coronal: int = 20,
                       ground_truth: bool = True) -> SynthStudy:
    """Generate and write one brain MR study; `distractors` adds the pre-contrast T1 and T2 series.

    With `ground_truth`, a study with SIH also gets where its signs are, one DICOM SEG per post-contrast
    series under `out_dir/ground-truth/` (see `ground_truth`), listed in `SynthStudy.seg_files`: a segment
    "Spontaneous intracranial hypotension" with every sign's pixels, then one segment per sign shown there
    (`codes.SIH_SIGNS`, e.g. "Pachymeningeal enhancement")."""
    rng = np.random.default_rng([seed, patient_index, 2])
    vols = render_mr_sih(rng, sih, size=size, n_axial=n_axial, n_coronal=n_coronal)
    info = study_info(KIND, seed, patient_index, "MR BRAIN W WO CONTRAST")
    folder = study_folder(out_dir, KIND, seed, patient_index)
    files: list[Path] = []
    series_uids: dict[str, str] = {}
    written: dict[str, list] = {}
    for role, number, description, sequence, contrast, minutes in _SERIES:
        if not distractors and not contrast:
            continue
        series = series_info(info, KIND, seed, patient_index, role, number, description, "MR", "BRAIN", minutes)
        series_uids[role] = series.uid
        pix = vols.series[role]
        for i in range(pix.pixels.shape[0]):
            ds = mr_image(info, series, synth_uid(KIND, seed, patient_index, role, i), i + 1, pix.pixels[i],
                          pix.positions[i], pix.orientation, (pix.spacing, pix.spacing), SLICE_MM, GAP_MM,
                          sequence, CONTRAST_AGENT if contrast else None)
            slug = description.lower().replace(" ", "-")
            files.append(write(ds, folder / f"{number:03d}-{slug}" / f"{i + 1:04d}.dcm"))
            written.setdefault(role, []).append(ds)
    segs = []
    for role in POST_CONTRAST_ROLES if ground_truth and vols.signs else ():
        sops = [str(ds.SOPInstanceUID) for ds in written[role]]
        by_label = {"sih": {sop: m for sop, m in zip(sops, vols.sign_masks[role], strict=True) if m.any()}}
        for sign, part in vols.sign_parts[role].items():
            by_label[sign_label(sign)] = {sop: m for sop, m in zip(sops, part, strict=True) if m.any()}
        by_label = {label: masks for label, masks in by_label.items() if masks}
        if by_label:
            segs.append(write_mask_seg(seg_path(out_dir, folder.name, role), KIND, seed, patient_index,
                                       written[role], by_label, role))
    log.debug("wrote MR study", extra={"study_uid": info.study_uid, "files": len(files), "sih": int(sih),
                                       "signs": ",".join(vols.signs)})
    return SynthStudy(info.study_uid, folder, files, series_uids["t1_ax_post"], {}, {"sih": int(sih)}, KIND,
                      series_uids, seed, patient_index, vols.signs, seg_files=tuple(segs))
