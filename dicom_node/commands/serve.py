"""`dicom-node serve --config FILE`: run the node until SIGTERM/SIGINT, then shut down cleanly."""

from __future__ import annotations

import argparse
import sys

from dicom_node.config import load_config
from dicom_node.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config.toml", help="configuration file (default config.toml)")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return 1
    from dicom_node.node import Node

    return Node(config).run_forever()
