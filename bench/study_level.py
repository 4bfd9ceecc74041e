"""Study-level accuracy and localisation through the served path, on studies the models never saw.

Generates head CTs and brain MRs with seeds not used for training (`dicom-node synth` code, 512 px CT with
scout, bone series and dose report; 256 px MR with its distractors), sends them to a node running the
configured models (receiver, assembler, worker, sender in this process, as `demo` does), lets a PACS
receive what comes back, and reads the SRs and SEGs as a viewer would. Prints, per label: study-level
sensitivity and specificity at the shipped thresholds; the normal CTs with any finding Present; for
every Present finding that is true, whether its SR region centre lies inside the head and inside the
true lesion mask (or, for a thin crescent, within the lesion's box on that slice); and the Dice of the
returned SEG against the generator's masks, per subtype. For SIH the lesion is where the study's signs are
(the generator's SEG of the post-contrast series): the centre counts when it is on a sign or within one
pixel of it (the enhancing dura is 1.5-3 px wide at 256 px), and the SEG's Dice is taken over the images it
covers (the analysed images of the key image's series).

    .venv/bin/python bench/study_level.py [--ct 130] [--mr 30] [--seed 7001] [--demo-seeds 20] [--models models]
        [--ich ich/VERSION] [--sih sih/VERSION] [--work DIR] [--json results.json]

--ct 130 gives 52 normal CTs (the generator's mix is 40 % normal). `--demo-seeds N` adds the three studies
`dicom-node demo --seed S` sends (subdural CT, normal CT, SIH MR) for S = 1..N and counts the seeds whose
three answers are exactly right. Studies are sent one association each. `--json` also keeps each study's
truth, verdicts and stated probabilities, so a threshold question can be answered without a new run.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import socket
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from scipy import ndimage

from dicom_node.config import load_config
from dicom_node.delivery.demo_pacs import DemoPacs
from dicom_node.delivery.scu import send_files
from dicom_node.ml.annotations import seg_masks, sih_annotations
from dicom_node.ml.localise import head_mask, mask_dice, near, signal_head_mask
from dicom_node.outputs.codes import FINDINGS, SIH_SIGNS, sign_label, sign_named
from dicom_node.outputs.readback import sr_findings
from dicom_node.outputs.wording import MARK
from dicom_node.runtime.services import build_node
from dicom_node.synth import SUBTYPES, write_ct_head_study, write_mr_sih_study
from dicom_node.synth.studies import ct_findings, sih_flag

REPO = Path(__file__).resolve().parent.parent
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
CT_LABELS = ("any", *SUBTYPES)
CODE_TO_LABEL = {c.code.value: label for label, c in FINDINGS.items()}
THIN_MM = 6.0  # a true mask at most this thick (mm) on the key slice is a thin crescent: its box counts


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(work: Path, models: Path, ich: str, sih: str) -> Path:
    enabled = ""
    for spec in (ich, sih):
        if spec:
            name, version = spec.split("/", 1)
            enabled += f'[[models.enabled]]\nname = "{name}"\nversion = "{version}"\n\n'
    text = f"""[node]
ae_title = "DICOMNODE"
host = "127.0.0.1"
port = {_port()}

[[callers]]
ae_title = "BENCH"
host = "127.0.0.0/8"

[[destinations]]
name = "pacs"
ae_title = "BENCH"
host = "127.0.0.1"
port = {_port()}

[database]
url = "sqlite:///{work / 'node.db'}"

[storage]
path = "{work / 'store'}"
quarantine = "{work / 'quarantine'}"
outbox = "{work / 'outbox'}"
min_free_mb = 100

[assembly]
quiet_seconds = 300
complete_on_release = true
check_interval_seconds = 0.2

[models]
path = "{models}"

{enabled}[worker]
device = "cpu"
"""
    path = work / "config.toml"
    path.write_text(text)
    return path


def _regions(sr: pydicom.Dataset) -> dict[str, tuple[str, float, float]]:
    """Finding label -> (SOP Instance UID, row, col) of each measurement group's image region."""
    out: dict[str, tuple[str, float, float]] = {}

    def walk(items: list[pydicom.Dataset], label: str | None) -> None:
        for item in items:
            concept = item.ConceptNameCodeSequence[0].CodeValue if item.get("ConceptNameCodeSequence") else ""
            if item.get("ValueType") == "CODE" and concept == "121071":
                label = CODE_TO_LABEL.get(str(item.ConceptCodeSequence[0].CodeValue), label)
            if item.get("ValueType") == "SCOORD" and label is not None and item.get("ContentSequence"):
                ref = item.ContentSequence[0].ReferencedSOPSequence[0]
                x, y = float(item.GraphicData[0]), float(item.GraphicData[1])
                out[label] = (str(ref.ReferencedSOPInstanceUID), y - 0.5, x - 0.5)
            children = list(item.get("ContentSequence", []))
            if item.get("ValueType") == "CONTAINER" and concept == "125007":
                group_label: list[str | None] = [None]
                for c in children:
                    if c.get("ValueType") == "CODE" and c.ConceptNameCodeSequence[0].CodeValue == "121071":
                        group_label[0] = CODE_TO_LABEL.get(str(c.ConceptCodeSequence[0].CodeValue))
                texts = [str(c.TextValue) for c in children if c.get("ValueType") == "TEXT"]
                if any("study level" in t for t in texts):
                    continue  # a study-level anchor: not a location
                walk(children, group_label[0])
            else:
                walk(children, label)

    walk(list(sr.get("ContentSequence", [])), None)
    return out


