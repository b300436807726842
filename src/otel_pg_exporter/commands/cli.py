"""Console scripts. Errors are one line on stderr and a non-zero exit; no traceback, no password."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from ..config.dsn import describe, redact, resolve_dsn, safe_message
from ..errors import OtelPgError
from ..schema.migrations import install_schema, schema_status
from ..web.auth import is_loopback
from ..web.serving import MAX_CONNECTIONS, serve

EXIT_ERROR = 1


def _dsn_help() -> str:
    return (
        "PostgreSQL connection string; default: $OTEL_EXPORTER_POSTGRES_DSN, else $DATABASE_URL, "
        "else libpq's PG* variables"
    )


def _add_dsn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        help=_dsn_help() + " (a password here is visible to every local user: "
        "prefer the environment or --dsn-file)",
    )
    parser.add_argument(
        "--dsn-file", metavar="FILE", help="read the connection string from this file (mode 600)"
    )


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
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


def _add_schema(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--schema",
        help="schema holding the tables (quoted as an identifier); default: $OTEL_EXPORTER_POSTGRES_SCHEMA, "
        "else the server's search_path",
    )


def _fail(prog: str, message: str, dsn: str | None) -> int:
    print(f"{prog}: error: {redact(message, dsn)}", file=sys.stderr)
    return EXIT_ERROR


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
    _add_dsn(parser)
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
    _add_schema(parser)
    args = _parse(parser, argv)
    dsn, _ = resolve_dsn(args.dsn)
    try:
        if args.status:
            print_status(args.dsn, args.schema)
            return 0
        result = install_schema(args.dsn, rls=args.rls, dry_run=args.dry_run, schema=args.schema)
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
    _add_dsn(parser)
    parser.add_argument("--since", type=_date, help="only spans started at or after this date (UTC)")
    parser.add_argument("--until", type=_date, help="only spans started before this date (UTC)")
    parser.add_argument(
        "--prices", help="JSON file of your own prices (see README); default $OTEL_EXPORTER_POSTGRES_PRICES"
    )
    parser.add_argument("--chunk", type=int, default=5000, help="spans per transaction (default 5000)")
    parser.add_argument("--dry-run", action="store_true", help="report what would change; change nothing")
    _add_schema(parser)
    args = _parse(parser, argv)
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
        return _fail(prog, str(exc), dsn)
    except psycopg.Error as exc:
        return _fail(prog, safe_message(exc, dsn), dsn)
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
    _add_dsn(parser)
    parser.add_argument("--days", type=int, default=30, help="history window in days (default 30)")
    parser.add_argument("--horizon", type=int, default=14, help="forecast days (default 14)")
    parser.add_argument("--as-of", type=_date, help="report as of this date (default today, UTC)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page with the chart")
    _add_schema(parser)
    args = _parse(parser, argv)
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
        return _fail(prog, str(exc), dsn)
    except psycopg.Error as exc:
        return _fail(prog, safe_message(exc, dsn), dsn)
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
    _add_dsn(parser)
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
    _add_schema(parser)
    args = _parse(parser, argv)
    dsn, _ = resolve_dsn(args.dsn)
    if args.days < 1 or args.chunk < 1 or args.grace_hours < 0:
        return _fail(prog, "--days and --chunk must be at least 1, --grace-hours not negative", dsn)
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
        return _fail(prog, str(exc), dsn)
    except psycopg.Error as exc:
        return _fail(prog, safe_message(exc, dsn), dsn)
    except KeyboardInterrupt:
        return _fail(prog, "interrupted (chunks already done stay done)", dsn)
    verb = "would remove" if report.dry_run else "removed"
    for reason in sorted(report.removed):
        entry = report.removed[reason]
        print(f"{verb} {entry['traces']:>10,} traces {entry['spans']:>12,} spans  {reason}")
    print(
        f"{verb} {report.traces:,} traces and {report.spans:,} spans in total; examined {report.scanned:,} "
        f"traces in {report.chunks} chunks, {report.seconds:.1f} s"
        + (f" (run {report.run_id} in otel_retention_runs)" if report.run_id is not None else "")
    )
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
    _add_dsn(parser)
    _add_schema(parser)
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--grace-hours",
        type=float,
        default=24.0,
        help="running traces / placeholders older than this are stuck",
    )
    parser.add_argument("--recent-days", type=int, default=7, help="window for unpriced models (default 7)")
    _add_spool_dir(parser)
    args = _parse(parser, argv)
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


def _add_spool_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spool-dir",
        help="the exporters' spool root on this machine (default $OTEL_EXPORTER_POSTGRES_SPOOL_DIR, else "
        "~/.local/state/otel-pg-exporter/spool)",
    )


def spool_main(argv: Sequence[str] | None = None) -> int:
    """``otel-pg-spool``: what the spool and the quarantine hold for a database; replay or drop the
    quarantine once the cause is fixed."""
    from ..delivery.spool import QUARANTINE, destination_key, spool_root, summarize
    from ..terminal import for_terminal

    prog = "otel-pg-spool"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="The local spool (batches waiting for the database) and its quarantine (batches the "
        "database refused even alone: never replayed on their own). list: what is there and why; replay: "
        "write the quarantine once (what is refused again stays); drop: delete the quarantine.",
    )
    parser.add_argument("action", choices=("list", "replay", "drop"))
    _add_dsn(parser)
    _add_schema(parser)
    _add_spool_dir(parser)
    parser.add_argument("--yes", action="store_true", help="drop: really delete the quarantined spans")
    args = _parse(parser, argv)
    dsn, _ = resolve_dsn(args.dsn)
    spool_dir = args.spool_dir or os.environ.get("OTEL_EXPORTER_POSTGRES_SPOOL_DIR")
    try:
        directory = spool_root(spool_dir) / destination_key(dsn)
    except OSError as exc:
        return _fail(prog, f"spool directory not usable: {exc}", dsn)
    quarantine = directory / QUARANTINE
    if args.action == "list":
        for label, where, errors in (("spool", directory, False), ("quarantine", quarantine, True)):
            held = summarize(where, read_errors=errors)
            age = f", oldest {held.oldest_age_s / 60:,.1f} min" if held.segments else ""
            print(
                f"{label:<10} {held.spans:>9,} spans  {held.segments:>4} segments  "
                f"{held.bytes:>12,} bytes{age}"
            )
            print(f"{'':<10} {for_terminal(where)}")
            for error, spans in sorted(held.errors.items(), key=lambda e: -e[1]):
                print(f"{'':<10} {spans:>9,} spans: {for_terminal(error)}")
        return 0
    if args.action == "drop":
        held = summarize(quarantine)
        if not args.yes:
            return _fail(prog, f"drop deletes {held.spans:,} quarantined spans: add --yes", dsn)
        for path in sorted(quarantine.glob("*.spool")):
            path.unlink(missing_ok=True)
        print(f"dropped {held.spans:,} quarantined spans")
        return 0
    from ..sdk.span_exporter import PostgresSpanExporter

    options: dict[str, Any] = {"schema": args.schema} if args.schema else {}
    if spool_dir:
        options["spool_dir"] = spool_dir
    try:
        exporter = PostgresSpanExporter(args.dsn, **options)
    except OtelPgError as exc:
        return _fail(prog, str(exc), dsn)
    try:
        if exporter.delivery.quarantine is None:
            return _fail(prog, f"the spool directory is not usable: {directory}", dsn)
        done = exporter.delivery.replay_quarantine()
    finally:
        exporter.shutdown()
    print(
        f"stored {done.stored:,} spans; refused again {done.refused:,} (kept in the quarantine); "
        f"left {done.left:,}" + (f" ({for_terminal(done.error)})" if done.error else "")
    )
    return EXIT_ERROR if done.error else 0


def _add_server(parser: argparse.ArgumentParser, *, port: int, token_env: str, token_help: str) -> None:
    """The options every serving command takes: database, schema, address, port, token."""
    _add_dsn(parser)
    _add_schema(parser)
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
    """``--token`` given on the command line: noted, so ``_parse`` can warn about it."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        namespace.token = values
        namespace.token_in_argv = True


