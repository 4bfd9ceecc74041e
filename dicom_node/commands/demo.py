"""`dicom-node demo --config FILE`: the whole loop once, on this machine.

Starts a receiving PACS on the first configured destination, the node (receiver, assembler, sender,
local worker) on the config, sends generated studies in as that PACS would (a head CT with a subdural
hemorrhage, a normal head CT, an SIH-positive brain MR and, when a microbleed model is enabled, an SWI
brain MR with lobar microbleeds), waits until the node has delivered everything for each study (SR,
overlays, SEG; one SR per model that reads the study's modality), and prints what the PACS received. With a dashboard (`[web] port`), it prints its address and a one-time
login link (user `demo`, admin; valid 24 h) that also works later with `dicom-node serve`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dicom_node.commands import load_config_or_report
from dicom_node.config import Config
from dicom_node.errors import ModelError

if TYPE_CHECKING:
    from dicom_node.delivery.demo_pacs import DemoPacs
    from dicom_node.outputs.readback import ReportedFinding
    from dicom_node.runtime.node import Node


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config.toml", help="configuration file (default config.toml)")
    parser.add_argument(
        "--seed", type=int, default=None,
        help="seed of the generated studies (default: new studies each run; the same seed re-sends the same "
        "studies, which the node accepts as duplicates without re-analysing them: the demo then shows the "
        "results the node delivered in the earlier run)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for all results")


def run(args: argparse.Namespace) -> int:
    config = load_config_or_report(args.config)
    if config is None:
        return 1
    if not config.destinations:
        print(f"{args.config}: destinations: the demo needs one destination to play the receiving PACS",
              file=sys.stderr)
        return 1
    dest = config.destinations[0]
    if not any(c.allows(dest.ae_title, "127.0.0.1") for c in config.callers):
        print(f"{args.config}: callers: the demo sends as {dest.ae_title!r} from 127.0.0.1, which no caller allows",
              file=sys.stderr)
        return 1

    from dicom_node.delivery.demo_pacs import DemoPacs
    from dicom_node.runtime.services import build_node

    work = config.storage.path.parent / "demo"
    pacs = DemoPacs(dest.ae_title, dest.host, dest.port, work / "pacs")
    try:
        node = build_node(config, log_level=args.log_level)
    except ModelError as exc:
        print(f"cannot start the node: {exc}", file=sys.stderr)
        return 1
    pacs.start()
    node.start()
    try:
        login = _dashboard_login(config, node)
        if login:
            print(f"dashboard: {login[0]}\none-time login (24 h): {login[1]}\n")
        code = _demo(config, node, pacs, work, args)
        if login:
            print(f"\ndashboard (while a node runs on this config, e.g. `dicom-node serve --config {args.config}`):"
                  f" {login[0]}\none-time login: {login[1]}")
        return code
    finally:
        node.stop()
        pacs.stop()


def _dashboard_login(config: Config, node: Node) -> tuple[str, str] | None:
    """(dashboard address, one-time login link for the `demo` admin), or None when the dashboard is off."""
    if not config.web.port:
        return None
    from dicom_node.web import accounts
    from dicom_node.web.links import dashboard_url

    account = accounts.ensure_user(node.db, "demo", accounts.ADMIN)
    token = accounts.login_link_token(node.db, account)
    return dashboard_url(config), dashboard_url(config, f"/login/once/{token}")


def _demo(config: Config, node: Node, pacs: DemoPacs, work: Path, args: argparse.Namespace) -> int:
    import pydicom
    from sqlalchemy import select

    from dicom_node.db.schema import Study, StudyState
    from dicom_node.delivery.scu import send_files
    from dicom_node.ml.manifest import load_manifest
    from dicom_node.outputs.readback import sr_findings, sr_text
    from dicom_node.synth import write_ct_head_study, write_mr_sih_study
    from dicom_node.synth.swi_study import write_mr_swi_study

    if args.seed is None:
        args.seed = int(time.time()) % 1_000_000
    studies_dir = work / "studies"
    print(f"generating studies in {studies_dir} (seed {args.seed}) ...")
    cases = [
        ("head CT, subdural hemorrhage", write_ct_head_study(studies_dir, args.seed, findings=("subdural",))),
        ("head CT, normal", write_ct_head_study(studies_dir, args.seed, findings=(), patient_index=1)),
        ("brain MR, SIH signs", write_mr_sih_study(studies_dir, args.seed, sih=True, patient_index=2)),
    ]
    tasks = set()
    for enabled in config.models.enabled:
        with contextlib.suppress(ModelError):  # the node's start-up checks have named a broken model
            tasks.add(load_manifest(Path(config.models.path) / enabled.name / enabled.version).task)
    if "cmb-swi" in tasks:  # a microbleed model is enabled: an SWI study with lobar microbleeds for it
        cases.append(("brain MR, SWI microbleeds", write_mr_swi_study(studies_dir, args.seed, svd_class="caa",
                                                                       patient_index=3, distractors=False)))
    port = node.port or config.node.port
    uids = [study.study_uid for _, study in cases]
    # the same seed on the same node: the studies are duplicates, which the node stores but does not analyse
    # again, so their results are the ones it delivered in the earlier run (still in the PACS's folder)
    with node.db.read() as session:
        seen_before = set(session.scalars(select(Study.study_uid).where(Study.study_uid.in_(uids))).all())
    for uid in seen_before:
        pacs.load_archived(uid)
    sent_at: dict[str, float] = {}
    for title, study in cases:
        statuses = send_files(study.files, "127.0.0.1", port, calling_ae=config.destinations[0].ae_title,
                              called_ae=config.node.ae_title)
        ok = sum(1 for s in statuses if s == 0)
        sent_at[study.study_uid] = -math.inf if study.study_uid in seen_before else time.monotonic()
        again = " — already received in an earlier run of this seed: kept as a duplicate, not analysed again"
        print(f"sent {title}: {ok}/{len(statuses)} instances stored (association released)"
              f"{again if study.study_uid in seen_before else ''}")

    sr_class = pydicom.uid.UID("1.2.840.10008.5.1.4.1.1.88.34")
    seg_class = pydicom.uid.UID("1.2.840.10008.5.1.4.1.1.66.4")
    deadline = time.monotonic() + args.timeout

    def srs_back() -> dict[str, float]:
        got: dict[str, float] = {}
        for r in pacs.received():
            if r.sop_class_uid == sr_class and r.received_at >= sent_at.get(r.study_uid, float("inf")):
                got[r.study_uid] = r.received_at
        return got

    new = [uid for uid in uids if uid not in seen_before]  # an earlier run's SRs are there or not: no wait
    while not set(new) <= set(srs_back()) and time.monotonic() < deadline:
        time.sleep(0.2)
    # a study has one SR per enabled model that reads its modality (an answer, or "not analysed"), and
    # overlays and SEGs follow their SR: wait until the node has delivered everything for every study

    def all_delivered() -> bool:
        with node.db.read() as session:
            states = session.scalars(select(Study.state).where(Study.study_uid.in_(uids))).all()
        return len(states) == len(uids) and all(st == StudyState.DELIVERED for st in states)

    while not all_delivered() and time.monotonic() < deadline:
        time.sleep(0.2)
    back = srs_back()

    print()
    print(f"what the PACS ({config.destinations[0].ae_title}) received:")
    failures = 0
    for title, study in cases:
        print(f"- {title} (study {study.study_uid})")
        if study.study_uid not in back:
            print(f"    no SR in {pacs.folder} from the earlier run" if study.study_uid in seen_before
                  else f"    no SR within {args.timeout:.0f} s")
            failures += 1
            continue
        print("    SR delivered in the earlier run" if study.study_uid in seen_before else
              f"    SR received {back[study.study_uid] - sent_at[study.study_uid]:.1f} s after association release")
        mine = [r for r in pacs.received() if r.study_uid == study.study_uid and r.received_at >= sent_at[study.study_uid]]
        for r in mine:
            if r.sop_class_uid != sr_class:
                continue
            ds = pydicom.dcmread(r.path)
            print(f"    {ds.SeriesDescription}")
            for line in _finding_lines(sr_findings(ds)):
                print(f"      {line}")
            for text in sr_text(ds)[1:]:  # the impression, or why the study was not analysed
                print(f"      {text}")
        segs = [r for r in mine if r.sop_class_uid == seg_class]
        overlays = [r for r in mine if r.sop_class_uid not in (sr_class, seg_class)]
        print(f"    {len(overlays)} overlay image(s) with the finding marked")
        if segs:
            print(f"    {len(segs)} segmentation (DICOM SEG) of what was found")
    print(f"\nfiles: {pacs.folder}")
    return 1 if failures else 0


def _finding_lines(findings: list[ReportedFinding]) -> list[str]:
    """One line per finding; a finding located once per lesion (microbleeds: the regions, then the study-level
    statement) as one line with how many regions mark it (the impression that follows gives the counts)."""
    seen: dict[str, list[ReportedFinding]] = {}
    for f in findings:
        seen.setdefault(f.finding, []).append(f)
    lines = []
    for name, group in seen.items():
        study, lesions = group[-1], group[:-1]
        line = f"{study.presence:<12} {name}" + ("" if study.probability is None else f" p={study.probability:.2f}")
        probs = [f.probability for f in lesions if f.probability is not None]
        if lesions:
            line += f"; {len(lesions)} marked" + (f" (p={min(probs):.2f}-{max(probs):.2f})" if probs else "")
        lines.append(line)
    return lines
