"""What every command shares: the DSN options (``--dsn``, ``--dsn-file``, never a password in
``argv`` without a warning), the schema option, the servers' options, the spool option, and the one
way a command fails (one line on stderr, no traceback, no password)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import psycopg

from ..config.dsn import redact

EXIT_ERROR = 1


def dsn_help() -> str:
    return (
        "PostgreSQL connection string; default: $OTEL_EXPORTER_POSTGRES_DSN, else $DATABASE_URL, "
        "else libpq's PG* variables"
    )


def add_dsn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        help=dsn_help() + " (a password here is visible to every local user: "
        "prefer the environment or --dsn-file)",
    )
    parser.add_argument(
        "--dsn-file", metavar="FILE", help="read the connection string from this file (mode 600)"
    )


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, then take secrets from files (``--dsn-file``, ``--token-file``) and warn, once, about a
    password or token given in ``argv`` (``ps`` shows it to every local user)."""
    from psycopg.conninfo import conninfo_to_dict

    from ..web.serving import read_secret_file

    args = parser.parse_args(argv)
    prog = parser.prog
    try:
        if getattr(args, "dsn_file", None):
            args.dsn = read_secret_file(args.dsn_file)
        elif getattr(args, "dsn", None):
            try:
                has_password = bool(conninfo_to_dict(args.dsn).get("password"))
            except psycopg.Error:
                has_password = ":" in args.dsn.split("@", 1)[0].split("//", 1)[-1]
            if has_password:
                print(
                    f"{prog}: warning: --dsn holds a password, visible to every local user in the "
                    "process list; use OTEL_EXPORTER_POSTGRES_DSN or --dsn-file",
                    file=sys.stderr,
                )
        if getattr(args, "token_file", None):
            args.token = read_secret_file(args.token_file)
        elif getattr(args, "token_in_argv", False):
            print(
                f"{prog}: warning: --token is visible to every local user in the process list; use "
                "the environment variable or --token-file",
                file=sys.stderr,
            )
    except OSError as exc:
        parser.error(f"cannot read a secret file: {exc.strerror or exc}")
    return args


def add_schema(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--schema",
        help="schema holding the tables (quoted as an identifier); default: $OTEL_EXPORTER_POSTGRES_SCHEMA, "
        "else the server's search_path",
    )


def fail(prog: str, message: str, dsn: str | None) -> int:
    print(f"{prog}: error: {redact(message, dsn)}", file=sys.stderr)
    return EXIT_ERROR


def add_spool_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spool-dir",
        help="the exporters' spool root on this machine (default $OTEL_EXPORTER_POSTGRES_SPOOL_DIR, else "
        "~/.local/state/otel-pg-exporter/spool)",
    )


def add_server(parser: argparse.ArgumentParser, *, port: int, token_env: str, token_help: str) -> None:
    """The options every serving command takes: database, schema, address, port, token."""
    add_dsn(parser)
    add_schema(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=port, help=f"port (default {port})")
    parser.add_argument("--token", action=_TokenInArgv, default=os.environ.get(token_env), help=token_help)
    parser.add_argument("--token-file", metavar="FILE", help="read the token from this file (mode 600)")
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="without a token only requests for 127.0.0.1, localhost, [::1] and the bound address are "
        "answered (DNS rebinding); add a Host name to accept (repeatable)",
    )


class _TokenInArgv(argparse.Action):
    """``--token`` given on the command line: noted, so ``parse`` can warn about it."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        namespace.token = values
        namespace.token_in_argv = True