def ui_main(argv: Sequence[str] | None = None) -> int:
    """``otel-pg-ui``: the trace explorer (extra ``ui``)."""
    prog = "otel-pg-ui"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="A local web explorer of stored traces: list, tree with waterfall, sessions, costs.",
    )
    _add_server(
        parser,
        port=8400,
        token_env="OTEL_PG_UI_TOKEN",
        token_help="require this token on every request (default $OTEL_PG_UI_TOKEN); needed to listen "
        "beyond this machine. Open http://HOST:PORT/?token=... once; a cookie keeps it",
    )
    parser.add_argument(
        "--as-user", help="show only what this user (profiles.id) may see under the seed's RLS"
    )
    parser.add_argument(
        "--as-role", default="authenticated", help="the role --as-user runs as (default authenticated)"
    )
    parser.add_argument("--statement-timeout-ms", type=int, default=5000, help="per query (default 5000)")
    args = _parse(parser, argv)
    dsn, _ = resolve_dsn(args.dsn)
    if not is_loopback(args.host) and not args.token:
        return _fail(prog, f"refusing to listen on {args.host} without --token (or OTEL_PG_UI_TOKEN)", dsn)
    try:
        import uvicorn  # noqa: F401 (the extra's marker)

        from ..query.trace_store import TraceStore
        from ..web.explorer.app import create_app
    except ImportError:
        return _fail(prog, "the explorer needs its extra: pip install 'otel-pg-exporter[ui]'", dsn)
    try:
        store = TraceStore(
            args.dsn,
            schema=args.schema,
            as_user=args.as_user,
            as_role=args.as_role,
            statement_timeout_ms=args.statement_timeout_ms,
        )
        store.list_traces(limit=1)  # fail now, with one line, rather than on the first page
    except OtelPgError as exc:
        return _fail(prog, str(exc), dsn)
    print(f"{prog}: serving {describe(dsn)} on http://{args.host}:{args.port}/", flush=True)
    try:
        serve(
            create_app(store, token=args.token),
            args.host,
            args.port,
            token=args.token,
            allow_hosts=args.allow_host,
        )
    finally:
        store.close()
    return 0


