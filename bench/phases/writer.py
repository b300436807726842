"""The writer alone against naive INSERTs and a raw COPY ceiling, the cost of scrubbing, and the writer's profile."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import psycopg
from opentelemetry.sdk.trace.export import SpanExportResult
from psycopg import sql

from otel_pg_exporter import PostgresSpanExporter
from otel_pg_exporter.pipeline.encoding import JSON_COLUMNS, EncodedSpan
from otel_pg_exporter.pipeline.encoding import ROW_COLUMNS as SPAN_COLUMNS

from ..registry import Row, Run, verdict
from ..support import batches, count_spans, truncate
from ..workload import prebuilt_spans


def writer_only(dsn: str, spans: list[Any]) -> dict[str, Any]:
    exporter = PostgresSpanExporter(dsn, spool_dir="off")
    latencies = []
    started = time.perf_counter()
    for batch in batches(spans):
        t0 = time.perf_counter()
        result = exporter.export(batch)
        latencies.append(time.perf_counter() - t0)
        assert result is SpanExportResult.SUCCESS
    elapsed = time.perf_counter() - started
    exporter.shutdown()
    lat_ms = sorted(x * 1000 for x in latencies)
    return {
        "spans": len(spans),
        "seconds": elapsed,
        "spans_per_s": len(spans) / elapsed,
        "p50_ms": statistics.median(lat_ms),
        "p99_ms": lat_ms[min(len(lat_ms) - 1, round(0.99 * (len(lat_ms) - 1)))],
        "stored": count_spans(dsn),
    }


def _parents_first(encoded: list[EncodedSpan]) -> list[EncodedSpan]:
    return sorted(encoded, key=lambda s: s.parent_span_id is not None)


_SPAN_COLS = SPAN_COLUMNS  # the exporter's own column list, in its order


def _span_values(s: EncodedSpan) -> tuple[Any, ...]:
    """The row's column values for INSERT / COPY (JSON columns as JSON text)."""
    columns = s.columns()
    return tuple(orjson.dumps(columns[c]).decode() if c in JSON_COLUMNS else columns[c] for c in _SPAN_COLS)


def _trace_values(s: EncodedSpan) -> tuple[Any, ...]:
    h = s.hints
    return (h.trace_id, h.workflow[1], h.trace_hex, s.started_at)


def naive_inserts(dsn: str, spans: list[Any]) -> dict[str, Any]:
    """A hand-written exporter: map, then one INSERT per span (and its trace) in autocommit."""
    mapper = PostgresSpanExporter(dsn, spool_dir="off")
    insert_span = sql.SQL("INSERT INTO spans ({}) VALUES ({}) ON CONFLICT (span_id) DO NOTHING").format(
        sql.SQL(", ").join(map(sql.Identifier, _SPAN_COLS)),
        sql.SQL(", ").join([sql.Placeholder()] * len(_SPAN_COLS)),
    )
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for batch in batches(spans):
            for s in _parents_first(mapper.encode(batch)):  # (FKs would fail in arrival order)
                conn.execute(
                    "INSERT INTO traces (trace_id, workflow_id, execution_id, started_at) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    _trace_values(s),
                )
                conn.execute(insert_span, _span_values(s))
    elapsed = time.perf_counter() - started
    mapper.shutdown()
    return {"spans": len(spans), "seconds": elapsed, "spans_per_s": len(spans) / elapsed}


def copy_ceiling(dsn: str, spans: list[Any]) -> dict[str, Any]:
    """Raw COPY of the already-mapped rows, one transaction per batch (mapping not timed)."""
    mapper = PostgresSpanExporter(dsn, spool_dir="off")
    mapped = [_parents_first(mapper.encode(b)) for b in batches(spans)]
    mapper.shutdown()
    values = [[(s.trace_id, _trace_values(s), _span_values(s)) for s in batch] for batch in mapped]
    started = time.perf_counter()
    seen: set[Any] = set()
    with psycopg.connect(dsn) as conn:
        for batch in values:
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(
                    "COPY traces (trace_id, workflow_id, execution_id, started_at) FROM STDIN"
                ) as cp:
                    for trace_id, trace_row, _ in batch:
                        if trace_id not in seen:
                            seen.add(trace_id)
                            cp.write_row(trace_row)
                with cur.copy(f"COPY spans ({', '.join(_SPAN_COLS)}) FROM STDIN") as cp:
                    for _, _, span_row in batch:
                        cp.write_row(span_row)
    elapsed = time.perf_counter() - started
    return {"spans": len(spans), "seconds": elapsed, "spans_per_s": len(spans) / elapsed}


