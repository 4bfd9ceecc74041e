"""Ingest benchmark: the same generated 512x512 CT instances sent with DCMTK storescu to DCMTK storescp,
to Orthanc and to `dicom-node serve`, over one association and over 4 parallel associations.

    .venv/bin/python bench/ingest.py [--n 500] [--parallel 4] [--json results.json] [--profile]

Every DCMTK peer (storescu, storescp, and Orthanc, which is built on DCMTK) runs with TCP_NODELAY=1.
storescp and Orthanc get the same maximum PDU as our node (128 KiB for storescp, its ceiling; Orthanc's
default). dicom-node writes durably (fsync file + folder, SQLite commit with synchronous=FULL) before
every Success; storescp and Orthanc do not fsync. Every server starts fresh (empty store) for every run.
`--profile` also runs our receiver in-process with cProfile on the C-STORE handler and prints where the
handler's time goes, and how much of the wall time is outside the handler (pynetdicom).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dicom_node.synth import write_ct_head_study

REPO = Path(__file__).resolve().parents[1]
STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
ECHOSCU = "/usr/bin/echoscu"
ORTHANC = "/usr/sbin/Orthanc"
DICOM_NODE = REPO / ".venv" / "bin" / "dicom-node"
ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def echo_ok(port: int, called: str) -> bool:
    cmd = [ECHOSCU, "-aet", "STORESCU", "-aec", called, "127.0.0.1", str(port)]
    return subprocess.run(cmd, env=ENV, capture_output=True, check=False, timeout=10).returncode == 0


def generate(folder: Path, n: int, seed: int = 7, per_study: int = 50) -> list[Path]:
    """n 512x512 head CT slices from the project's phantom generator (explicit VR little endian, no
    distractor series), as studies of `per_study` slices."""
    files: list[Path] = []
    index = 0
    while len(files) < n:
        slices = min(per_study, n - len(files))
        study = write_ct_head_study(folder, seed, n_slices=slices, size=512, distractors=False, patient_index=index)
        files += study.files
        index += 1
    return files


@dataclass
class Server:
    name: str
    called: str
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_storescp(tmp: Path) -> Server:
    work = Path(tempfile.mkdtemp(prefix="storescp-", dir=tmp))
    port = free_port()
    cmd = [STORESCP, "--fork", "-aet", "STORESCP", "--max-pdu", "131072", "-od", str(work), str(port)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: echo_ok(port, "STORESCP"), 20, "storescp")
    return Server("DCMTK storescp", "STORESCP", port, proc, work)


def start_orthanc(tmp: Path) -> Server:
    work = Path(tempfile.mkdtemp(prefix="orthanc-", dir=tmp))
    port = free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "HttpPort": free_port(),
        "HttpServerEnabled": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True,
        "StorageCompression": False,
        "Plugins": [],
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    proc = subprocess.Popen([ORTHANC, str(work / "orthanc.json")], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for(lambda: echo_ok(port, "ORTHANC"), 60, "Orthanc")
    return Server("Orthanc", "ORTHANC", port, proc, work)


def start_node(tmp: Path) -> Server:
    work = Path(tempfile.mkdtemp(prefix="dicom-node-", dir=tmp))
    port = free_port()
    (work / "models").mkdir()
    (work / "config.toml").write_text(
        "\n".join(
            [
                "[node]", 'ae_title = "DICOMNODE"', 'host = "127.0.0.1"', f"port = {port}", "max_pdu = 0",
                "max_associations = 16",
                "[[callers]]", 'ae_title = "STORESCU"',
                "[database]", 'url = "sqlite:///var/node.db"',
                "[storage]", 'path = "var/store"', "min_free_mb = 100",
                "[assembly]", "quiet_seconds = 30",
                "[models]", 'path = "models"',
            ]
        )
        + "\n"
    )
    proc = subprocess.Popen([str(DICOM_NODE), "--log-level", "WARNING", "serve", "--config", str(work / "config.toml")],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: echo_ok(port, "DICOMNODE"), 60, "dicom-node serve")
    return Server("dicom-node", "DICOMNODE", port, proc, work)


def send(server: Server, files: list[Path], parallel: int) -> float:
    """Send `files` over `parallel` associations at once; return instances/s. Fails loudly on any failure."""
    chunks = [files[i::parallel] for i in range(parallel)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [STORESCU, "-aet", "STORESCU", "-aec", server.called, "127.0.0.1", str(server.port), *map(str, chunk)],
            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for chunk in chunks
    ]
    errors = [p.communicate()[1] for p in procs]
    elapsed = time.perf_counter() - start
    for p, err in zip(procs, errors, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"storescu to {server.name} failed (rc {p.returncode}): {err[-500:]}")
    return len(files) / elapsed


def profile_handler(tmp: Path, files: list[Path]) -> str:
    """Our receiver in-process with cProfile around the C-STORE handler, one association."""
    from dicom_node.config import load_config
    from dicom_node.db.engine import Database
    from dicom_node.receiver import scp

    work = Path(tempfile.mkdtemp(prefix="profile-", dir=tmp))
    (work / "models").mkdir()
    (work / "config.toml").write_text(
        f'[node]\nae_title = "DICOMNODE"\nport = {free_port()}\nmax_pdu = 0\n[[callers]]\nae_title = "STORESCU"\n'
        '[database]\nurl = "sqlite:///var/node.db"\n[storage]\npath = "var/store"\nmin_free_mb = 100\n'
        '[models]\npath = "models"\n'
    )
    config = load_config(work / "config.toml")
    db = Database(config.database_url)
    profiler = cProfile.Profile()
    handler_time = [0.0]
    lock = threading.Lock()
    original = scp._Receiver.on_store

    def profiled(self: scp._Receiver, event: object) -> int:
        t0 = time.perf_counter()
        with lock:
            result = profiler.runcall(original, self, event)
        handler_time[0] += time.perf_counter() - t0
        return int(result)

    scp._Receiver.on_store = profiled  # type: ignore[method-assign]
    handle = scp.start_receiver(config, db)
    try:
        t0 = time.perf_counter()
        server = Server("in-process", "DICOMNODE", handle.port, subprocess.Popen(["true"]), work)
        rate = send(server, files, 1)
        wall = time.perf_counter() - t0
    finally:
        handle.shutdown()
        scp._Receiver.on_store = original  # type: ignore[method-assign]
        db.dispose()
        shutil.rmtree(work, ignore_errors=True)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(18)
    n = len(files)
    head = (
        f"in-process receiver, one association: {rate:.0f} instances/s; wall {wall * 1000 / n:.2f} ms/instance, "
        f"of which C-STORE handler {handler_time[0] * 1000 / n:.2f} ms/instance "
        f"({100 * handler_time[0] / wall:.0f} %); the rest is pynetdicom (PDU/DIMSE decoding, reactor loop) "
        "and storescu itself\n"
    )
    return head + out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="instances (default 500)")
    parser.add_argument("--parallel", type=int, default=4, help="associations in the parallel run (default 4)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--profile", action="store_true", help="profile our C-STORE handler (in-process)")
    parser.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: system temp)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=args.tmp))
    try:
        (tmp / "in").mkdir()
        files = generate(tmp / "in", args.n)
        size_mb = sum(p.stat().st_size for p in files) / 1e6
        print(f"{args.n} instances, {size_mb:.0f} MB, 512x512 int16, explicit VR little endian; "
              f"{os.cpu_count()} CPU(s); load average before: {os.getloadavg()[0]:.2f}")
        results: dict[str, dict[str, float]] = {}
        for starter in (start_storescp, start_orthanc, start_node):
            for parallel in (1, args.parallel):
                server = starter(tmp)
                try:
                    rate = send(server, files, parallel)
                finally:
                    server.stop()
                results.setdefault(server.name, {})[f"{parallel}"] = rate
                print(f"  {server.name:15s} {parallel} association(s): {rate:7.1f} instances/s", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        ours, scp_, orthanc = results["dicom-node"], results["DCMTK storescp"], results["Orthanc"]
        print(f"\n| receiver | 1 association | {args.parallel} associations |")
        print("|---|---|---|")
        for name, r in results.items():
            print(f"| {name} | {r['1']:.0f} | {r[str(args.parallel)]:.0f} |")
        for key in ("1", str(args.parallel)):
            print(f"ratio ours/storescp ({key} assoc): {ours[key] / scp_[key]:.2f}; "
                  f"ours/Orthanc: {ours[key] / orthanc[key]:.2f}")
        if args.json:
            args.json.write_text(json.dumps({"n": args.n, "parallel": args.parallel, "results": results}, indent=2))
        if args.profile:
            print("\n" + profile_handler(tmp, files))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
