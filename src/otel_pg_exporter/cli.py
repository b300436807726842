"""Console scripts. Errors are one line on stderr and a non-zero exit; no traceback, no password."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .dsn import describe, redact, resolve_dsn
from .errors import OtelPgError
from .schema import install_schema, schema_status

EXIT_ERROR = 1
EXIT_USAGE = 2


def _dsn_help() -> str:
    return (
        "PostgreSQL connection string; default: $OTEL_EXPORTER_POSTGRES_DSN, else $DATABASE_URL, "
        "else libpq's PG* variables"
    )


def _fail(prog: str, message: str, dsn: str | None) -> int:
    print(f"{prog}: error: {redact(message, dsn)}", file=sys.stderr)
    return EXIT_ERROR


def print_status(dsn: str | None) -> None:
    states = schema_status(dsn)
    print(f"{'migration':<36} {'state':<9} applied_at")
    for s in states:
        when = s.applied_at.isoformat(timespec="seconds") if s.applied_at else ""
        print(f"{s.name + '.sql':<36} {s.state:<9} {when}".rstrip())


def install_schema_main(argv: Sequence[str] | None = None) -> int:
    """``otel-pg-install-schema``: apply the seed migrations to a database."""
    prog = "otel-pg-install-schema"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Create or upgrade the traces/spans schema (idempotent, safe to run concurrently).",
    )
    parser.add_argument("--dsn", help=_dsn_help())
    parser.add_argument(
        "--rls",
        action="store_true",
        help="also apply 004 (row level security policies; adds a Supabase-style "
        "auth.uid() on plain PostgreSQL if none exists)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the SQL that would run; change nothing")
    mode.add_argument("--status", action="store_true", help="list migrations and whether they are applied")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args(argv)
    dsn, _ = resolve_dsn(args.dsn)
    try:
        if args.status:
            print_status(args.dsn)
            return 0
        result = install_schema(args.dsn, rls=args.rls, dry_run=args.dry_run)
    except OtelPgError as exc:
        return _fail(prog, str(exc), dsn)
    except KeyboardInterrupt:
        return _fail(prog, "interrupted", dsn)
    if args.dry_run:
        if not result.sql:
            print("-- nothing to do: the schema is up to date")
        for filename, text in result.sql:
            print(f"-- ===== {filename} =====")
            print(text.rstrip())
            print()
        for filename in result.skipped:
            print(f"-- skipped {filename} (optional; pass --rls to apply)")
        return 0
    if not args.quiet:
        target = describe(dsn)
        for name in result.applied:
            print(f"applied  {name}")
        for name in result.adopted:
            print(f"adopted  {name} (objects already existed)")
        for name in result.skipped:
            print(f"skipped  {name} (optional; pass --rls to apply)")
        for note in result.notes:
            print(f"note     {note}")
        if not result.changed:
            print(f"schema is up to date on {target}")
        else:
            print(f"schema installed on {target}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(install_schema_main())
