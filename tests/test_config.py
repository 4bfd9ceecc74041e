"""`dicom-node config check FILE` as a subprocess: exit 0 when valid, one line per problem naming the key."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, write_config

DICOM_NODE = REPO / ".venv" / "bin" / "dicom-node"


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DICOM_NODE), "config", "check", str(path)], check=False, capture_output=True, text=True, timeout=60
    )


def test_default_config_is_valid(tmp_path: Path) -> None:
    # a copy beside the shipped models so relative paths resolve the same way, without touching the repo
    shutil.copy(REPO / "config.toml", tmp_path / "config.toml")
    (tmp_path / "models").symlink_to(REPO / "models")
    result = _check(tmp_path / "config.toml")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and "DICOMNODE" in result.stdout


@pytest.mark.parametrize(
    ("sections", "key", "words"),
    [
        ({"node": {"ae_title": "WAY-TOO-LONG-AE-TITLE"}}, "node.ae_title", "not a valid AE title"),
        ({"node": {"ae_title": "BAD\\AE"}}, "node.ae_title", "not a valid AE title"),
        ({"node": {"colour": "blue"}}, "node.colour", "unknown key"),
        ({"storage": {"min_free": 10}}, "storage.min_free", "unknown key"),
        ({"node": {"port": 70000}}, "node.port", "out of range"),
        ({"callers": [{"ae_title": "PACS", "host": "not-an-ip"}]}, "callers[0].host", "not an IP address"),
    ],
)
def test_each_problem_names_its_key(tmp_path: Path, sections: dict, key: str, words: str) -> None:
    result = _check(write_config(tmp_path, **sections))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if key in line]
    assert len(lines) == 1, result.stderr
    assert words in lines[0]


def test_unwritable_storage_path_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # a folder cannot be created under a file (holds for root too, unlike permission bits)
    result = _check(write_config(tmp_path, storage={"path": str(blocker / "store")}))
    assert result.returncode != 0
    assert any(line.count("storage.path") == 1 and "cannot be created" in line for line in result.stderr.splitlines())


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    result = _check(write_config(tmp_path, node={"ae_title": "", "port": 0, "bogus": 1}))
    assert result.returncode != 0
    for key in ("node.ae_title", "node.port", "node.bogus"):
        assert key in result.stderr, result.stderr
