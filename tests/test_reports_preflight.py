"""`config check` and `serve` check what report intake needs: the report labeller (when reports are taken
in or monitored) and the HL7 port; one line naming the key, no traceback."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from conftest import REPO, free_port, write_config

DICOM_NODE = REPO / ".venv" / "bin" / "dicom-node"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DICOM_NODE), *args], check=False, capture_output=True, text=True, timeout=120)


def one_line_naming(result: subprocess.CompletedProcess[str], key: str, words: str) -> None:
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if key in line]
    assert len(lines) == 1 and words in lines[0], result.stderr


def test_config_check_refuses_a_report_labeller_that_is_not_there(tmp_path: Path) -> None:
    ok = write_config(tmp_path, reports={"hl7_port": free_port()})
    assert cli("config", "check", str(ok)).returncode == 0  # the shipped labeller
    path = write_config(tmp_path, reports={"hl7_port": free_port(), "version": "9.9.9"})
    one_line_naming(cli("config", "check", str(path)), "reports.model", "9.9.9")
    path = write_config(tmp_path, reports={"hl7_port": 70000})
    one_line_naming(cli("config", "check", str(path)), "reports.hl7_port", "out of range")


def test_serve_refuses_an_hl7_port_in_use(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        path = write_config(tmp_path, reports={"hl7_port": port})
        result = cli("serve", "--config", str(path))
    one_line_naming(result, "reports.hl7_port", "already in use")
