"""Install extras: plain `pip install dicom-node` is a receiver/sender host (no torch); `[worker]` adds the
models' libraries, `[train]` those of `train`, `evaluate`, `reports train|evaluate` and bench/.

`missing_extra` turns the ModuleNotFoundError of a library an extra brings into that extra's name, so a
command run without it says what to install in one line instead of a traceback.
"""

from __future__ import annotations

LIBRARY_EXTRA = {"torch": "worker", "torchvision": "worker", "sklearn": "train", "matplotlib": "train"}
TRAIN_COMMANDS = frozenset({"train", "evaluate", "reports train", "reports evaluate"})


def missing_extra(exc: ImportError, command: str) -> str | None:
    """The extra that brings the library `exc` could not import, as `command` needs it; None when the
    library is none of the extras' (a real error, not an install choice)."""
    library = (exc.name or "").partition(".")[0]
    if library not in LIBRARY_EXTRA:
        return None
    return "train" if command in TRAIN_COMMANDS else LIBRARY_EXTRA[library]


def install_hint(command: str, extra: str) -> str:
    return f"dicom-node {command} needs the [{extra}] extra: pip install 'dicom-node[{extra}]'"
