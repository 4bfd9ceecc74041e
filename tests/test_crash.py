"""SIGKILL `dicom-node serve` in the middle of a 200-instance association: nothing acknowledged is lost,
and the restarted node serves on (and stops cleanly on SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pydicom
from conftest import REPO, wait_for
from receiver_helpers import DCMTK_ENV, ECHOSCU, STORESCU, ct_series, make_config, storescu, write_series
from sqlalchemy import select

from dicom_node.db.engine import Database
from dicom_node.db.schema import Instance

DICOM_NODE = REPO / ".venv" / "bin" / "dicom-node"
KILL_AFTER = 60


def _serve(config_path: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen([str(DICOM_NODE), "serve", "--config", str(config_path)], stdout=fh, stderr=fh)


def _children(pid: int) -> list[int]:
    """PIDs of a process's live children (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _echo_ok(port: int) -> bool:
    cmd = [ECHOSCU, "-aet", "ECHOSCU", "-aec", "DICOMNODE", "127.0.0.1", str(port)]
    return subprocess.run(cmd, check=False, env=DCMTK_ENV, capture_output=True, timeout=10).returncode == 0


def test_sigkill_mid_association_loses_nothing_acknowledged(tmp_path: Path) -> None:
    config = make_config(tmp_path, storage={"min_free_mb": 1})
    assert config.source is not None
    port = config.node.port
    files = write_series(tmp_path / "in", ct_series(200, rows=64, columns=64))
    log = tmp_path / "serve.log"
    server = _serve(config.source, log)
    try:
        wait_for(lambda: _echo_ok(port), timeout=30, msg=f"node listening on {port}; log: {log}")
        worker_pids = wait_for(lambda: _children(server.pid), timeout=30, msg="serve starts its local worker")
        cmd = [STORESCU, "-v", "-aet", "STORESCU", "-aec", "DICOMNODE", "127.0.0.1", str(port), *map(str, files)]
        scu = subprocess.Popen(cmd, env=DCMTK_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert scu.stdout is not None
        acked: list[Path] = []
        current: Path | None = None
        for line in scu.stdout:
            if line.startswith("I: Sending file: "):
                current = Path(line.removeprefix("I: Sending file: ").strip())
            elif "Received Store Response (Success)" in line:
                assert current is not None
                acked.append(current)
                if len(acked) == KILL_AFTER:
                    server.send_signal(signal.SIGKILL)
        scu.wait(timeout=30)
        server.wait(timeout=10)
        assert server.returncode == -signal.SIGKILL
        assert scu.returncode != 0, "storescu should see the association break"
        assert KILL_AFTER <= len(acked) < len(files), "the kill must land mid-association"
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in worker_pids), timeout=20,
                 msg="the local worker does not outlive a SIGKILLed serve")

        db = Database(config.database_url)
        with db.read() as s:
            rows = {r.sop_instance_uid: r.path for r in s.scalars(select(Instance)).all()}
        db.dispose()
        for f in acked:
            uid = pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
            assert uid in rows, f"acknowledged instance {uid} missing from the database"
            stored = config.storage.path / rows[uid]
            assert pydicom.dcmread(stored).PixelData == pydicom.dcmread(f).PixelData
        for path in rows.values():  # no row without its file
            assert (config.storage.path / path).is_file()

        # restart: the node serves on and takes the whole series (duplicates are idempotent)
        server = _serve(config.source, log)
        wait_for(lambda: _echo_ok(port), timeout=30, msg="restarted node listening")
        result = storescu(port, files)
        assert result.returncode == 0, result.stderr
        db = Database(config.database_url)
        with db.read() as s:
            assert len(s.scalars(select(Instance.id)).all()) == 200
        db.dispose()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0, log.read_text()[-2000:]
        assert "node stopped" in log.read_text()
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
