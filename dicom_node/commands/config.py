"""`dicom-node config check FILE`: validate a configuration, one line per problem naming the key: the
file's shape and values (config.py), then what serve needs of the machine (runtime/preflight.py)."""

from __future__ import annotations

import argparse
import sys

from dicom_node.commands import load_config_or_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="validate a config file; exit 0 when valid")
    check.add_argument("file", nargs="?", default="config.toml")


def run(args: argparse.Namespace) -> int:
    cfg = load_config_or_report(args.file)
    if cfg is None:
        return 1
    from dicom_node.runtime.preflight import problems

    found = problems(cfg)  # models, storage and database as serve will use them
    for problem in found:
        print(f"{args.file}: {problem}", file=sys.stderr)
    if found:
        return 1
    print(
        f"{cfg.source}: valid (AE {cfg.node.ae_title} on {cfg.node.host}:{cfg.node.port}, "
        f"{len(cfg.callers)} caller(s), {len(cfg.destinations)} destination(s), "
        f"{sum(1 for m in cfg.models.enabled if m.enabled)} model(s) enabled)"
    )
    return 0
