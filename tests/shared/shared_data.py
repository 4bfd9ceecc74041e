"""Where the suite over real public DICOM files finds them: the one place that reads the path.

`DICOM_NODE_SHARED_DATA`, default `<repo>/../shared/data` (CI always has it beside the clone). When the
folder is absent the suite fails with what to do; it never skips (a skip would hide a missing step). A clone
without the shared files runs the core suite alone: `.venv/bin/pytest -q --ignore=tests/shared`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import REPO

DATA = Path(os.environ.get("DICOM_NODE_SHARED_DATA", REPO.parent / "shared" / "data"))


def require_data() -> None:
    """Fail this module's collection, with what to do, when the shared data folder is absent."""
    if not DATA.is_dir() or not any(DATA.iterdir()):
        pytest.fail(f"shared data folder {DATA} is absent or empty: set DICOM_NODE_SHARED_DATA to it, or run the "
                    "core suite alone with `.venv/bin/pytest -q --ignore=tests/shared`", pytrace=False)