def scrub_cost(dsn: str, spans: list[Any]) -> dict[str, Any]:
    """Mapping + encoding throughput with and without the default secret scrubbing (no I/O): a
    warm-up pass (key plans, prices), then the two settings alternated three times, best of each
    (the exporter's own DSN is scrubbed in both: that literal is always on)."""
    exporters = {
        "with_scrubbing": PostgresSpanExporter(dsn, spool_dir="off", scrub_secrets=True),
        "without_scrubbing": PostgresSpanExporter(dsn, spool_dir="off", scrub_secrets=False),
    }
    best: dict[str, float] = {}
    for exporter in exporters.values():
        for batch in batches(spans):
            exporter.encode(batch)
    for _ in range(3):
        for label, exporter in exporters.items():
            started = time.perf_counter()
            for batch in batches(spans):
                exporter.encode(batch)
            best[label] = max(best.get(label, 0.0), len(spans) / (time.perf_counter() - started))
    for exporter in exporters.values():
        exporter.shutdown()
    out: dict[str, Any] = dict(best)
    out["ratio"] = out["with_scrubbing"] / out["without_scrubbing"]
    return out


def profile_writer(dsn: str, spans: list[Any], top: int = 15) -> list[dict[str, Any]]:
    """Top functions by self time (pyinstrument) of a writer-only run."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return [{"function": "pyinstrument not installed (pip install -e '.[bench]')", "self_s": 0.0}]
    exporter = PostgresSpanExporter(dsn, spool_dir="off")
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for batch in batches(spans):
        exporter.export(batch)
    profiler.stop()
    exporter.shutdown()
    totals: dict[str, float] = defaultdict(float)
    root = profiler.last_session.root_frame() if profiler.last_session else None
    stack = [root] if root else []
    while stack:
        frame = stack.pop()
        stack.extend(frame.children)
        if frame.total_self_time > 0 and not frame.is_synthetic:
            where = f"{frame.function} ({Path(frame.file_path or '?').name}:{frame.line_no})"
            totals[where] += frame.total_self_time
    whole = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [{"function": k, "self_s": round(v, 4), "share": round(v / whole, 3)} for k, v in ranked]


def render_writer(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "writer" not in r:
        return rows
    w = r["writer"]
    rows += [
        ("writer only (export() in 512s)", f"{w['ours']['spans_per_s']:,.0f} spans/s", ""),
        ("naive INSERT per span", f"{w['naive']['spans_per_s']:,.0f} spans/s", ""),
        ("raw COPY of mapped rows", f"{w['copy']['spans_per_s']:,.0f} spans/s", ""),
        ("writer vs naive", f"{w['vs_naive']:.1f}x", verdict("writer_vs_naive", w["vs_naive"])),
        ("writer vs COPY", f"{w['vs_copy']:.2f}", verdict("writer_vs_copy", w["vs_copy"])),
        (
            "export() p50 / p99 per 512 batch",
            f"{w['ours']['p50_ms']:.1f} / {w['ours']['p99_ms']:.1f} ms",
            verdict("export_p99_ms", w["ours"]["p99_ms"]),
        ),
    ]
    return rows


def render_scrub(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "scrub" not in r:
        return rows
    sc = r["scrub"]
    rows.append(
        (
            "mapping+encoding, scrubbing on / off",
            f"{sc['with_scrubbing']:,.0f} / {sc['without_scrubbing']:,.0f} spans/s ({sc['ratio']:.2f})",
            "",
        )
    )
    return rows


def run(run: Run) -> dict[str, Any]:
    """The writer, naive INSERTs and COPY on the same prebuilt spans; the cost of scrubbing."""
    dsn = run.dsn
    spans = prebuilt_spans(run.size["writer_traces"], run.payload, run.conventions)
    truncate(dsn)
    ours = writer_only(dsn, spans)
    truncate(dsn)
    naive = naive_inserts(dsn, spans)
    truncate(dsn)
    ceiling = copy_ceiling(dsn, spans)
    return {
        "scrub": scrub_cost(dsn, spans),
        "writer": {
            "ours": ours,
            "naive": naive,
            "copy": ceiling,
            "vs_naive": ours["spans_per_s"] / naive["spans_per_s"],
            "vs_copy": ours["spans_per_s"] / ceiling["spans_per_s"],
        },
    }


def run_profile(run: Run) -> dict[str, Any]:
    truncate(run.dsn)
    return {
        "profile": profile_writer(
            run.dsn, prebuilt_spans(run.size["profile_traces"], run.payload, run.conventions)
        )
    }
