"""Install extras: plain `pip install dicom-node` is a receiver/sender host without torch, torchvision,
scikit-learn or matplotlib; `[worker]` and `[train]` bring them.

The host test runs the real commands in processes whose `tests/no_ml_site/sitecustomize.py` makes those
libraries look uninstalled and records every attempt to import them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, free_port, wait_for, write_config
from e2e_helpers import DEMO_MODELS, CollectingSCP, ServeProcess, node_status, storescu

from dicom_node.synth.ct_study import write_ct_head_study

UNINSTALLED = ("torch", "torchvision", "scikit-learn", "matplotlib")
NO_ML_SITE = Path(__file__).resolve().parent / "no_ml_site"


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_base_dependencies_leave_the_worker_and_training_libraries_to_extras() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert _names(project["dependencies"]).isdisjoint(UNINSTALLED)
    assert {"pydicom", "pynetdicom", "sqlalchemy", "starlette"} <= _names(project["dependencies"])
    assert {"torch", "torchvision"} <= _names(extras["worker"])
    assert set(UNINSTALLED) <= _names(extras["train"])
    assert {"pytest", "psycopg"} <= _names(extras["test"])


@pytest.fixture
def without_ml(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process this test starts sees no torch/torchvision/sklearn/matplotlib."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (str(NO_ML_SITE), str(REPO),
                                                                   os.environ.get("PYTHONPATH")))))


def _command(record: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`dicom-node ARGS` without the libraries; attempts to import them are appended to `record`."""
    env = {**os.environ, "DICOM_NODE_BLOCKED_IMPORTS": str(record)}
    return subprocess.run([sys.executable, "-m", "dicom_node.cli", "--log-level", "WARNING", *args], env=env,
                          capture_output=True, text=True, check=False, timeout=120)


def _attempts(record: Path) -> str:
    return record.read_text() if record.exists() else ""


def test_a_receiver_host_runs_without_the_worker_libraries(tmp_path: Path, without_ml: None,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = tmp_path / "imports"  # what the host's commands tried to import of the blocked libraries
    web_port = free_port()
    with CollectingSCP(tmp_path / "pacs") as pacs:
        config = write_config(
            tmp_path,
            destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}],
            assembly={"quiet_seconds": 300, "complete_on_release": True, "release_grace_seconds": 0.5,
                      "check_interval_seconds": 0.2},
            models={"path": str(REPO / "models"), "enabled": DEMO_MODELS},
            worker={"local": False, "lease_seconds": 30},
            web={"port": web_port},
        )
        check = _command(attempts, "config", "check", str(config))
        assert check.returncode == 0, check.stderr
        port = int(tomllib.loads(config.read_text())["node"]["port"])
        study = write_ct_head_study(tmp_path / "in", 7301, findings=(), n_slices=4, size=64, distractors=False)
        log = tmp_path / "serve.log"
        serve = ServeProcess(config, port, log)
        monkeypatch.setenv("DICOM_NODE_BLOCKED_IMPORTS", str(attempts))  # inherited by serve
        with serve:
            storescu(port, study.files)  # every instance acknowledged, or this fails
            wait_for(lambda: _models(config, study.study_uid) == [("ich", "queued")], timeout=30,
                     msg="the study complete and queued for the ICH model (modality read from its manifest)")
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=10) as reply:
                assert reply.status == 200
            for args in (("echo", "--config", str(config), "pacs"),
                         ("retry", "--config", str(config), "--deliveries"),
                         ("reports", "list", "--config", str(config)),
                         ("status", "--config", str(config))):
                done = _command(attempts, *args)
                assert done.returncode == 0, f"{args}: {done.stderr}"
            assert serve.stop() == 0
    row = _study(config, study.study_uid)
    assert row is not None and row["instances"] == len(study.files)
    text = log.read_text()
    assert "ImportError" not in text and "ModuleNotFoundError" not in text and "Traceback" not in text, text[-2000:]
    assert _attempts(attempts) == "", "the receiver host's commands tried to import a worker library"


def test_a_command_that_needs_a_missing_extra_says_which_in_one_line(tmp_path: Path, without_ml: None) -> None:
    config = write_config(tmp_path, models={"path": str(REPO / "models"), "enabled": DEMO_MODELS})
    record = tmp_path / "imports"
    expected = {
        ("train", "--model", "ich", "--data", str(tmp_path), "--out", str(tmp_path / "m")):
            (1, "dicom-node train needs the [train] extra: pip install 'dicom-node[train]'"),
        ("reports", "train", "--data", str(tmp_path), "--out", str(tmp_path / "r")):
            (1, "dicom-node reports train needs the [train] extra: pip install 'dicom-node[train]'"),
        ("worker", "--config", str(config)):  # 3: serve's local worker is not restarted
            (3, "dicom-node worker needs the [worker] extra: pip install 'dicom-node[worker]'"),
        ("config", "check", str(config)):  # [worker] local defaults to true: the local worker would need it
            (1, (f"{config}: worker.local: the local worker needs the [worker] extra (torch is not installed): "
                 "pip install 'dicom-node[worker]', or set [worker] local = false where workers run elsewhere")),
    }
    (tmp_path / "receiver").mkdir()
    receiver_only = write_config(tmp_path / "receiver", worker={"local": False},
                                 models={"path": str(REPO / "models"), "enabled": [{"name": "ich", "version": "9.9"}]})
    manifest = REPO / "models" / "ich" / "9.9" / "manifest.json"
    expected[("config", "check", str(receiver_only))] = (  # its manifest is all a receiver host checks
        1, (f"{receiver_only}: models.enabled[0] (ich 9.9): model ich 9.9: cannot read {manifest}: [Errno 2] "
            f"No such file or directory: '{manifest}'"))
    for args, (code, line) in expected.items():
        done = _command(record, *args)
        assert (done.returncode, done.stderr.strip()) == (code, line), args
    assert "torch" in _attempts(record)  # the libraries were looked for, and looked uninstalled


def _study(config: Path, study_uid: str) -> dict[str, Any] | None:
    return next((s for s in node_status(config) if s["study_uid"] == study_uid), None)


def _models(config: Path, study_uid: str) -> list[tuple[str, str]]:
    row = _study(config, study_uid)
    return [(m["model"], m["state"]) for m in row["models"]] if row else []