def gateway_main(argv: Sequence[str] | None = None) -> int:
    """``otel-pg-gateway``: the OTLP/HTTP receiver (extra ``gateway``)."""
    prog = "otel-pg-gateway"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Receive OTLP/HTTP traces and logs (protobuf or JSON) from any language or an OTel "
        "Collector and store them like the in-process exporter does.",
    )
    _add_server(
        parser,
        port=4318,
        token_env="OTEL_PG_GATEWAY_TOKEN",
        token_help="require 'Authorization: Bearer TOKEN' on every request (default "
        "$OTEL_PG_GATEWAY_TOKEN); needed to listen beyond this machine",
    )
    parser.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="listen beyond this machine without a token (behind your own network boundary)",
    )
    parser.add_argument(
        "--max-body-mb", type=float, default=16.0, help="largest request body, decompressed (default 16)"
    )
    parser.add_argument(
        "--max-inflight",
        type=int,
        default=8,
        help="batches read and written at once; more get 429 (default 8)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=MAX_CONNECTIONS,
        help=f"open connections; more are answered 503 (default {MAX_CONNECTIONS})",
    )
    args = _parse(parser, argv)
    dsn, _ = resolve_dsn(args.dsn)
    if not is_loopback(args.host) and not args.token and not args.allow_unauthenticated:
        return _fail(
            prog,
            f"refusing to listen on {args.host} without --token (or OTEL_PG_GATEWAY_TOKEN, or "
            "--allow-unauthenticated)",
            dsn,
        )
    try:
        import uvicorn  # noqa: F401 (the extra's marker)

        from ..web.gateway.app import Gateway, create_app
    except ImportError:
        return _fail(prog, "the gateway needs its extra: pip install 'otel-pg-exporter[gateway]'", dsn)
    options: dict[str, Any] = {"schema": args.schema} if args.schema else {}
    try:
        gateway = Gateway(
            args.dsn,
            token=args.token,
            max_body_bytes=int(args.max_body_mb * 1024 * 1024),
            max_inflight=args.max_inflight,
            **options,
        )
    except OtelPgError as exc:
        return _fail(prog, str(exc), dsn)
    ready, why = gateway.ready()
    if not ready:
        print(f"{prog}: not ready yet ({why}); /readyz says so until it is", file=sys.stderr, flush=True)
    url = f"http://{args.host}:{args.port}"
    print(f"{prog}: storing into {describe(dsn)}; OTLP/HTTP on {url}/v1/traces and {url}/v1/logs", flush=True)
    serve(
        create_app(gateway),
        args.host,
        args.port,
        token=args.token,
        allow_hosts=args.allow_host,
        max_connections=args.max_connections,
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(install_schema_main())
