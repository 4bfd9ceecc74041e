"""The package type-checks: mypy with the project's [tool.mypy] configuration (pyproject.toml) is clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_clean() -> None:
    # No arguments: mypy reads pyproject.toml in the working directory (files, python_version, ...).
    proc = subprocess.run(
        [sys.executable, "-m", "mypy"],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, f"mypy found type errors:\n{proc.stdout}{proc.stderr}"
