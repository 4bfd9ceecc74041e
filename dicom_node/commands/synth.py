"""`dicom-node synth --kind {ct-head,mr-sih,mr-swi,reports} --n N --seed S --out DIR`: generated studies plus
labels.csv (ct-head: also ground-truth lesion masks as DICOM SEG and boxes.csv; mr-sih: where the SIH signs
are, as DICOM SEG; mr-swi: the bleeds as DICOM SEG); for reports, report texts
(reports.csv) and their 16 labels (labels.csv)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dicom_node.synth.studies import KINDS, generate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", required=True, choices=(*KINDS, "reports"),
                        help="ct-head (ICH), mr-sih (SIH), mr-swi (microbleeds on SWI) or reports (head CT / brain "
                        "MR report texts: reports.csv id,modality,text + labels.csv id,<16 labels>)")
    parser.add_argument("--n", type=int, required=True, help="number of studies")
    parser.add_argument("--seed", type=int, required=True, help="random seed: same seed, same files and UIDs")
    parser.add_argument("--out", type=Path, required=True, help="output folder (labels.csv, studies.csv)")
    parser.add_argument("--size", type=int, default=None, help="image matrix (default 512 CT, 256 MR)")
    parser.add_argument("--slices", type=int, default=None, help="CT axial slices or SWI slices (default 40)")
    parser.add_argument("--no-distractors", action="store_true",
                        help="only the primary series (no scout/bone/dose report, no pre-contrast T1/T2)")
    parser.add_argument("--no-seg", action="store_true",
                        help="skip the ground-truth DICOM SEG per study (ct-head: boxes.csv is still written)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--only", default="", metavar="SUBTYPE[,SUBTYPE]",
                        help="ct-head: no normal studies; each study's first finding is one of these subtypes "
                        "(others may join it as usual), e.g. epidural,subdural for an enriched calibration set")


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        print("synth: --n must be >= 1", file=sys.stderr)
        return 2
    if args.kind == "reports":
        return _reports(args)
    kw: dict[str, Any] = {"distractors": not args.no_distractors}
    if args.size is not None:
        kw["size"] = args.size
    if args.slices is not None:
        if args.kind not in ("ct-head", "mr-swi"):
            print("synth: --slices applies to --kind ct-head and mr-swi only", file=sys.stderr)
            return 2
        kw["n_slices"] = args.slices
    if args.no_seg:
        kw["ground_truth"] = False
    if args.only:
        kw["only"] = tuple(v.strip() for v in args.only.split(",") if v.strip())
    progress = None
    if not args.no_progress:
        from tqdm import tqdm

        def progress(it: Any) -> Any:
            return tqdm(it, total=args.n, desc=f"synth {args.kind}", unit="study", file=sys.stderr)

    try:
        studies = generate(args.kind, args.n, args.seed, args.out, progress=progress, **kw)
    except ValueError as exc:
        print(f"synth: {exc}", file=sys.stderr)
        return 2
    files = sum(len(s.files) for s in studies)
    segs = sum((s.seg_file is not None) + len(s.seg_files) for s in studies)
    extra = f", {segs} ground-truth SEG(s) in {args.out / 'ground-truth'}" if args.kind == "mr-sih" else ""
    if args.kind == "ct-head":
        extra = f", {segs} ground-truth SEG(s) in {args.out / 'ground-truth'}, boxes in {args.out / 'boxes.csv'}"
    print(f"{len(studies)} {args.kind} studies, {files} files, labels in {args.out / 'labels.csv'}{extra}")
    return 0


def _reports(args: argparse.Namespace) -> int:
    from dicom_node.textreports.generator import generate as generate_reports
    from dicom_node.textreports.generator import write_reports

    n = write_reports(generate_reports(args.n, args.seed), args.out)
    print(f"{n} reports, texts in {args.out / 'reports.csv'}, labels in {args.out / 'labels.csv'}")
    return 0
