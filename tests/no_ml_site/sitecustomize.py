"""Imported at start-up by every Python process whose PYTHONPATH starts with this folder: makes the
worker/training libraries look uninstalled, as on a host installed with plain `pip install dicom-node`.

`import torch` (torchvision, sklearn, matplotlib, and their submodules) raises ModuleNotFoundError, and
each attempt is appended to the file named by $DICOM_NODE_BLOCKED_IMPORTS (one line: pid and module), so
a test sees an attempt even when the code that made it caught the error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

BLOCKED = frozenset({"torch", "torchvision", "sklearn", "matplotlib"})


class _Uninstalled:
    @staticmethod
    def find_spec(name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if name.partition(".")[0] not in BLOCKED:
            return None
        record = os.environ.get("DICOM_NODE_BLOCKED_IMPORTS")
        if record:
            with open(record, "a", encoding="utf-8") as fh:
                fh.write(f"{os.getpid()} {name}\n")
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, _Uninstalled())
