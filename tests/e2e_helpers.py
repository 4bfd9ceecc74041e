"""Pieces shared by the end-to-end tests (test_e2e_orthanc, test_e2e_faults, test_demo): the shipped demo
models, `dicom-node serve` as a subprocess, `dicom-node status --json`, and a DCMTK storescp that keeps
every object it receives in its own file (so a repeated delivery would show as a second file).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Self

import pydicom
from conftest import REPO, dcmtk_env, free_port, stop_process
from orthanc_helpers import STORESCP, wait_listening

from dicom_node.outputs.readback import ReportedFinding, sr_findings
from dicom_node.outputs.validate import dciodvfy_errors, sr_problems

DICOM_NODE = REPO / ".venv" / "bin" / "dicom-node"
STORESCU = "/usr/bin/storescu"
# The shipped demo models; DICOM_NODE_E2E_MODELS points the end-to-end tests at another models folder.
MODELS = Path(os.environ.get("DICOM_NODE_E2E_MODELS", REPO / "models"))
DEMO_VERSION = "0.1.0-synthetic-demo"  # the first ICH demo's version
ICH_DEMO_VERSION = "0.7.0-synthetic-demo"  # the weighted ensemble with masks (models/ich/..., ich-* members)
SIH_DEMO_VERSION = "0.4.0-synthetic-demo"  # 0.2.0's classifiers (256 px data, study-level threshold) + a localiser per sign
CMB_DEMO_VERSION = "0.4.0-synthetic-demo"  # microbleeds: Mask R-CNN at 256 px, candidate rescorer, MIL with FLAIR
DEMO_MODELS = [{"name": "ich", "version": ICH_DEMO_VERSION}, {"name": "sih", "version": SIH_DEMO_VERSION}]
# For tests of how the node handles studies (fuzzed headers, faults, senders, several hosts) rather than of
# what the default model answers: the same ensemble code, 0.5.0's five 128 px members without 0.7.0's
# 512 px one, which costs more CPU per study than the other five together. The default is served in the
# demo, viewer, dashboard and served-equals-evaluated tests.
ICH_LIGHT_VERSION = "0.5.0-synthetic-demo"
LIGHT_MODELS = [{"name": "ich", "version": ICH_LIGHT_VERSION}, {"name": "sih", "version": SIH_DEMO_VERSION}]
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR


def demo_models_missing() -> list[str]:
    """The shipped demo model folders (the default and the light set) that have no manifest (empty: all there)."""
    return [f'{m["name"]} {m["version"]}' for m in (*DEMO_MODELS, *LIGHT_MODELS)
            if not (MODELS / m["name"] / m["version"] / "manifest.json").is_file()]


def e2e_sections(destination_port: int, light: bool = False, **overrides: Any) -> dict[str, Any]:
    """Config sections (for conftest.write_config) of a node with the demo models (`light`: LIGHT_MODELS)
    and one destination."""
    missing = demo_models_missing()
    assert not missing, f"shipped demo weights missing from {MODELS}: {', '.join(missing)}"
    sections: dict[str, Any] = {
        "destinations": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": destination_port}],
        "assembly": {"quiet_seconds": 300, "complete_on_release": True, "check_interval_seconds": 0.2},
        "models": {"path": str(MODELS), "enabled": LIGHT_MODELS if light else DEMO_MODELS},
        "worker": {"device": "cpu", "lease_seconds": 30, "poll_seconds": 0.1},
        "delivery": {"initial_backoff_seconds": 0.5, "max_backoff_seconds": 1, "poll_seconds": 0.1},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(sections.get(key), dict):
            sections[key] = {**sections[key], **value}
        else:
            sections[key] = value
    return sections


class ServeProcess:
    """`dicom-node serve --config FILE` in a subprocess, its output in `log`; SIGTERM on exit."""

    def __init__(self, config: Path, port: int, log: Path, *extra: str) -> None:
        self.config, self.port, self.log, self.extra = config, port, log, extra
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with self.log.open("ab") as fh:
            self.process = subprocess.Popen(
                [str(DICOM_NODE), "serve", "--config", str(self.config), *self.extra], stdout=fh, stderr=fh
            )
        try:
            wait_listening(self.port, timeout=30)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"serve did not listen on {self.port}: {self.log_tail()}") from None
        return self

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def children(self) -> list[int]:
        """PIDs of serve's child processes (its local worker)."""
        assert self.process is not None
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def stop(self) -> int | None:
        proc, self.process = self.process, None
        return stop_process(proc, grace=60)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *_exc: object) -> None:
        self.stop()
        if exc_type is not None:  # shown by pytest with the failure
            print(f"--- serve log ({self.log}) ---\n{self.log_tail()}")


def node_status(config: Path) -> list[dict[str, Any]]:
    """`dicom-node status --config FILE --json`, parsed."""
    proc = subprocess.run(
        [str(DICOM_NODE), "--log-level", "WARNING", "status", "--config", str(config), "--json"],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


def study_state(config: Path, study_uid: str) -> dict[str, Any] | None:
    return next((s for s in node_status(config) if s["study_uid"] == study_uid), None)


def storescu(port: int, files: list[Path], calling: str = "STORESCU", *options: str) -> None:
    """Send files to the node with DCMTK storescu (absolute path, TCP_NODELAY=1), one association;
    `options` e.g. "-xv" to propose a compressed transfer syntax."""
    cmd = [STORESCU, *options, "-aet", calling, "-aec", "DICOMNODE", "127.0.0.1", str(port), *map(str, files)]
    proc = subprocess.run(cmd, env=dcmtk_env(), capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr


class CollectingSCP:
    """DCMTK storescp writing every received object to a file of its own (`--unique-filenames`)."""

    def __init__(self, folder: Path, aet: str = "PACS", port: int | None = None) -> None:
        self.folder, self.aet = Path(folder), aet
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(STORESCP), "--aetitle", self.aet, "--unique-filenames", "--output-directory", str(self.folder),
             str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dcmtk_env(),
        )
        wait_listening(self.port)
        return self

    def stop(self) -> None:
        stop_process(self.process, grace=10)
        self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def received(self) -> list[pydicom.Dataset]:
        """Every object received so far (one per C-STORE), pixel data not read."""
        files = sorted(p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith("."))
        out = []
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            ds.filename = str(path)
            out.append(ds)
        return out


def findings_by_code(ds: pydicom.Dataset) -> dict[str, ReportedFinding]:
    """The SR's findings keyed by code value (e.g. SUBDURAL_HEMORRHAGE.value)."""
    return {f.code[0]: f for f in sr_findings(ds)}


def assert_valid_outputs(paths: list[Path]) -> None:
    """Every SR passes dciodvfy, dsrdump and dsr2html; every other object passes dciodvfy."""
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        problems = sr_problems(path) if str(ds.SOPClassUID) == SR_CLASS else dciodvfy_errors(path)
        assert problems == [], f"{path.name} ({ds.SOPClassUID}): {problems}"
