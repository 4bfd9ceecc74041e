"""`dicom-node user add NAME --role {admin,reader} --config FILE`: a dashboard account.

The password is asked twice on the terminal, or read from standard input with `--password-stdin` (one
line, for scripts). `--login-link` prints a one-time login link (valid 24 h) instead of asking for a
password: the user sets nothing and logs in once by the link (the account keeps a random password).
"""

from __future__ import annotations

import argparse
import getpass
import sys

from dicom_node.commands import load_config_or_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="create a dashboard user")
    add.add_argument("name", help="user name (letters, digits, . _ @ -)")
    add.add_argument("--role", choices=("admin", "reader"), required=True,
                     help="admin: everything, incl. configuration; reader: worklist, studies, operations")
    add.add_argument("--config", default="config.toml", help="configuration file (default config.toml)")
    how = add.add_mutually_exclusive_group()
    how.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    how.add_argument("--login-link", action="store_true", help="print a one-time login link instead of a password")
    lst = sub.add_parser("list", help="list dashboard users")
    lst.add_argument("--config", default="config.toml", help="configuration file (default config.toml)")


def run(args: argparse.Namespace) -> int:
    config = load_config_or_report(args.config)
    if config is None:
        return 1
    from dicom_node.db.engine import Database
    from dicom_node.runtime import audit
    from dicom_node.web import accounts
    from dicom_node.web.links import dashboard_url

    db = Database(config.database_url)
    try:
        if args.action == "list":
            for account in accounts.users(db):
                print(f"{account.name}\t{account.role}")
            return 0
        if args.login_link:
            problems = accounts.check_new_user(args.name, args.role, "x" * accounts.MIN_PASSWORD)
            password = None
        else:
            password = _password(args.password_stdin)
            if password is None:
                return 1
            problems = accounts.check_new_user(args.name, args.role, password)
        if problems:
            for problem in problems:
                print(problem, file=sys.stderr)
            return 1
        existing = {a.name: a for a in accounts.users(db)}
        try:
            if password is None and args.name in existing:
                account = existing[args.name]  # a new login link for an existing user
            elif password is None:
                account = accounts.ensure_user(db, args.name, args.role)
            else:
                account = accounts.add_user(db, args.name, args.role, password)
        except accounts.AccountError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        if account.name in existing:
            print(f"user {account.name!r} ({account.role}) exists")
        else:
            audit.record_now(db, audit.USER_ADDED, actor="command line", subject=account.name,
                             detail=f"role {account.role}")
            print(f"user {account.name!r} ({account.role}) added")
        if args.login_link:
            token = accounts.login_link_token(db, account)
            print(f"one-time login (24 h): {dashboard_url(config, f'/login/once/{token}')}")
        elif config.web.port == 0:
            print("note: the dashboard is off in this configuration ([web] port = 0)")
        return 0
    finally:
        db.dispose()


def _password(from_stdin: bool) -> str | None:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        print("the passwords differ; nothing changed", file=sys.stderr)
        return None
    return first