def _dice(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    inter = sum(int((a[k] & b[k]).sum()) for k in set(a) & set(b))
    total = sum(int(m.sum()) for m in a.values()) + sum(int(m.sum()) for m in b.values())
    return 2 * inter / total if total else math.nan


def _union(by_label: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for masks in by_label.values():
        for sop, m in masks.items():
            out[sop] = out[sop] | m if sop in out else m.copy()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct", type=int, default=130)
    ap.add_argument("--mr", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7001, help="generator seed (training and calibration used 9031, 9133, 9301, 9401, 9501, 9601, 9241)")
    ap.add_argument("--models", type=Path, default=REPO / "models")
    ap.add_argument("--ich", default="ich/0.7.0-synthetic-demo")
    ap.add_argument("--sih", default="sih/0.4.0-synthetic-demo")
    ap.add_argument("--demo-seeds", type=int, default=20,
                    help="also send `dicom-node demo`'s three studies for seeds 1..N and check each answer")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-study-"))
    if work.exists() and args.work:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    config = load_config(_config(work, args.models.resolve(), args.ich, args.sih))
    gen = work / "studies"
    print(f"generating {args.ct} CT and {args.mr} MR studies (seed {args.seed}) in {gen} ...", flush=True)
    cts = [write_ct_head_study(gen, args.seed, ct_findings(args.seed, i), patient_index=i) for i in range(args.ct)]
    mrs = [write_mr_sih_study(gen, args.seed, sih_flag(args.seed, i), patient_index=args.ct + i)
           for i in range(args.mr)]
    demo = {s: [write_ct_head_study(gen / "demo", s, findings=("subdural",)),  # as commands/demo.py writes them
                write_ct_head_study(gen / "demo", s, findings=(), patient_index=1),
                write_mr_sih_study(gen / "demo", s, sih=True, patient_index=2)] for s in range(1, args.demo_seeds + 1)}
    dest = config.destinations[0]
    pacs = DemoPacs(dest.ae_title, dest.host, dest.port, work / "pacs")
    node = build_node(config, log_level="WARNING")
    pacs.start()
    node.start()
    started = time.monotonic()
    try:
        everything = [*cts, *mrs, *(st for cases in demo.values() for st in cases)]
        for st in everything:
            send_files(st.files, "127.0.0.1", config.node.port, calling_ae=dest.ae_title, called_ae=config.node.ae_title)
        want = {st.study_uid for st in everything}
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            got = {r.study_uid for r in pacs.received() if r.sop_class_uid == SR_CLASS}
            if want <= got:
                break
            time.sleep(1.0)
        time.sleep(3.0)  # SEGs and overlays follow their SR
    finally:
        node.stop()
        pacs.stop()
    elapsed = time.monotonic() - started
    by_study: dict[str, list[Any]] = defaultdict(list)
    for r in pacs.received():
        by_study[r.study_uid].append(r)
    result = _score(cts, mrs, by_study, gen)
    result["demo"] = _demo_answers(demo, by_study)
    result.update({"seed": args.seed, "ich": args.ich, "sih": args.sih, "seconds": round(elapsed, 1)})
    print(_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _score(cts: list[Any], mrs: list[Any], by_study: dict[str, list[Any]], gen: Path) -> dict[str, Any]:
    counts = {label: {"tp": 0, "fn": 0, "tn": 0, "fp": 0} for label in (*CT_LABELS, "sih")}
    loc: dict[str, dict[str, int]] = {label: {"n": 0, "in_head": 0, "in_lesion": 0} for label in (*CT_LABELS, "sih")}
    dice: dict[str, list[float]] = defaultdict(list)
    normal_flagged, missing = [], []
    studies: list[dict[str, Any]] = []  # each study's truth, verdicts and stated probabilities (for re-analysis)
    for st in [*cts, *mrs]:
        received = by_study.get(st.study_uid, [])
        srs = [r for r in received if r.sop_class_uid == SR_CLASS]
        if not srs:
            missing.append(st.study_uid)
            continue
        sr = pydicom.dcmread(srs[-1].path)
        stated = sr_findings(sr)
        present = {CODE_TO_LABEL.get(f.code[0]) for f in stated if f.presence == "Present"}
        labels = ("sih",) if st.kind == "mr-sih" else CT_LABELS
        studies.append({"study": st.folder.name, "truth": sorted(k for k in labels if st.study_labels[k]),
                        "present": sorted(k for k in labels if k in present),
                        "probability": {CODE_TO_LABEL[f.code[0]]: round(f.probability, 6) for f in stated
                                        if f.code[0] in CODE_TO_LABEL and f.probability is not None}})
        for label in labels:
            truth, call = bool(st.study_labels[label]), label in present
            counts[label]["tp" if truth and call else "fn" if truth else "fp" if call else "tn"] += 1
        if st.kind == "mr-sih":
            if st.study_labels["sih"] and "sih" in present:
                _score_sih(st, sr, received, loc["sih"], dice)
            continue
        if not st.study_labels["any"] and present & set(CT_LABELS):
            normal_flagged.append(st.study_uid)
        truth_masks = seg_masks(st.seg_file)[1] if st.seg_file else {}
        truth_masks["any"] = _union(truth_masks)
        boxes = {(b.sop_instance_uid, b.label): b for b in st.boxes}
        regions = _regions(sr)
        files = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in st.files}
        for label in CT_LABELS:
            if label not in present or not st.study_labels[label]:
                continue
            loc[label]["n"] += 1
            # "any" has no mark of its own when a subtype is located (one mark per lesion): take the mark a
            # viewer opens the report on, the SR's first group (groups are ordered strongest first)
            located = [label] if label in regions else [s for s in regions if s in SUBTYPES and label == "any"]
            if not located:
                continue
            sop, row, col = regions[located[0]]
            image = pydicom.dcmread(files[sop])
            hu = image.pixel_array.astype(np.float32) * float(image.RescaleSlope) + float(image.RescaleIntercept)
            r, c = round(row), round(col)
            loc[label]["in_head"] += int(bool(head_mask(hu)[r, c]))
            mask = truth_masks.get(label, {}).get(sop)
            inside = bool(mask is not None and mask[r, c])
            if not inside and mask is not None:
                thickness = 2 * float(ndimage.distance_transform_edt(mask).max()) * float(image.PixelSpacing[0])
                thin = thickness < THIN_MM
                candidates = [boxes[(sop, s)] for s in SUBTYPES if (sop, s) in boxes and (label == "any" or s == label)]
                inside = thin and any(b.contains(row, col) for b in candidates)
            loc[label]["in_lesion"] += int(inside)
        segs = [r for r in received if r.sop_class_uid == SEG_CLASS]
        if segs:
            returned = seg_masks(segs[-1].path)[1]
            for label in SUBTYPES:
                if st.study_labels[label] and label in present:
                    dice[label].append(_dice(returned.get(label, {}), truth_masks.get(label, {})))
    table = {}
    for label, c in counts.items():
        pos, neg = c["tp"] + c["fn"], c["tn"] + c["fp"]
        table[label] = {**c, "sensitivity": c["tp"] / pos if pos else None, "specificity": c["tn"] / neg if neg else None}
    n_normal = sum(1 for st in cts if not st.study_labels["any"])
    return {"labels": table, "localisation": loc, "normal_ct": n_normal, "normal_ct_flagged": len(normal_flagged),
            "dice": {k: {"mean": float(np.nanmean(v)), "n": len(v)} for k, v in dice.items() if v},
            "studies_without_sr": missing, "n_ct": len(cts), "n_mr": len(mrs), "studies": studies}


def _score_sih(st: Any, sr: Any, received: list[Any], loc: dict[str, int], dice: dict[str, list[float]]) -> None:
    """A true SIH call: is its mark inside the head and on a sign, and how well does the SEG overlap them?
    Sign by sign too: is the sign the report names at the mark ("Mark: ...") one of the signs there, and
    how well does each sign's SEG segment overlap the generator's (a sign shown and not marked counts 0)?"""
    truth, signs = sih_annotations(st.seg_files)
    loc["n"] += 1
    regions = _regions(sr)
    if "sih" in regions:
        sop, row, col = regions["sih"]
        path = next(f for f in st.files if pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID == sop)
        image = pydicom.dcmread(path).pixel_array
        r, c = round(row), round(col)
        loc["in_head"] += int(bool(signal_head_mask(image)[r, c]))
        mask = truth.get(sop)
        loc["in_lesion"] += int(mask is not None and near(mask, row, col))
        named = next((t.removeprefix(MARK) for f in sr_findings(sr) for t in f.notes if t.startswith(MARK)), "")
        under = [s for s in SIH_SIGNS if sop in signs[s] and near(signs[s][sop], row, col)]
        if named and under:
            loc["named_n"] = loc.get("named_n", 0) + 1
            loc["named"] = loc.get("named", 0) + int(sign_named(named) in under)
    segs = [x for x in received if x.sop_class_uid == SEG_CLASS]
    if segs:
        ds = pydicom.dcmread(segs[-1].path, stop_before_pixels=True)
        covered = {str(i.ReferencedSOPInstanceUID) for s in ds.ReferencedSeriesSequence
                   for i in s.ReferencedInstanceSequence}
        back = seg_masks(segs[-1].path)[1]
        dice["sih"].append(mask_dice(back.get("sih", {}), truth, covered) or 0.0)
        if any(sign_label(s) in back for s in SIH_SIGNS):  # a localiser that names the signs
            for s in SIH_SIGNS:
                if covered & set(signs[s]):
                    dice[sign_label(s)].append(mask_dice(back.get(sign_label(s), {}), signs[s], covered) or 0.0)


def _present(received: list[Any]) -> set[str] | None:
    srs = [r for r in received if r.sop_class_uid == SR_CLASS]
    if not srs:
        return None
    return {str(CODE_TO_LABEL.get(f.code[0], f.finding)) for f in sr_findings(pydicom.dcmread(srs[-1].path))
            if f.presence == "Present"}


def _demo_answers(demo: dict[int, list[Any]], by_study: dict[str, list[Any]]) -> dict[str, Any]:
    """Per demo seed: does each of its three studies get exactly the right findings?"""
    wrong: dict[str, list[str]] = {}
    expected = ({"subdural", "any"}, set(), {"sih"})
    for seed, cases in demo.items():
        for st, want in zip(cases, expected, strict=True):
            got = _present(by_study.get(st.study_uid, []))
            if got != want:
                wrong.setdefault(str(seed), []).append(f"{st.folder.name}: {sorted(got) if got is not None else 'no SR'}")
    return {"seeds": len(demo), "right": len(demo) - len(wrong), "wrong": wrong}


def _table(r: dict[str, Any]) -> str:
    def f(v: float | None) -> str:
        return "  n/a" if v is None else f"{v:.3f}"

    head = (f"{'label':<18}{'sens':>7}{'(tp/pos)':>10}{'spec':>8}{'(tn/neg)':>10}{'located':>9}{'in head':>9}"
            f"{'in lesion':>11}{'Dice':>7}")
    lines = [head]
    for label, m in r["labels"].items():
        loc = r["localisation"].get(label, {"n": 0, "in_head": 0, "in_lesion": 0})
        d = r["dice"].get(label, {}).get("mean")
        lines.append(f"{label:<18}{f(m['sensitivity']):>7}{str(m['tp']) + '/' + str(m['tp'] + m['fn']):>10}"
                     f"{f(m['specificity']):>8}{str(m['tn']) + '/' + str(m['tn'] + m['fp']):>10}"
                     f"{loc['n']:>9}{loc['in_head']:>9}{loc['in_lesion']:>11}{f(d):>7}")
    sih = r["localisation"].get("sih", {})
    if sih.get("named_n"):
        lines.append(f"SIH marks on a sign that name a sign there: {sih['named']}/{sih['named_n']}; SEG Dice per sign: "
                     + ", ".join(f"{s} {f(r['dice'][sign_label(s)]['mean'])} ({r['dice'][sign_label(s)]['n']})"
                                 for s in SIH_SIGNS if sign_label(s) in r["dice"]))
    lines.append(f"normal CTs with any finding Present: {r['normal_ct_flagged']} of {r['normal_ct']}")
    n = sum(v["n"] for v in r["localisation"].values())
    hit = sum(v["in_lesion"] for v in r["localisation"].values())
    in_head = sum(v["in_head"] for v in r["localisation"].values())
    lines.append(f"true Present findings located: centre in head {in_head}/{n}, in lesion (or thin-crescent box) "
                 f"{hit}/{n} ({hit / n:.1%})" if n else "no true Present finding")
    d = r.get("demo", {})
    if d.get("seeds"):
        lines.append(f"demo studies (subdural CT, normal CT, SIH MR) right for {d['right']} of {d['seeds']} seeds"
                     + (f"; wrong: {d['wrong']}" if d["wrong"] else ""))
    if r["studies_without_sr"]:
        lines.append(f"studies without an SR: {len(r['studies_without_sr'])}")
    lines.append(f"{r['n_ct']} CT + {r['n_mr']} MR studies, seed {r.get('seed')}, {r.get('seconds')} s")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
