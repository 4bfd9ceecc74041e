"""The `dicom-node` command: parses the sub-command name and hands over to its module.

Each sub-command lives in `dicom_node/commands/<name>.py` with `add_arguments(parser)` and
`run(args) -> int`. Only the chosen module is imported, so `dicom-node config check` does not load torch;
a command that needs a library of an install extra the host lacks says which extra, in one line (`runtime/extras.py`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from dicom_node.runtime.logs import LOG_FORMAT_ENV

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("dicom_node.commands.serve", "run the node: receiver, assembler, sender and one local worker"),
    "worker": ("dicom_node.commands.worker", "run one more inference worker against the shared database"),
    "config": ("dicom_node.commands.config", "validate a configuration file (config check FILE)"),
    "status": ("dicom_node.commands.status", "list studies with state, counts, findings and deliveries"),
    "echo": ("dicom_node.commands.echo", "C-ECHO a configured destination"),
    "retry": ("dicom_node.commands.retry", "re-queue failed deliveries or jobs"),
    "synth": ("dicom_node.commands.synth", "generate synthetic head CT / brain MR studies with labels"),
    "train": ("dicom_node.commands.train", "train a model from DICOM + a labels CSV"),
    "evaluate": ("dicom_node.commands.evaluate", "evaluate a model: metrics.json and ROC/PR curves"),
    "demo": ("dicom_node.commands.demo", "run the whole loop on a generated study against a local PACS"),
    "db": ("dicom_node.commands.db", "the database schema: db upgrade (to this release's), db current (its revision)"),
    "user": ("dicom_node.commands.user", "dashboard accounts (user add NAME --role admin)"),
    "reports": ("dicom_node.commands.reports",
                "radiology reports: import, label, train, evaluate, export-labels, monitor"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicom-node",
        description="AI triage node for neuroradiology: receives DICOM, classifies, returns SR and overlays.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR (default INFO)")
    parser.add_argument(
        "--log-format", choices=("text", "json"), default=None,
        help=f"log lines as text (default) or one JSON object per line; also ${LOG_FORMAT_ENV}",
    )
    parser.add_argument("--version", action="version", version=f"dicom-node {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _version() -> str:
    from dicom_node import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    pre, rest = top.parse_known_args(argv)
    if pre.command is None:
        top.print_help()
        return 2
    module = importlib.import_module(COMMANDS[pre.command][0])
    parser = argparse.ArgumentParser(prog=f"dicom-node {pre.command}", description=COMMANDS[pre.command][1])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    args.log_level = pre.log_level

    from dicom_node.runtime.logs import setup_logging

    if pre.log_format:  # the environment carries it to the local worker process
        os.environ[LOG_FORMAT_ENV] = pre.log_format
    setup_logging(pre.log_level, json_lines=os.environ.get(LOG_FORMAT_ENV, "text") == "json")
    from dicom_node.errors import SchemaError

    try:
        return int(module.run(args) or 0)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except SchemaError as exc:  # a database a newer release made: one line, not a traceback
        print(f"dicom-node {pre.command}: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # a library of an extra this host was installed without
        from dicom_node.runtime.extras import install_hint, missing_extra

        command = " ".join(filter(None, (pre.command, getattr(args, "action", None))))
        extra = missing_extra(exc, command)
        if extra is None:
            raise
        print(install_hint(command, extra), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
