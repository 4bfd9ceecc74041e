"""Check written objects with the reference tools: dicom3tools `dciodvfy`, DCMTK `dsrdump` and `dsr2html`.

Used by the tests and by debugging paths; the tools are called by absolute path (pynetdicom installs
same-named programs into the virtual environment).
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pydicom

DCIODVFY = Path("/usr/bin/dciodvfy")
DSRDUMP = Path("/usr/bin/dsrdump")
DSR2HTML = Path("/usr/bin/dsr2html")
_TIMEOUT = 60.0


@dataclass(frozen=True)
class ToolResult:
    returncode: int
    stdout: str
    stderr: str


def _run(tool: Path, *args: str) -> ToolResult:
    if not tool.exists():
        raise FileNotFoundError(f"{tool} is not installed")
    proc = subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    return ToolResult(proc.returncode, proc.stdout, proc.stderr)


def dciodvfy_errors(path: str | Path) -> list[str]:
    """The "Error" lines dciodvfy reports for a file (empty: the object is valid for its IOD)."""
    result = _run(DCIODVFY, str(path))
    lines = (result.stdout + "\n" + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def dsrdump(path: str | Path) -> ToolResult:
    """DCMTK's SR dump of a file (returncode 0: DCMTK could read and check the document)."""
    return _run(DSRDUMP, str(path))


def dsr2html(path: str | Path) -> ToolResult:
    """DCMTK's HTML rendering of an SR file, in stdout."""
    return _run(DSR2HTML, str(path))


def sr_problems(path: str | Path) -> list[str]:
    """Every problem the tools find with an SR file: dciodvfy errors, dsrdump or dsr2html failures."""
    problems = dciodvfy_errors(path)
    dump = dsrdump(path)
    if dump.returncode != 0:
        problems.append(f"dsrdump exit {dump.returncode}: {dump.stderr.strip()}")
    html = dsr2html(path)
    if html.returncode != 0 or "<html" not in html.stdout.lower():
        problems.append(f"dsr2html exit {html.returncode}: {html.stderr.strip()}")
    return problems


def dataset_problems(ds: pydicom.Dataset) -> list[str]:
    """Write a dataset to a temporary file and check it (SR checks for SR documents, dciodvfy for all)."""
    with tempfile.TemporaryDirectory(prefix="dicom-node-validate-") as tmp:
        path = Path(tmp) / "object.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        if str(ds.get("Modality", "")) == "SR":
            return sr_problems(path)
        return dciodvfy_errors(path)
