"""Synthetic head CT and brain MR studies with labels (see `dicom-node synth`).

    write_ct_head_study(out_dir, seed, findings=(), n_slices=40, size=512, distractors=True, patient_index=0)
    write_mr_sih_study(out_dir, seed, sih, size=256, distractors=True, patient_index=0)
    generate(kind, n, seed, out, **kw)  # kind "ct-head" | "mr-sih"; writes labels.csv and studies.csv
"""

from dicom_node.synth.ct_study import write_ct_head_study
from dicom_node.synth.hemorrhage import SUBTYPES
from dicom_node.synth.mr_study import write_mr_sih_study
from dicom_node.synth.studies import KINDS, generate
from dicom_node.synth.study import CT_LABELS, MR_LABELS, SynthStudy

__all__ = ["CT_LABELS", "KINDS", "MR_LABELS", "SUBTYPES", "SynthStudy", "generate", "write_ct_head_study",
           "write_mr_sih_study"]
