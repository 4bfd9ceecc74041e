"""Scale-out across hosts: one `dicom-node serve` and two `dicom-node worker` processes, each in a network
namespace of its own (loopback only, so they share no TCP/IP), sharing a PostgreSQL database (over its
Unix socket, in a folder all of them see) and the store. The PACS (DCMTK storescp, one file per object it
receives) and the sender (DCMTK storescu) run in the serve namespace.

20 generated studies (18 head CTs, 2 brain MRs, the ICH and SIH demo models on the CPU) must each be
analysed exactly once per model, and every output must reach the PACS exactly once (at least once where a
send got no answer, as the node promises): with both workers up,
with one worker SIGKILLed while it holds a job, and with a second `serve` on the same database.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from conftest import REPO, dcmtk_env, wait_for, write_config
from e2e_helpers import LIGHT_MODELS
from sqlalchemy import select, text

from dicom_node.db.engine import Database
from dicom_node.db.schema import (
    Association,
    Delivery,
    DeliveryState,
    Job,
    JobState,
    Output,
    Result,
    Series,
    Study,
)

pytestmark = pytest.mark.slow

IP = shutil.which("ip") or "/usr/sbin/ip"
STORESCP, STORESCU = "/usr/bin/storescp", "/usr/bin/storescu"
NODE_PORT, SECOND_NODE_PORT, PACS_PORT = 11112, 11122, 11113  # inside the serve namespace: its own loopback
MODEL_OF = {"CT": "ich", "MR": "sih"}  # the models this cluster enables and the modality each reads
CT_STUDIES, MR_STUDIES = 18, 2


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IP, *args], capture_output=True, text=True, check=False, timeout=30)


class Namespaces:
    """Network namespaces with loopback up; `delete()` removes every one made, whatever happened."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def add(self, role: str) -> str:
        name = f"dn-{uuid.uuid4().hex[:8]}-{role}"
        made = _ip("netns", "add", name)
        if made.returncode != 0:
            pytest.fail(f"`ip netns add` failed ({made.stderr.strip()}): the multi-host test needs root and "
                        "iproute2 (scripts/setup installs it)")
        self.made.append(name)
        up = _ip("-n", name, "link", "set", "lo", "up")
        assert up.returncode == 0, up.stderr
        return name

    def delete(self) -> None:
        for name in self.made:
            _ip("netns", "delete", name)
        self.made.clear()


