"""Sets of generated studies with their label files: `generate(kind, n, seed, out)`.

`out/labels.csv`: for ct-head the RSNA intracranial hemorrhage format (`ID,Label`, one row
`ID_<SOPInstanceUID>_<label>` per label and slice of the primary axial series); for mr-sih one row per
study (`StudyInstanceUID,sih`). `out/studies.csv`: `StudyInstanceUID,kind,folder,<labels...>` with the
folder relative to `out`. ct-head also writes the strong annotations: `out/ground-truth/<folder>-seg.dcm`
(a DICOM SEG per study with lesions) and `out/boxes.csv` (per-slice boxes; see `ground_truth`); mr-sih
writes where a positive study's signs are (`out/ground-truth/<folder>-<series role>-seg.dcm`). mr-swi
writes its own label files (`swi_study.write_swi_labels`: labels.csv, studies.csv with `microbleeds` and
`svd_class`, bleeds.csv) and a SEG of every study with bleeds.

Study `i` of a set is a function of (seed, i) only: `--n 2` and `--n 3` with one seed share their first
two studies, pixels, lesions and UIDs alike.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from dicom_node.synth.ct_study import write_ct_head_study
from dicom_node.synth.ground_truth import write_boxes_csv
from dicom_node.synth.hemorrhage import SUBTYPES
from dicom_node.synth.mr_study import write_mr_sih_study
from dicom_node.synth.study import CT_LABELS, MR_LABELS, SynthStudy

log = logging.getLogger(__name__)

KINDS = ("ct-head", "mr-sih", "mr-swi")
NORMAL_FRACTION = 0.4


BLOCK = 10  # findings are balanced within consecutive blocks of this many study indices


def ct_findings(seed: int, index: int, only: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Findings of study `index` of a set: a function of (seed, index) only, so `--n` never changes a study.

    In each block of BLOCK consecutive indices 40 % are normal and the positives rotate through the
    subtypes (from a random start), each adding 0-2 random others. With `only` (some subtypes: an enriched
    set, e.g. for fitting the ensemble where two subtypes are confused), no study is normal and the first
    finding rotates through those subtypes; the others are drawn as before."""
    unknown = sorted(set(only) - set(SUBTYPES))
    if unknown:
        raise ValueError(f"unknown hemorrhage subtype(s) {unknown}; expected some of {list(SUBTYPES)}")
    primaries = tuple(s for s in SUBTYPES if s in only) or SUBTYPES
    block, slot = divmod(index, BLOCK)
    rng = np.random.default_rng([seed, 101, block])
    order = rng.permutation(BLOCK)
    start = int(rng.integers(0, len(primaries)))
    rank = int(np.flatnonzero(order == slot)[0])
    n_normal = 0 if only else round(BLOCK * NORMAL_FRACTION)
    if rank < n_normal:
        return ()
    chosen = {primaries[(start + rank - n_normal) % len(primaries)]}
    extra_rng = np.random.default_rng([seed, 103, index])
    extra = int(extra_rng.choice([0, 1, 2], p=[0.55, 0.3, 0.15]))
    chosen.update(str(s) for s in extra_rng.choice(SUBTYPES, size=extra, replace=False))
    return tuple(s for s in SUBTYPES if s in chosen)


def sih_flag(seed: int, index: int) -> bool:
    """SIH or not for study `index`: one of each in every pair of indices, order at random."""
    pair, slot = divmod(index, 2)
    first_positive = bool(np.random.default_rng([seed, 102, pair]).random() < 0.5)
    return first_positive == (slot == 0)


def draw_ct_findings(n: int, seed: int) -> list[tuple[str, ...]]:
    return [ct_findings(seed, i) for i in range(n)]


def draw_sih(n: int, seed: int) -> list[bool]:
    return [sih_flag(seed, i) for i in range(n)]


def generate(kind: str, n: int, seed: int, out: Path, progress: Callable[[Iterable[int]], Iterable[int]] | None
             = None, only: tuple[str, ...] = (), **kw: Any) -> list[SynthStudy]:
    """Write `n` studies of `kind` under `out` plus `labels.csv` and `studies.csv`; `only` (ct-head) limits
    the first finding of every study to those subtypes (`ct_findings`).

    Extra keyword arguments go to the study writer (ct-head: n_slices, size, distractors; mr-sih: size,
    distractors, n_axial, n_coronal). `progress` wraps the index iterable (e.g. tqdm).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if only and kind != "ct-head":
        raise ValueError("only (a subset of hemorrhage subtypes) applies to ct-head studies")
    ct_findings(seed, 0, only)  # an unknown subtype is refused before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    indices: Iterable[int] = range(n)
    if progress is not None:
        indices = progress(indices)
    studies: list[SynthStudy] = []
    if kind == "ct-head":
        for i in indices:
            studies.append(write_ct_head_study(out, seed, ct_findings(seed, i, only), patient_index=i, **kw))
        write_boxes_csv(out / "boxes.csv", (b for st in studies for b in st.boxes))
    elif kind == "mr-swi":
        from dicom_node.synth.swi_study import write_mr_swi_study, write_swi_labels

        swi = [write_mr_swi_study(out, seed, patient_index=i, **kw) for i in indices]
        write_swi_labels(swi, out)
        log.info("generated studies", extra={"kind": kind, "n": n, "seed": seed, "out": str(out)})
        return list(swi)
    else:
        for i in indices:
            studies.append(write_mr_sih_study(out, seed, sih_flag(seed, i), patient_index=i, **kw))
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
