"""Console scripts: schema install, cost backfill, report, cleanup, doctor (the servers in ``servers``,
the quarantine in ``spool``). Errors are one line on stderr and a non-zero exit; no traceback, no
password."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from datetime import datetime

import psycopg

from ..config.dsn import describe, resolve_dsn, safe_message
from ..errors import OtelPgError
from ..schema.migrations import install_schema, schema_status
from .arguments import add_dsn, add_schema, add_spool_dir, fail, parse
from .servers import gateway_main, ui_main
from .spool import spool_main


def print_status(dsn: str | None, schema: str | None = None) -> None:
    states = schema_status(dsn, schema=schema)
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
    add_dsn(parser)
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
    add_schema(parser)
    args = parse(parser, argv)
    dsn, _ = resolve_dsn(args.dsn)
    try:
        if args.status:
            print_status(args.dsn, args.schema)
            return 0
        result = install_schema(args.dsn, rls=args.rls, dry_run=args.dry_run, schema=args.schema)
    except OtelPgError as exc:
        return fail(prog, str(exc), dsn)
    except KeyboardInterrupt:
        return fail(prog, "interrupted", dsn)
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


def _date(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (use YYYY-MM-DD)") from None


def recompute_costs_main(argv: Sequence[str] | None = None) -> int:
    """``otel-pg-recompute-costs``: re-price computed span costs and fix trace totals."""
    from ..pipeline.pricing import Pricer, load_custom_prices
    from ..store.backfill import recompute_costs

    prog = "otel-pg-recompute-costs"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Recompute computed (never provided) span costs with current prices, "
        "in chunks, and re-derive the affected trace totals. Idempotent.",
    )
    add_dsn(parser)
    parser.add_argument("--since", type=_date, help="only spans started at or after this date (UTC)")
    parser.add_argument("--until", type=_date, help="only spans started before this date (UTC)")
    parser.add_argument(
        "--prices", help="JSON file of your own prices (see README); default $OTEL_EXPORTER_POSTGRES_PRICES"
    )
    parser.add_argument("--chunk", type=int, default=5000, help="spans per transaction (default 5000)")
    parser.add_argument("--dry-run", action="store_true", help="report what would change; change nothing")
    add_schema(parser)
    args = parse(parser, argv)
    dsn, _ = resolve_dsn(args.dsn)
    try:
        pricer = Pricer(load_custom_prices(args.prices or os.environ.get("OTEL_EXPORTER_POSTGRES_PRICES")))
        report = recompute_costs(
            args.dsn,
            since=args.since,
            until=args.until,
            dry_run=args.dry_run,
            chunk=args.chunk,
            pricer=pricer,
            schema=args.schema,
        )
    except OtelPgError as exc:
        return fail(prog, str(exc), dsn)
    except psycopg.Error as exc:
        return fail(prog, safe_message(exc, dsn), dsn)
    verb = "would change" if args.dry_run else "changed"
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(report.statuses.items())) or "none"
    print(
        f"scanned {report.scanned} model-call spans ({statuses}); {verb} {report.changed} spans in "
        f"{report.traces} traces; total cost {'+' if report.delta >= 0 else ''}{report.delta:.6f} USD"
    )
    return 0


def report_main(argv: Sequence[str] | None = None) -> int:
    """``otel-pg-report``: cost history, forecast, top spenders, unpriced models, budgets."""
    from ..query.report import build_report, render_html, render_json, render_text

    prog = "otel-pg-report"
    parser = argparse.ArgumentParser(
        prog=prog, description="LLM spend: history, forecast, top spenders, unpriced models and budgets."
    )
    add_dsn(parser)
    parser.add_argument("--days", type=int, default=30, help="history window in days (default 30)")
    parser.add_argument("--horizon", type=int, default=14, help="forecast days (default 14)")
    parser.add_argument("--as-of", type=_date, help="report as of this date (default today, UTC)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page with the chart")
    add_schema(parser)
    args = parse(parser, argv)
    dsn, _ = resolve_dsn(args.dsn)
    try:
        report = build_report(
            args.dsn,
            days=args.days,
            horizon=args.horizon,
            as_of=args.as_of.date() if args.as_of else None,
            schema=args.schema,
        )
    except OtelPgError as exc:
        return fail(prog, str(exc), dsn)
    except psycopg.Error as exc:
        return fail(prog, safe_message(exc, dsn), dsn)
    print(render_json(report) if args.format == "json" else render_text(report), end="")
    if args.html:
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(render_html(report))
    return 0


def cleanup_main(argv: Sequence[str] | None = None) -> int:
    """``otel-pg-cleanup``: the chunked retention sweep (expired and stale traces)."""
    from datetime import timedelta

    from ..store.retention import sweep

    prog = "otel-pg-cleanup"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Delete traces past their retention (per user: profiles.settings.observability."
        "retention_days), completed, failed or cancelled, and stale running/pending ones, in short "
        "chunks that never block exporters. The seed's cleanup_old_traces() is left as it was.",
    )
    add_dsn(parser)
    parser.add_argument(
        "--days", type=int, default=90, help="retention for users without their own (default 90)"
    )
    parser.add_argument(
        "--grace-hours",
        type=float,
        default=24.0,
        help="a running/pending trace is stale after this long without span activity (default 24)",
    )
    parser.add_argument(
        "--chunk", type=int, default=1000, help="traces examined per transaction (default 1000)"
    )
    parser.add_argument("--max-chunks", type=int, help="stop after this many chunks (the next run goes on)")
    parser.add_argument("--dry-run", action="store_true", help="report what would be removed; remove nothing")
    add_schema(parser)
    args = parse(parser, argv)
    dsn, _ = resolve_dsn(args.dsn)
    if args.days < 1 or args.chunk < 1 or args.grace_hours < 0:
        return fail(prog, "--days and --chunk must be at least 1, --grace-hours not negative", dsn)
    try:
        report = sweep(
            args.dsn,
            default_days=args.days,
            grace=timedelta(hours=args.grace_hours),
            chunk=args.chunk,
            dry_run=args.dry_run,
            max_chunks=args.max_chunks,
            schema=args.schema,
        )
    except OtelPgError as exc:
        return fail(prog, str(exc), dsn)
    except psycopg.Error as exc:
        return fail(prog, safe_message(exc, dsn), dsn)
    except KeyboardInterrupt:
        return fail(prog, "interrupted (chunks already done stay done)", dsn)
    verb = "would remove" if report.dry_run else "removed"
    for reason in sorted(report.removed):
        entry = report.removed[reason]
        print(f"{verb} {entry['traces']:>10,} traces {entry['spans']:>12,} spans  {reason}")
    print(
        f"{verb} {report.traces:,} traces and {report.spans:,} spans in total; examined {report.scanned:,} "
        f"traces in {report.chunks} chunks, {report.seconds:.1f} s"
        + (f" (run {report.run_id} in otel_retention_runs)" if report.run_id is not None else "")
    )
    if report.orphan_annotations:
        print(f"removed {report.orphan_annotations:,} annotations whose span, trace or session never arrived")
    return 0


def doctor_main(argv: Sequence[str] | None = None) -> int:
    """``otel-pg-doctor``: a read-only health check; exit 0 healthy, 1 warnings, 2 problems."""
    from datetime import timedelta

    from ..query.doctor import DoctorOptions, diagnose, exit_code, render_json, render_text

    parser = argparse.ArgumentParser(
        prog="otel-pg-doctor",
        description="Check a deployment: migrations, the seed's columns, constraints and indexes, RLS, "
        "the exporter role, table health, stuck traces, unpriced models, budgets, retention and server "
        "settings. Read-only; exit 0 when healthy, 1 on warnings, 2 on problems.",
    )
    add_dsn(parser)
    add_schema(parser)
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--grace-hours",
        type=float,
        default=24.0,
        help="running traces / placeholders older than this are stuck",
    )
    parser.add_argument("--recent-days", type=int, default=7, help="window for unpriced models (default 7)")
    add_spool_dir(parser)
    args = parse(parser, argv)
    findings = diagnose(
        args.dsn,
        schema=args.schema,
        options=DoctorOptions(
            grace=timedelta(hours=args.grace_hours),
            recent=timedelta(days=args.recent_days),
            spool_dir=args.spool_dir,
        ),
    )
    print(render_json(findings) if args.format == "json" else render_text(findings), end="")
    return exit_code(findings)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(install_schema_main())


__all__ = [
    "cleanup_main",
    "doctor_main",
    "gateway_main",
    "install_schema_main",
    "recompute_costs_main",
    "report_main",
    "spool_main",
    "ui_main",
]
