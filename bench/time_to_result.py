"""Time to result: a generated 40-slice 512x512 head CT (subdural hemorrhage) sent with DCMTK storescu to a
running `dicom-node serve` (shipped config.toml, shipped demo models, CPU), measured from association
release (storescu exits) to the SR stored in the PACS (a DCMTK storescp: the SR file readable in its
output folder). Each run sends a new study (seeds 1..N); one warm-up study goes first, as a node in
service has its worker and models loaded.

    .venv/bin/python bench/time_to_result.py [--n 5] [--slices 40] [--size 512] [--fast-poll] [--torch-threads T]
                                             [--profile] [--models DIR] [--ich-version V] [--no-early]
                                             [--json results.json]

Per run it prints the total and where it went, from the node's database timestamps: release → study
complete (assembler), → result stored (worker poll + analysis + SR/overlay build + outbox write, one
transaction), → SR delivery marked sent (sender poll + C-STORE), → SR seen in the PACS folder.
`--fast-poll` lowers the worker/sender/assembler poll intervals from the shipped 0.2/0.2/1 s to 0.05 s.
`--profile` also runs the ICH pipeline (one network or an ensemble) and the output builders in-process on
one study and splits the analysis into decode, preprocessing, inference, study aggregation, ensemble masks,
findings with Grad-CAM, source reads and the outputs' build (SR, SEG, overlays). `--ich-version` runs
another ICH version than the shipped config's (e.g. 0.5.0-synthetic-demo), to compare in one session.
`--no-early` turns off the analysis during the grace period (`jobs/early.py`): the worker analyses a study
only once it is complete, as before 2026-12-07. With it on (shipped), "→ result" is what remains of the
analysis after the grace period, plus the SR build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy import select

from dicom_node.config import load_config
from dicom_node.db.engine import Database
from dicom_node.db.schema import Delivery, Output, Result, Study
from dicom_node.synth import write_ct_head_study

REPO = Path(__file__).resolve().parents[1]

STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
ECHOSCU = "/usr/bin/echoscu"
DICOM_NODE = REPO / ".venv" / "bin" / "dicom-node"
ENV = {**os.environ, "TCP_NODELAY": "1"}
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
PACS_AET = "DEMO-PACS"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def echo_ok(port: int, called: str) -> bool:
    cmd = [ECHOSCU, "-aet", "STORESCU", "-aec", called, "127.0.0.1", str(port)]
    return subprocess.run(cmd, env=ENV, capture_output=True, check=False, timeout=10).returncode == 0


def node_config(work: Path, node_port: int, pacs_port: int, fast_poll: bool, models: Path,
                torch_threads: int = 0, ich_version: str = "", early: bool = True) -> Path:
    """The shipped config.toml with our ports, the repository's models, and (optionally) fast polling,
    another ICH version, or no analysis during the grace period."""
    text = (REPO / "config.toml").read_text()
    edits = [
        (r"(?m)^port = 11112\b", f"port = {node_port}"),
        (r"(?m)^port = 11113\b", f"port = {pacs_port}"),
        (r'(?m)^path = "models"', f'path = "{models}"'),
        (r'(?m)^device = "auto"', 'device = "cpu"'),
    ]
    if torch_threads:
        edits.append((r"(?m)^torch_threads = \d+", f"torch_threads = {torch_threads}"))
    if ich_version:
        edits.append((r'(?m)^(name = "ich".*\n)version = "[^"]+"', f'\\g<1>version = "{ich_version}"'))
    if not early:
        edits.append((r"(?m)^analyse_during_grace = true\b", "analyse_during_grace = false"))
    if fast_poll:
        edits += [
            (r"(?m)^poll_seconds = [\d.]+", "poll_seconds = 0.05"),
            (r"(?m)^check_interval_seconds = 1\b", "check_interval_seconds = 0.05"),
            (r"(?m)^\[delivery\]\n", "[delivery]\npoll_seconds = 0.05\n"),
        ]
    for pattern, value in edits:
        text, n = re.subn(pattern, value, text)
        if n != 1:
            raise SystemExit(f"config.toml: expected one match for {pattern!r}, found {n}")
    path = work / "config.toml"
    path.write_text(text)
    return path


class Pacs:
    """DCMTK storescp; `sr_times()` maps study UID → time.time() its SR was first readable on disk."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        folder.mkdir(parents=True)
        self.proc = subprocess.Popen([STORESCP, "-aet", PACS_AET, "-od", str(folder), str(port)], env=ENV,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: echo_ok(port, PACS_AET), 20, "storescp")
        self.seen: dict[str, float] = {}
        self._done: set[str] = set()

    def poll(self) -> None:
        for entry in os.scandir(self.folder):
            if entry.name in self._done or entry.name.startswith("."):
                continue
            now = time.time()
            header = _header(entry.path)
            if header is None:  # still being written: try again next poll
                continue
            self._done.add(entry.name)
            if header[1] == SR_CLASS:
                self.seen.setdefault(header[0], now)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _header(path: str) -> tuple[str, str] | None:
    """(Study Instance UID, SOP Class UID) of a complete file; None while it is partial."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return str(ds.StudyInstanceUID), str(ds.SOPClassUID)
    except (InvalidDicomError, OSError, EOFError, ValueError, AttributeError, KeyError):
        return None


def run_once(port: int, pacs: Pacs, files: list[Path], study_uid: str, db: Database) -> dict[str, float]:
    cmd = [STORESCU, "-aet", "STORESCU", "-aec", "DICOMNODE", "127.0.0.1", str(port), *map(str, files)]
    start = time.time()
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, check=False, timeout=120)
    released = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"storescu failed: {proc.stderr[-500:]}")

    def arrived() -> bool:
        pacs.poll()
        return study_uid in pacs.seen

    wait_for(arrived, 120, f"the SR of {study_uid}", interval=0.005)
    stamps = _db_stamps(db, study_uid)
    return {
        "send_s": released - start,
        "total_s": pacs.seen[study_uid] - released,
        "complete_s": stamps["completed"] - released,
        "result_s": stamps["result"] - stamps["completed"],
        "sent_s": stamps["sr_sent"] - stamps["result"],
        "seen_s": pacs.seen[study_uid] - stamps["sr_sent"],
    }


def _epoch(value: datetime) -> float:
    return value.replace(tzinfo=UTC).timestamp()  # the node stores naive UTC


def _db_stamps(db: Database, study_uid: str) -> dict[str, float]:
    def sr_sent() -> Delivery | None:
        with db.read() as s:
            return s.scalars(
                select(Delivery).join(Output, Output.id == Delivery.output_id).join(Study, Study.id == Output.study_id)
                .where(Study.study_uid == study_uid, Output.kind == "sr", Delivery.sent_at.is_not(None))
            ).first()

    delivery = wait_for(sr_sent, 10, "the SR delivery marked sent", interval=0.02)
    with db.read() as s:
        study = s.scalars(select(Study).where(Study.study_uid == study_uid)).one()
        result = s.scalars(select(Result).where(Result.study_id == study.id)).one()
        assert study.completed_at is not None
        return {"completed": _epoch(study.completed_at), "result": _epoch(result.created_at),
                "sr_sent": _epoch(delivery.sent_at)}


def profile(work: Path, files: list[Path], models: Path, torch_threads: int, ich_version: str = "") -> dict[str, float]:
    """The ICH analysis and output build in-process, split into stages by wrapping the pipeline's steps (a
    single network or an ensemble: decoding, each input's preprocessing, each network, study aggregation,
    mask combination, findings with Grad-CAM)."""
    from dicom_node.ml import ich, ich_ensemble, ich_findings
    from dicom_node.ml.analysis import instance_ref_from_file
    from dicom_node.ml.registry import load_pipelines
    from dicom_node.outputs import build_outputs

    config = load_config(node_config(work, free_port(), free_port(), False, models, torch_threads, ich_version))
    pipeline = next(p for p in load_pipelines(config) if p.info.name == "ich")
    spent: dict[str, float] = {}

    def timed(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                spent[stage] = spent.get(stage, 0.0) + time.perf_counter() - t
        return wrapper

    stages = {"read_image": "decode (pydicom pixel data → HU)", "run_network": "inference (forward passes)",
              "study_probabilities": "study aggregation", "on_grid": "ensemble masks onto one grid",
              "build_analysis": "findings, regions, Grad-CAM"}
    patched = [(module, name) for module in (ich, ich_ensemble) for name in stages if hasattr(module, name)]
    originals = {(module, name): getattr(module, name) for module, name in patched}
    for (module, name), fn in originals.items():
        setattr(module, name, timed(stages[name], fn))
    grad_cam = ich_findings.grad_cam
    ich_findings.grad_cam = timed("  of which Grad-CAM", grad_cam)
    model_inputs = ich.IchPipeline.model_inputs
    ich.IchPipeline.model_inputs = timed("preprocessing (windows, resize)", model_inputs)  # type: ignore[method-assign]
    try:
        refs = [instance_ref_from_file(str(f)) for f in files]
        pipeline.analyse(refs)  # warm-up (first-call allocations)
        spent.clear()
        t = time.perf_counter()
        analysis = pipeline.analyse(refs)
        spent["analysis total (selection .. Grad-CAM)"] = time.perf_counter() - t
        t = time.perf_counter()
        by_uid = {r.sop_instance_uid: r for r in refs}
        # as the worker reads them (jobs/results.py): key images with pixels, the other evaluated headers only
        keys = {k.sop_instance_uid for k in analysis.key_images} | {
            f.key_sop_instance_uid for f in analysis.findings if f.key_sop_instance_uid}
        wanted = [*keys, *analysis.evaluated_sop_instance_uids]
        sources = {uid: pydicom.dcmread(by_uid[uid].path, stop_before_pixels=uid not in keys)
                   for uid in dict.fromkeys(wanted)}
        spent["source reads for outputs"] = time.perf_counter() - t
        build_outputs(analysis, sources, 1)  # warm-up: highdicom's first SR costs ~0.5 s more
        t = time.perf_counter()
        objects = build_outputs(analysis, sources, 1)
        kinds = sorted({str(o.dataset.Modality) for o in objects})
        spent[f"outputs build ({len(objects)} objects: {', '.join(kinds)})"] = time.perf_counter() - t
    finally:
        for (module, name), fn in originals.items():
            setattr(module, name, fn)
        ich_findings.grad_cam = grad_cam
        ich.IchPipeline.model_inputs = model_inputs  # type: ignore[method-assign]
    return spent


def machine() -> dict[str, str]:
    model = ""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    for line in lscpu.splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    import torch

    return {"nproc": str(os.cpu_count()), "cpu": model, "python": platform.python_version(),
            "torch": torch.__version__}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5, help="timed runs (seeds 1..N), after one warm-up")
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--fast-poll", action="store_true", help="poll intervals 0.05 s instead of the shipped ones")
    parser.add_argument("--profile", action="store_true", help="also split the analysis into stages in-process")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="set [worker] torch_threads (default: the shipped config's 0 = every core but one)")
    parser.add_argument("--models", type=Path, default=REPO / "models", help="models folder (default: the shipped demos)")
    parser.add_argument("--ich-version", default="", help="run this ICH model version (default: the shipped config's)")
    parser.add_argument("--no-early", action="store_true",
                        help="worker.analyse_during_grace = false: analyse only once the study is complete")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-ttr-"))
    studies = work / "studies"
    node_port, pacs_port = free_port(), free_port()
    config_path = node_config(work, node_port, pacs_port, args.fast_poll, args.models.resolve(), args.torch_threads,
                              args.ich_version, early=not args.no_early)
    config = load_config(config_path)
    print(f"generating {args.n + 1} studies ({args.slices} slices, {args.size} px) ...", flush=True)
    cases = [write_ct_head_study(studies, seed, findings=("subdural",), n_slices=args.slices, size=args.size,
                                 distractors=False) for seed in range(args.n + 1)]
    pacs = Pacs(work / "pacs", pacs_port)
    log = (work / "serve.log").open("wb")
    serve = subprocess.Popen([str(DICOM_NODE), "serve", "--config", str(config_path)], stdout=log, stderr=log)
    db = Database(config.database_url)
    runs: list[dict[str, float]] = []
    try:
        wait_for(lambda: echo_ok(node_port, "DICOMNODE"), 60, "dicom-node serve")
        wait_for(lambda: b"worker ready" in (work / "serve.log").read_bytes(), 120, "the worker's models loaded")
        run_once(node_port, pacs, cases[0].files, cases[0].study_uid, db)  # warm-up
        print(f"{'run':>4} {'send':>6} {'total':>6} | {'complete':>8} {'result':>7} {'sent':>6} {'seen':>6}  (s)")
        for i, case in enumerate(cases[1:], start=1):
            r = run_once(node_port, pacs, case.files, case.study_uid, db)
            runs.append(r)
            print(f"{i:>4} {r['send_s']:6.2f} {r['total_s']:6.2f} | {r['complete_s']:8.2f} {r['result_s']:7.2f} "
                  f"{r['sent_s']:6.2f} {r['seen_s']:6.2f}", flush=True)
    finally:
        db.dispose()
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()
        pacs.stop()
    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"median time to result: {medians['total_s']:.2f} s over {len(runs)} runs "
          f"(release → complete {medians['complete_s']:.2f}, → result {medians['result_s']:.2f}, "
          f"→ SR sent {medians['sent_s']:.2f}, → seen {medians['seen_s']:.2f}); target < 5 s")
    stages: dict[str, float] = {}
    if args.profile:
        stages = profile(work, cases[1].files, args.models.resolve(), args.torch_threads, args.ich_version)
        print("in-process stages of one analysis (s):")
        for stage, seconds in stages.items():
            print(f"  {stage:<40} {seconds:6.3f}")
    info = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "args": {k: str(v) for k, v in vars(args).items()},
                                         "runs": runs, "median": medians, "stages": stages}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
