"""Command-line entry points: each module only parses arguments and wires the parts together."""

from __future__ import annotations

import sys

from dicom_node.config import Config, load_config
from dicom_node.errors import ConfigError


def load_config_or_report(path: str) -> Config | None:
    """The validated config, or None after printing one line per problem (each naming its key)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{path}: {problem}", file=sys.stderr)
        return None
