"""Retention at scale: the chunked sweep of ``sql/007_add_retention.sql``, driven from Python.

Each chunk is one short transaction (``otel_retention_chunk``): up to ``chunk`` traces are examined,
oldest first, and the eligible ones deleted with their spans; rows an exporter is writing are
skipped, never waited for. The seed's ``cleanup_old_traces`` stays as it was. From pg_cron, call
the ``otel_retention_sweep`` procedure instead; both record their runs in ``otel_retention_runs``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from ..connection import connect
from .annotations import SWEEP_ORPHANS

_CHUNK = "SELECT * FROM otel_retention_chunk(%s, %s, %s, %s, %s, %s)"
_START_RUN = "INSERT INTO otel_retention_runs (default_days, grace) VALUES (%s, %s) RETURNING run_id"
_UPDATE_RUN = "UPDATE otel_retention_runs SET removed = %s::jsonb, chunks = %s WHERE run_id = %s"
_FINISH_RUN = "UPDATE otel_retention_runs SET finished_at = now() WHERE run_id = %s"
_NIL_UUID = "00000000-0000-0000-0000-000000000000"
_HAS_ANNOTATIONS = "SELECT to_regprocedure('otel_annotations_sweep_orphans(interval)') IS NOT NULL"
#: Judgements wait this long (at least) for a span, trace or session that has not arrived.
ORPHAN_GRACE = timedelta(days=7)


def _has_annotations(conn: psycopg.Connection) -> bool:
    row = conn.execute(_HAS_ANNOTATIONS).fetchone()
    return bool(row and row[0])


@dataclass
class RetentionReport:
    """What a sweep removed (or, with ``dry_run``, would remove), by reason."""

    dry_run: bool
    removed: dict[str, dict[str, int]] = field(default_factory=dict)
    scanned: int = 0
    chunks: int = 0
    seconds: float = 0.0
    run_id: int | None = None
    #: judgements removed because their span, trace or session never arrived (migration 009)
    orphan_annotations: int = 0

    @property
    def traces(self) -> int:
        return sum(r["traces"] for r in self.removed.values())

    @property
    def spans(self) -> int:
        return sum(r["spans"] for r in self.removed.values())


def sweep(
    dsn: str | None = None,
    *,
    default_days: int = 90,
    grace: timedelta = timedelta(days=1),
    chunk: int = 1000,
    dry_run: bool = False,
    max_chunks: int | None = None,
    schema: str | None = None,
    on_chunk: Callable[[RetentionReport], None] | None = None,
) -> RetentionReport:
    """Delete expired and stale traces in chunks; see the module docstring and the README."""
    if default_days < 1 or chunk < 1:
        raise ValueError("default_days and chunk must be at least 1")
    report = RetentionReport(dry_run=dry_run)
    started = time.perf_counter()
    after: tuple[datetime | str, str] = ("-infinity", _NIL_UUID)
    with connect(dsn, schema=schema) as conn:  # autocommit: every chunk commits on its own
        if not dry_run:
            row = conn.execute(_START_RUN, (default_days, grace)).fetchone()
            report.run_id = int(row[0]) if row else None
        while True:
            rows: list[Any] = conn.execute(
                _CHUNK, (default_days, grace, chunk, dry_run, after[0], after[1])
            ).fetchall()
            scanned = 0
            for reason, traces, spans, n_scanned, last_started, last_id in rows:
                if reason is None:
                    scanned = int(n_scanned)
                    if last_started is not None:
                        after = (last_started, str(last_id))
                    continue
                entry = report.removed.setdefault(reason, {"traces": 0, "spans": 0})
                entry["traces"] += int(traces)
                entry["spans"] += int(spans)
            report.scanned += scanned
            report.chunks += 1
            if report.run_id is not None:
                conn.execute(_UPDATE_RUN, (json.dumps(report.removed), report.chunks, report.run_id))
            if on_chunk is not None:
                on_chunk(report)
            if scanned < chunk or (max_chunks is not None and report.chunks >= max_chunks):
                break
        if not dry_run and _has_annotations(conn):
            # a deleted trace's judgements went with it (009's trigger); these are the ones whose
            # span, trace or session never arrived
            orphans = conn.execute(SWEEP_ORPHANS, {"grace": max(grace, ORPHAN_GRACE)}).fetchone()
            report.orphan_annotations = int(orphans[0]) if orphans else 0
        if report.run_id is not None:
            conn.execute(_UPDATE_RUN, (json.dumps(report.removed), report.chunks, report.run_id))
            conn.execute(_FINISH_RUN, (report.run_id,))
    report.seconds = time.perf_counter() - started
    return report
