"""`dicom-node echo DEST --config FILE`: C-ECHO a configured destination; exit 0 on success."""

from __future__ import annotations

import argparse
import sys

from dicom_node.commands import load_config_or_report
from dicom_node.errors import DeliveryError, DeliveryRefused


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("destination", help="name of a [[destinations]] entry")
    parser.add_argument("--config", default="config.toml", help="configuration file (default config.toml)")


def run(args: argparse.Namespace) -> int:
    config = load_config_or_report(args.config)
    if config is None:
        return 1
    from dicom_node.delivery.echo import echo

    try:
        dest = config.destination(args.destination)
    except KeyError:
        names = ", ".join(d.name for d in config.destinations) or "none configured"
        print(f"unknown destination {args.destination!r} (known: {names})", file=sys.stderr)
        return 2
    target = f"{dest.name} ({dest.ae_title}@{dest.host}:{dest.port})"
    try:
        status = echo(config, args.destination)
    except (DeliveryError, DeliveryRefused) as exc:
        print(f"C-ECHO {target}: failed: {exc}", file=sys.stderr)
        return 1
    if status != 0:
        print(f"C-ECHO {target}: status 0x{status:04X}", file=sys.stderr)
        return 1
    print(f"C-ECHO {target}: success")
    return 0
