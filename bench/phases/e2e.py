"""End to end: the application's throughput and CPU with our exporter, the official OTLP/HTTP exporter and a no-op; PostgreSQL's CPU against an INSERT…SELECT floor."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from psycopg import sql

from otel_pg_exporter import PostgresSpanExporter

from ..cpu import OtlpSink, PostgresCpu, process_seconds
from ..registry import Row, Run, verdict
from ..support import BATCH, NoopExporter, count_spans, truncate
from ..workload import SPANS_PER_TRACE, make_trace


def end_to_end(
    dsn: str | None,
    traces: int,
    payload: int,
    conventions: Sequence[str],
    kind: str | None = None,
    otlp_endpoint: str | None = None,
) -> dict[str, Any]:
    """First span created → last row committed (or posted), through a real BatchSpanProcessor;
    ``kind`` is ``noop``, ``otlp`` (the official OTLP/HTTP protobuf exporter, posting to a local
    sink) or ``postgres``. Also the CPU this process used per span, and for ``postgres`` the
    CPU the PostgreSQL server used per stored span, over the same window."""
    kind = kind or ("postgres" if dsn else "noop")
    exporter: SpanExporter
    if kind == "postgres":
        exporter = PostgresSpanExporter(dsn, spool_dir="off")
    elif kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=otlp_endpoint)
    else:
        exporter = NoopExporter()
    provider = TracerProvider()
    # queue large enough for the whole run: no SDK drop can flatter the figure
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            max_queue_size=max(BATCH, traces * SPANS_PER_TRACE + 1),
            schedule_delay_millis=1000,
            max_export_batch_size=BATCH,
        )
    )
    tracer = provider.get_tracer("bench")
    pg = PostgresCpu(dsn) if kind == "postgres" and dsn else None
    pg_before = pg.seconds() if pg is not None else 0.0
    cpu_before = process_seconds()
    started = time.perf_counter()
    for i in range(traces):
        make_trace(tracer, i, payload, conventions)
    provider.force_flush(timeout_millis=3_600_000)
    elapsed = time.perf_counter() - started
    cpu = process_seconds() - cpu_before
    pg_cpu = (pg.seconds() - pg_before) if pg is not None else None
    provider.shutdown()
    spans = traces * SPANS_PER_TRACE
    stored = count_spans(dsn) if kind == "postgres" and dsn else spans
    out: dict[str, Any] = {
        "kind": kind,
        "spans": spans,
        "stored": stored,
        "seconds": elapsed,
        "spans_per_s": spans / elapsed,
        "app_cpu_us_per_span": cpu / spans * 1e6,
    }
    if pg is not None and pg.available and pg_cpu is not None:
        out["pg_cpu_us_per_span"] = pg_cpu / max(1, stored) * 1e6
    return out


def insert_floor(dsn: str) -> dict[str, Any]:
    """The floor: PostgreSQL's own cost of inserting the rows already stored (``INSERT … SELECT``
    into a copy of ``spans`` with the seed's indexes), in server CPU per row; and the same without
    the GIN index on ``metadata``, to show what that one index costs."""
    pg = PostgresCpu(dsn)
    out: dict[str, Any] = {"available": pg.available}
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT count(*) FROM spans WHERE status <> 'pending'").fetchone()[0]
        out["rows"] = rows
        for label, drop_gin in (("all_indexes", False), ("without_metadata_gin", True)):
            conn.execute("DROP TABLE IF EXISTS bench_floor_spans")
            # the seed's columns, defaults, CHECKs and indexes (LIKE … INCLUDING ALL), no FKs
            conn.execute("CREATE TABLE bench_floor_spans (LIKE spans INCLUDING ALL)")
            if drop_gin:
                gin = conn.execute(
                    """SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
                       WHERE x.indrelid = 'bench_floor_spans'::regclass
                         AND pg_get_indexdef(x.indexrelid) LIKE '%USING gin (metadata)%'"""
                ).fetchone()[0]
                conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(gin)))
            conn.execute("CHECKPOINT")
            before = pg.seconds()
            started = time.perf_counter()
            conn.execute("INSERT INTO bench_floor_spans SELECT * FROM spans WHERE status <> 'pending'")
            seconds = time.perf_counter() - started
            cpu = pg.seconds() - before
            out[label] = {"seconds": seconds, "pg_cpu_us_per_row": cpu / max(1, rows) * 1e6}
        conn.execute("DROP TABLE IF EXISTS bench_floor_spans")
    out["metadata_gin_us_per_row"] = (
        out["all_indexes"]["pg_cpu_us_per_row"] - out["without_metadata_gin"]["pg_cpu_us_per_row"]
    )
    return out


def render_e2e(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "e2e" not in r:
        return rows
    e = r["e2e"]
    rows += [
        ("end to end, no-op exporter", f"{e['noop']['spans_per_s']:,.0f} spans/s", ""),
        (
            "end to end, PostgresSpanExporter",
            f"{e['postgres']['spans_per_s']:,.0f} spans/s "
            f"({e['postgres']['stored']}/{e['postgres']['spans']} rows)",
            "",
        ),
        ("end to end ratio", f"{e['ratio']:.2f}", verdict("e2e_ratio", e["ratio"])),
        (
            "end to end, OTLP/HTTP exporter to a local sink",
            f"{e['otlp']['spans_per_s']:,.0f} spans/s",
            "",
        ),
        (
            "in-app CPU per span, ours / OTLP (minus no-op)",
            f"{e['exporter_cpu_us_per_span']['postgres']:.0f} / {e['exporter_cpu_us_per_span']['otlp']:.0f} µs"
            + (f" ({e['app_cpu_vs_otlp']:.2f})" if e["app_cpu_vs_otlp"] is not None else ""),
            verdict("app_cpu_vs_otlp", e["app_cpu_vs_otlp"]) if e["app_cpu_vs_otlp"] is not None else "",
        ),
    ]
    fl = e["floor"]
    if e.get("pg_cpu_vs_floor") is not None:
        rows += [
            (
                "PostgreSQL CPU per stored span, ours",
                f"{e['postgres']['pg_cpu_us_per_span']:.0f} µs",
                "",
            ),
            (
                "floor: INSERT…SELECT into a copy with the seed's indexes",
                f"{fl['all_indexes']['pg_cpu_us_per_row']:.0f} µs/row "
                f"(GIN on metadata alone {fl['metadata_gin_us_per_row']:.0f})",
                "",
            ),
            (
                "PostgreSQL CPU, ours / floor",
                f"{e['pg_cpu_vs_floor']:.2f}",
                verdict("pg_cpu_vs_floor", e["pg_cpu_vs_floor"]),
            ),
        ]
    return rows


def run(run: Run) -> dict[str, Any]:
    """The application with no exporter, the official OTLP/HTTP one, ours; and the floor."""
    size, payload, conventions, dsn = run.size, run.payload, run.conventions, run.dsn
    noop = end_to_end(None, size["e2e_traces"], payload, conventions)
    sink = OtlpSink()
    try:
        otlp = end_to_end(
            None, size["e2e_traces"], payload, conventions, kind="otlp", otlp_endpoint=sink.endpoint
        )
    finally:
        sink.close()
    truncate(dsn)
    ours = end_to_end(dsn, size["e2e_traces"], payload, conventions)
    floor = insert_floor(dsn)
    ours_cpu = ours["app_cpu_us_per_span"] - noop["app_cpu_us_per_span"]
    otlp_cpu = otlp["app_cpu_us_per_span"] - noop["app_cpu_us_per_span"]
    pg_floor = floor["all_indexes"]["pg_cpu_us_per_row"]
    return {
        "e2e": {
            "noop": noop,
            "otlp": otlp,
            "postgres": ours,
            "floor": floor,
            "ratio": ours["spans_per_s"] / noop["spans_per_s"],
            "exporter_cpu_us_per_span": {"postgres": ours_cpu, "otlp": otlp_cpu},
            "app_cpu_vs_otlp": ours_cpu / otlp_cpu if otlp_cpu > 0 else None,
            "pg_cpu_vs_floor": (
                ours["pg_cpu_us_per_span"] / pg_floor
                if "pg_cpu_us_per_span" in ours and pg_floor > 0
                else None
            ),
        }
    }
