"""Shared test helpers: free ports, polling, DCMTK environment, throw-away node configs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
DCMTK = Path("/usr/bin")  # call DCMTK by absolute path: pynetdicom installs same-named tools in the venv


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 that this test session has not handed out before: the socket is closed
    before the caller's server binds, so the kernel may offer the same port to the next call, and two
    servers of one test (Orthanc's DICOM and HTTP ports) then collide."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, msg: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail the test with `msg` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for: {msg or condition}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 15.0) -> int | None:
    """SIGTERM a child process, SIGKILL it if it is still there after `grace` s; its return code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def dcmtk_env() -> dict[str, str]:
    """Environment for DCMTK peers: TCP_NODELAY=1, or they stall ~40 ms per message (Nagle)."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def write_config(folder: Path, **sections: dict[str, Any] | list[dict[str, Any]]) -> Path:
    """Write a config.toml for a test node in `folder`; `sections` override the defaults below.

    Table values (dicts) are merged into the defaults; array-of-table values (lists) replace them.
    """
    base: dict[str, Any] = {
        "node": {"ae_title": "DICOMNODE", "host": "127.0.0.1", "port": free_port()},
        "callers": [{"ae_title": "STORESCU"}, {"ae_title": "ECHOSCU"}, {"ae_title": "PACS"}, {"ae_title": "ORTHANC"}],
        "destinations": [],
        "database": {"url": "sqlite:///var/node.db"},
        "storage": {"path": "var/store", "quarantine": "var/quarantine", "outbox": "var/outbox", "min_free_mb": 1},
        "assembly": {"quiet_seconds": 30, "complete_on_release": True, "check_interval_seconds": 0.2},
        "models": {"path": str(REPO / "models"), "enabled": []},
        "worker": {"device": "cpu", "lease_seconds": 30, "poll_seconds": 0.1},
        "delivery": {"initial_backoff_seconds": 0.5, "max_backoff_seconds": 2, "poll_seconds": 0.1},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    path = folder / "config.toml"
    path.write_text(_to_toml(base))
    return path


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def _to_toml(data: dict[str, Any]) -> str:
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            for k, v in value.items():
                if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                    continue
                lines.append(f"{k} = {_toml_value(v)}")
            for k, v in value.items():
                if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                    for item in v:
                        lines.append(f"[[{key}.{k}]]")
                        lines.extend(f"{ik} = {_toml_value(iv)}" for ik, iv in item.items())
            lines.append("")
        elif isinstance(value, list):
            for item in value:
                lines.append(f"[[{key}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in item.items())
                lines.append("")
        else:
            lines.insert(0, f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def node_config(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `node_config(node={...}, destinations=[...])` → path of a valid config in tmp_path."""

    def make(**sections: Any) -> Path:
        return write_config(tmp_path, **sections)

    return make


# --- PostgreSQL: a throw-away cluster for the tests, a fresh database per test -----------------------

# The newest installed PostgreSQL server (Debian's postgresql package; scripts/setup installs it).
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
             default=Path("/usr/lib/postgresql/missing/bin"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL cluster on a free loopback port for the whole run; yields the URL of its `postgres` db."""
    # A missing part fails the test with what to run: it never skips (scripts/setup installs all of it).
    import psycopg  # noqa: F401  (the driver the postgresql+psycopg URL needs)

    if not (PG_BIN / "initdb").exists():
        pytest.fail("PostgreSQL server binaries not installed: run scripts/setup (Debian package postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="dn-pg-"))  # not under pytest's 0700 tmp: the postgres user needs it
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        if shutil.which("runuser") is None:
            pytest.fail("running as root without runuser (util-linux): initdb refuses to run as root")
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chmod(folder, 0o777)
    data, port = folder / "data", free_port()
    init = subprocess.run([*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "dn"],
                          check=False, capture_output=True, timeout=60)
    if init.returncode != 0:
        pytest.fail(f"initdb failed: {init.stderr.decode()[-300:]}")
    opts = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    ctl = [*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data)]
    start = subprocess.run([*ctl, "-o", opts, "-l", str(folder / "log"), "-w", "start"],
                           check=False, capture_output=True, timeout=60)
    if start.returncode != 0:
        pytest.fail(f"pg_ctl start failed: {start.stderr.decode()[-300:]}")
    try:
        yield f"postgresql+psycopg://dn@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], check=False, capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """The URL of a new, empty database on the test cluster, dropped after the test."""
    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    finally:
        admin.dispose()