class Host:
    """Processes started in one namespace (`ip netns exec` execs the command: its pid is theirs)."""

    def __init__(self, ns: str, logs: Path) -> None:
        self.ns, self.logs = ns, logs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *command: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen([IP, "netns", "exec", self.ns, *command], stdout=log, stderr=log,
                                    env=dcmtk_env())
        self.processes[name] = proc
        return proc

    def node(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        return self.start(name, sys.executable, "-m", "dicom_node.cli", "--log-level", "INFO", *args)

    def run(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([IP, "netns", "exec", self.ns, *command], capture_output=True, text=True,
                              check=False, timeout=timeout, env=dcmtk_env())

    def listening(self, port: int) -> bool:
        return self.run("bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}", timeout=10).returncode == 0

    def stop_all(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """20 small generated studies (`dicom-node synth`): Study Instance UID -> files."""
    out = tmp_path_factory.mktemp("studies")
    for kind, n, size in (("ct-head", CT_STUDIES, "64"), ("mr-sih", MR_STUDIES, "64")):
        args = ["--kind", kind, "--n", str(n), "--seed", "4242", "--out", str(out / kind), "--size", size,
                "--no-distractors", "--no-progress", "--no-seg"]  # the ground-truth SEGs are not sent
        if kind == "ct-head":
            args += ["--slices", "8"]
        done = subprocess.run([sys.executable, "-m", "dicom_node.cli", "--log-level", "WARNING", "synth", *args],
                              capture_output=True, text=True, check=False, timeout=300)
        assert done.returncode == 0, done.stderr
    found: dict[str, list[Path]] = {}
    for path in sorted(out.rglob("*.dcm")):
        found.setdefault(str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID), []).append(path)
    assert len(found) == CT_STUDIES + MR_STUDIES
    return found


def _unix_socket_url(tcp_url: str) -> str:
    """The same database over the server's Unix socket (network namespaces share no loopback)."""
    db = Database(tcp_url)
    try:
        with db.read() as s:
            folder = str(s.execute(text("SHOW unix_socket_directories")).scalar_one()).split(",")[0].strip()
            port = s.execute(text("SHOW port")).scalar_one()
    finally:
        db.dispose()
    base, name = tcp_url.rsplit("/", 1)
    return f"{base.split('@')[0]}@/{name}?host={folder}&port={port}"


class Cluster:
    """serve (+ PACS, sender) in one namespace, a worker in each of two others, all on one database/store."""

    def __init__(self, root: Path, tcp_url: str, namespaces: Namespaces) -> None:
        self.root, self.db = root, Database(tcp_url)  # the test reads the database over TCP, as it is here
        self.logs = root / "logs"
        self.logs.mkdir()
        url = _unix_socket_url(tcp_url)
        self.pacs_dir = root / "pacs"
        self.pacs_dir.mkdir()
        self.config = self._config(root / "a", NODE_PORT, url)
        self.second_config = self._config(root / "b", SECOND_NODE_PORT, url)
        self.serve_host = Host(namespaces.add("serve"), self.logs)
        self.workers = {w: Host(namespaces.add(w), self.logs) for w in ("w1", "w2")}

    def _config(self, folder: Path, port: int, url: str) -> Path:
        folder.mkdir()
        store = self.root / "shared"  # one store for every process: the shared (NFS) folder of a site
        return write_config(
            folder,
            node={"ae_title": "DICOMNODE", "host": "127.0.0.1", "port": port},
            destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": PACS_PORT}],
            database={"url": url},
            storage={"path": str(store / "store"), "quarantine": str(store / "quarantine"),
                     "outbox": str(store / "outbox"), "min_free_mb": 1},
            assembly={"quiet_seconds": 30, "complete_on_release": True, "release_grace_seconds": 0.2,
                      "check_interval_seconds": 0.2},
            models={"path": str(REPO / "models"), "enabled": LIGHT_MODELS},
            worker={"device": "cpu", "local": False, "lease_seconds": 4, "poll_seconds": 0.2, "batch_size": 8,
                    "torch_threads": 1},
            delivery={"initial_backoff_seconds": 0.3, "max_backoff_seconds": 1, "poll_seconds": 0.1,
                      "lease_seconds": 5},
        )

    def start(self) -> None:
        self.serve_host.start("pacs", STORESCP, "--aetitle", "PACS", "--unique-filenames", "--output-directory",
                              str(self.pacs_dir), str(PACS_PORT))
        self.start_serve("serve-a", self.config, NODE_PORT)
        for name, host in self.workers.items():
            host.node(name, "worker", "--config", str(self.config), "--id", name)
        wait_for(lambda: self.serve_host.listening(PACS_PORT), timeout=30, interval=0.2, msg="the PACS listening")

    def start_serve(self, name: str, config: Path, port: int) -> None:
        self.serve_host.node(name, "serve", "--config", str(config))
        wait_for(lambda: self.serve_host.listening(port) or self.serve_host.processes[name].poll() is not None,
                 timeout=60, interval=0.3, msg=f"{name} listening")
        assert self.serve_host.processes[name].poll() is None, self.serve_host.log(name)

    def send(self, port: int, files: list[Path]) -> None:
        done = self.serve_host.run(STORESCU, "-aet", "STORESCU", "-aec", "DICOMNODE", "127.0.0.1", str(port),
                                   *map(str, files), timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

    def stop(self) -> None:
        for host in (*self.workers.values(), self.serve_host):
            host.stop_all()
        self.db.dispose()

    def settled(self, n_studies: int) -> bool:
        """Every study's jobs done and every output's delivery sent."""
        with self.db.read() as s:
            jobs = list(s.scalars(select(Job.state)))
            deliveries = list(s.scalars(select(Delivery.state)))
            outputs = len(list(s.scalars(select(Output.id))))
        return (len(jobs) == n_studies and set(jobs) == {JobState.DONE}  # one model reads each modality
                and outputs > 0 and len(deliveries) == outputs and set(deliveries) == {DeliveryState.SENT})

    def received(self) -> Counter[str]:
        """SOP Instance UID -> how many times the PACS received it (storescp writes one file per C-STORE)."""
        return Counter(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                       for p in self.pacs_dir.iterdir() if p.is_file())

    def diagnostics(self) -> str:
        names = [(self.serve_host, n) for n in self.serve_host.processes] + \
                [(h, n) for n, h in self.workers.items()]
        return "\n".join(f"--- {n} ---\n{h.log(n)[-3000:]}" for h, n in names)


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str) -> Iterator[Cluster]:
    namespaces = Namespaces()
    made: Cluster | None = None
    try:
        made = Cluster(tmp_path, postgres_url, namespaces)
        made.start()
        yield made
    finally:
        if made is not None:
            made.stop()
        namespaces.delete()


def _settle(cluster: Cluster, studies: dict[str, list[Path]]) -> None:
    try:
        wait_for(lambda: cluster.settled(len(studies)), timeout=240, interval=0.5,
                 msg="every job done and every output delivered")
    except pytest.fail.Exception:
        print(cluster.diagnostics())
        raise


def _assert_exactly_once(cluster: Cluster, studies: dict[str, list[Path]]) -> None:
    """One done job and one analysed result per study and model; every output at the PACS exactly once."""
    with cluster.db.read() as s:
        modality = dict(s.execute(select(Study.study_uid, Series.modality).join(Series, Series.study_id == Study.id)
                                  .distinct()).all())
        jobs = s.execute(select(Study.study_uid, Job.model_name, Job.state, Job.generation)
                         .join(Study, Study.id == Job.study_id)).all()
        results = s.execute(select(Study.study_uid, Result.model_name, Result.status)
                            .join(Study, Study.id == Result.study_id)).all()
        outputs = s.execute(select(Study.study_uid, Output.kind, Output.sop_instance_uid)
                            .join(Study, Study.id == Output.study_id)).all()
    assert set(modality) == set(studies)
    expected = Counter((uid, MODEL_OF[m]) for uid, m in modality.items())
    assert Counter((uid, model) for uid, model, _, _ in jobs) == expected
    assert {(state, generation) for _, _, state, generation in jobs} == {(JobState.DONE, 1)}
    assert Counter((uid, model) for uid, model, _ in results) == expected
    assert {status for _, _, status in results} == {"analysed"}
    assert Counter((uid, kind) for uid, kind, _ in outputs if kind == "sr") == Counter(
        {(uid, "sr"): 1 for uid in studies})  # every study's report was made
    received = cluster.received()
    assert set(received) == {sop for _, _, sop in outputs}, "an output never reached the PACS"
    # exactly once, except at least once for an object whose send got no answer (a C-STORE the PACS may have
    # stored although its response never came: pynetdicom under load sometimes waits out the DIMSE timeout);
    # a repeat by a second claimant (a lapsed lease) leaves one attempt on the record and fails here
    with cluster.db.read() as s:
        retried = set(s.scalars(select(Output.sop_instance_uid).join(Delivery, Delivery.output_id == Output.id)
                                .where(Delivery.attempts > 1)))
    twice = sorted(sop for sop, n in received.items() if n > 1 and sop not in retried)
    assert not twice, f"the PACS got an output twice without a failed attempt ({twice})\n{cluster.diagnostics()}"


def test_two_workers_on_other_hosts_analyse_every_study_once(cluster: Cluster,
                                                           studies: dict[str, list[Path]]) -> None:
    cluster.send(NODE_PORT, [f for files in studies.values() for f in files])
    _settle(cluster, studies)
    _assert_exactly_once(cluster, studies)
    with cluster.db.read() as s:
        assert set(s.scalars(select(Job.worker_id))) <= {"w1", "w2"}


def test_a_worker_killed_mid_job_loses_it_to_the_other_after_its_lease(cluster: Cluster,
                                                                      studies: dict[str, list[Path]]) -> None:
    cluster.send(NODE_PORT, [f for files in studies.values() for f in files])
    victim = cluster.workers["w1"].processes["w1"]

    def held_by_w1() -> list[int]:
        """The jobs w1 holds, read while it is stopped (SIGSTOP), so it cannot finish one in between."""
        victim.send_signal(signal.SIGSTOP)
        with cluster.db.read() as s:
            held = list(s.scalars(select(Job.id).where(Job.state == JobState.RUNNING, Job.worker_id == "w1")))
        if not held:
            victim.send_signal(signal.SIGCONT)
            time.sleep(0.1)
        return held

    held = wait_for(held_by_w1, timeout=120, interval=0.05, msg="w1 running a job")
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    _settle(cluster, studies)
    _assert_exactly_once(cluster, studies)
    with cluster.db.read() as s:
        taken_over = list(s.execute(select(Job.worker_id, Job.lease_expiries).where(Job.id.in_(held))))
    assert taken_over == [("w2", 1)] * len(held)  # its lease ran out once, and w2 did it


def test_a_second_serve_on_the_same_database_sends_nothing_twice(cluster: Cluster,
                                                                 studies: dict[str, list[Path]]) -> None:
    cluster.start_serve("serve-b", cluster.second_config, SECOND_NODE_PORT)
    uids = sorted(studies)
    cluster.send(NODE_PORT, [f for uid in uids[::2] for f in studies[uid]])
    cluster.send(SECOND_NODE_PORT, [f for uid in uids[1::2] for f in studies[uid]])
    _settle(cluster, studies)
    _assert_exactly_once(cluster, studies)
    with cluster.db.read() as s:  # each serve received its half (and closed none of the other's)
        owners = Counter(s.scalars(select(Association.owner).where(Association.released.is_(True))))
    assert len(owners) == 2 and sum(owners.values()) == 2
