"""Sets of generated studies with their label files: `generate(kind, n, seed, out)`.

`out/labels.csv`: for ct-head the RSNA intracranial hemorrhage format (`ID,Label`, one row
`ID_<SOPInstanceUID>_<label>` per label and slice of the primary axial series); for mr-sih one row per
study (`StudyInstanceUID,sih`). `out/studies.csv`: `StudyInstanceUID,kind,folder,<labels...>` with the
folder relative to `out`.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from dicom_node.synth.ct_study import write_ct_head_study
from dicom_node.synth.hemorrhage import SUBTYPES
from dicom_node.synth.mr_study import write_mr_sih_study
from dicom_node.synth.study import CT_LABELS, MR_LABELS, SynthStudy

log = logging.getLogger(__name__)

KINDS = ("ct-head", "mr-sih")
NORMAL_FRACTION = 0.4


def draw_ct_findings(n: int, seed: int) -> list[tuple[str, ...]]:
    """Findings per study: ~40 % normal; positives rotate through the subtypes and add random others."""
    rng = np.random.default_rng([seed, 101])
    n_normal = round(n * NORMAL_FRACTION)
    positive = np.ones(n, bool)
    positive[rng.permutation(n)[:n_normal]] = False
    start = int(rng.integers(0, len(SUBTYPES)))
    result: list[tuple[str, ...]] = []
    k = 0
    for is_positive in positive:
        if not is_positive:
            result.append(())
            continue
        chosen = {SUBTYPES[(start + k) % len(SUBTYPES)]}
        k += 1
        extra = int(rng.choice([0, 1, 2], p=[0.55, 0.3, 0.15]))
        chosen.update(str(s) for s in rng.choice(SUBTYPES, size=extra, replace=False))
        result.append(tuple(s for s in SUBTYPES if s in chosen))
    return result


def draw_sih(n: int, seed: int) -> list[bool]:
    """Half of the studies SIH-positive (the odd one out at random), shuffled."""
    rng = np.random.default_rng([seed, 102])
    flags = np.zeros(n, bool)
    flags[: n // 2 + int(n % 2 and rng.random() < 0.5)] = True
    return [bool(v) for v in rng.permutation(flags)]


def generate(kind: str, n: int, seed: int, out: Path, progress: Callable[[Iterable[int]], Iterable[int]] | None
             = None, **kw: Any) -> list[SynthStudy]:
    """Write `n` studies of `kind` under `out` plus `labels.csv` and `studies.csv`.

    Extra keyword arguments go to the study writer (ct-head: n_slices, size, distractors; mr-sih: size,
    distractors, n_axial, n_coronal). `progress` wraps the index iterable (e.g. tqdm).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    indices: Iterable[int] = range(n)
    if progress is not None:
        indices = progress(indices)
    studies: list[SynthStudy] = []
    if kind == "ct-head":
        findings = draw_ct_findings(n, seed)
        for i in indices:
            studies.append(write_ct_head_study(out, seed, findings[i], patient_index=i, **kw))
    else:
        flags = draw_sih(n, seed)
        for i in indices:
            studies.append(write_mr_sih_study(out, seed, flags[i], patient_index=i, **kw))
    write_labels(studies, kind, out)
    log.info("generated studies", extra={"kind": kind, "n": n, "seed": seed, "out": str(out)})
    return studies


def write_labels(studies: list[SynthStudy], kind: str, out: Path) -> None:
    labels = CT_LABELS if kind == "ct-head" else MR_LABELS
    with open(out / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        if kind == "ct-head":
            w.writerow(["ID", "Label"])
            for st in studies:
                for sop, row in st.slice_labels.items():
                    for label in CT_LABELS:
                        w.writerow([f"ID_{sop}_{label}", row[label]])
        else:
            w.writerow(["StudyInstanceUID", *MR_LABELS])
            for st in studies:
                w.writerow([st.study_uid, *(st.study_labels[label] for label in MR_LABELS)])
    with open(out / "studies.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["StudyInstanceUID", "kind", "folder", *labels])
        for st in studies:
            w.writerow([st.study_uid, st.kind, st.folder.relative_to(out).as_posix(),
                        *(st.study_labels[label] for label in labels)])
