"""`config check` and `serve` refuse what serve cannot use, one line naming the key, no traceback: a model
that does not exist, a weight file whose checksum is wrong, a threshold for a label the model lacks, a
database that cannot be opened, a port already in use."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, free_port, write_config
from e2e_helpers import SIH_DEMO_VERSION

DICOM_NODE = REPO / ".venv" / "bin" / "dicom-node"
DEMO = "0.1.0-synthetic-demo"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DICOM_NODE), *args], check=False, capture_output=True, text=True, timeout=120)


def _models(tmp_path: Path) -> Path:
    """A private copy of the shipped models (weights may be changed by a test)."""
    target = tmp_path / "models"
    shutil.copytree(REPO / "models", target)
    return target


def _config(tmp_path: Path, models: Path, enabled: list[dict], **sections: object) -> Path:
    return write_config(tmp_path, models={"path": str(models), "enabled": enabled}, **sections)  # type: ignore[arg-type]


def _one_line_naming(result: subprocess.CompletedProcess[str], key: str, words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if key in line]
    assert len(lines) == 1, result.stderr
    assert words in lines[0], lines[0]


@pytest.mark.parametrize(("enabled", "words"), [
    ([{"name": "ich", "version": "9.9.9"}], "manifest"),
    ([{"name": "nosuchmodel", "version": DEMO}], "nosuchmodel"),
    ([{"name": "ich", "version": DEMO, "thresholds": {"tumour": 0.5}}], "tumour"),
])
def test_config_check_refuses_models_serve_could_not_load(tmp_path: Path, enabled: list[dict], words: str) -> None:
    result = _cli("config", "check", str(_config(tmp_path, _models(tmp_path), enabled)))
    _one_line_naming(result, "models.enabled[0]", words)


def test_config_check_refuses_a_weight_file_with_the_wrong_checksum(tmp_path: Path) -> None:
    models = _models(tmp_path)
    weights = sorted((models / "sih" / SIH_DEMO_VERSION).glob("*.pt"))
    assert weights
    data = bytearray(weights[0].read_bytes())
    data[-1] ^= 0xFF
    weights[0].write_bytes(bytes(data))
    result = _cli("config", "check", str(_config(tmp_path, models, [{"name": "sih", "version": SIH_DEMO_VERSION}])))
    _one_line_naming(result, "models.enabled[0]", "sha256")


def test_config_check_passes_the_shipped_models(tmp_path: Path) -> None:
    result = _cli("config", "check", str(_config(tmp_path, REPO / "models", [{"name": "ich", "version": DEMO}])))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_config_check_refuses_a_database_it_cannot_open(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    path = _config(tmp_path, REPO / "models", [], database={"url": f"sqlite:///{blocker}/node.db"})
    _one_line_naming(_cli("config", "check", str(path)), "database.url", "cannot open")


def test_serve_refuses_a_port_in_use_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        path = _config(tmp_path, REPO / "models", [], node={"port": port})
        result = _cli("serve", "--config", str(path))
    _one_line_naming(result, "node.port", "already in use")
