"""``otel-pg-spool list|replay|drop``: look at, replay or drop what the quarantine holds."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from ..config.dsn import resolve_dsn
from ..errors import OtelPgError
from .arguments import EXIT_ERROR, add_dsn, add_schema, add_spool_dir, fail, parse


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
    add_dsn(parser)
    add_schema(parser)
    add_spool_dir(parser)
    parser.add_argument("--yes", action="store_true", help="drop: really delete the quarantined spans")
    args = parse(parser, argv)
    dsn, _ = resolve_dsn(args.dsn)
    spool_dir = args.spool_dir or os.environ.get("OTEL_EXPORTER_POSTGRES_SPOOL_DIR")
    try:
        directory = spool_root(spool_dir) / destination_key(dsn)
    except OSError as exc:
        return fail(prog, f"spool directory not usable: {exc}", dsn)
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
            return fail(prog, f"drop deletes {held.spans:,} quarantined spans: add --yes", dsn)
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
        return fail(prog, str(exc), dsn)
    try:
        if exporter.delivery.quarantine is None:
            return fail(prog, f"the spool directory is not usable: {directory}", dsn)
        done = exporter.delivery.replay_quarantine()
    finally:
        exporter.shutdown()
    print(
        f"stored {done.stored:,} spans; refused again {done.refused:,} (kept in the quarantine); "
        f"left {done.left:,}" + (f" ({for_terminal(done.error)})" if done.error else "")
    )
    return EXIT_ERROR if done.error else 0
