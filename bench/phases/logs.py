"""Log records merged into span rows, spans first and logs first."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from otel_pg_exporter import PostgresSpanExporter

from ..registry import Row, Run
from ..support import batches, truncate
from ..workload import prebuilt_spans_and_logs


def log_merge(dsn: str, traces: int, payload: int) -> dict[str, Any]:
    """Content arriving as log records: the cost of merging it into span rows, against the cost of
    the same content on the spans, in both arrival orders."""
    from otel_pg_exporter import PostgresLogExporter

    out: dict[str, Any] = {"traces": traces}
    for order in ("spans_first", "logs_first"):
        truncate(dsn)
        spans, records = prebuilt_spans_and_logs(traces, payload)
        exporter = PostgresSpanExporter(dsn, spool_dir="off")
        logs = PostgresLogExporter(span_exporter=exporter)
        timings = {"spans": 0.0, "logs": 0.0}
        steps = [("spans", exporter, batches(spans)), ("logs", logs, batches(records))]
        for kind, exp, parts in steps if order == "spans_first" else steps[::-1]:
            started = time.perf_counter()
            for part in parts:
                exp.export(part)
            timings[kind] = time.perf_counter() - started
        stats = exporter.stats()
        logs.shutdown()
        exporter.shutdown()
        with psycopg.connect(dsn) as conn:
            with_content = conn.execute(
                "SELECT count(*) FROM spans WHERE span_type = 'llm' AND jsonb_array_length(inputs -> 'messages') = 2"
            ).fetchone()[0]
        out[order] = {
            "records": len(records),
            "records_per_s": round(len(records) / timings["logs"]),
            "spans_per_s": round(len(spans) / timings["spans"]),
            "llm_rows_with_content": with_content,
            "fragments_merged": stats.get("log_fragments_merged", 0),
        }
    return out


def render_logs(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "logs" not in r:
        return rows
    lg = r["logs"]
    for order in ("spans_first", "logs_first"):
        v = lg[order]
        rows.append(
            (
                f"log records merged, {order.replace('_', ' ')}",
                f"{v['records_per_s']:,} records/s (spans {v['spans_per_s']:,}/s)",
                f"{v['llm_rows_with_content']}/{lg['traces']} rows complete",
            )
        )
    return rows


def run(run: Run) -> dict[str, Any]:
    return {"logs": log_merge(run.dsn, run.size["log_traces"], run.payload)}
