"""`dicom-node serve --config FILE`: run the node until SIGTERM/SIGINT, then shut down cleanly."""

from __future__ import annotations

import argparse
import sys

from dicom_node.commands import load_config_or_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config.toml", help="configuration file (default config.toml)")
    parser.add_argument(
        "--no-worker", action="store_true", help="do not start the local worker (workers run elsewhere), as [worker] local = false"
    )


def run(args: argparse.Namespace) -> int:
    config = load_config_or_report(args.config)
    if config is None:
        return 1
    from dicom_node.runtime.preflight import problems

    local_worker = config.worker.local and not args.no_worker
    # refuse to start, one line per problem, instead of a traceback
    found = problems(config, ports=True, local_worker=local_worker)
    for problem in found:
        print(f"{args.config}: {problem}", file=sys.stderr)
    if found:
        return 1
    from dicom_node.errors import ModelError
    from dicom_node.runtime.services import build_node

    try:
        node = build_node(config, log_level=args.log_level, local_worker=local_worker)
    except ModelError as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 1
    return node.run_forever()
