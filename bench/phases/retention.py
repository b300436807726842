"""A retention sweep of expired traces while the exporter keeps writing."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from otel_pg_exporter import PostgresSpanExporter

from ..registry import Row, Run
from ..support import batches, prefill, truncate
from ..workload import SPANS_PER_TRACE, prebuilt_spans


def retention(dsn: str, old_spans: int, young_spans: int, chunk: int) -> dict[str, Any]:
    """The chunked sweep over ``old_spans`` expired spans (among ``young_spans`` kept ones) while an
    exporter keeps writing: time, throughput, and the exporter's latency before and during."""
    import threading

    from otel_pg_exporter.store.retention import sweep

    truncate(dsn)
    prefill(dsn, old_spans, first_trace=0, age_days=120, mixed=True)
    prefill(dsn, young_spans, first_trace=old_spans // SPANS_PER_TRACE, age_days=1)
    stream = batches(prebuilt_spans(400), 64)
    exporter = PostgresSpanExporter(dsn, spool_dir="off", timeout_s=60)

    def write(batch_list: list[list[Any]], out: list[float], stop: threading.Event | None = None) -> None:
        for batch in batch_list:
            if stop is not None and stop.is_set():
                return
            started = time.perf_counter()
            exporter.export(batch)
            out.append(time.perf_counter() - started)

    before: list[float] = []
    write(stream[: len(stream) // 4], before)
    during: list[float] = []
    stop = threading.Event()

    def keep_writing() -> None:
        while not stop.is_set():
            write(batches(prebuilt_spans(40), 64), during, stop)

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    report = sweep(dsn, default_days=30, grace=__import__("datetime").timedelta(days=1), chunk=chunk)
    stop.set()
    writer.join()
    stats = exporter.stats()
    exporter.shutdown()
    with psycopg.connect(dsn) as conn:
        left_old = conn.execute(
            "SELECT count(*) FROM spans WHERE started_at < (now() AT TIME ZONE 'UTC') - interval '30 days'"
        ).fetchone()[0]

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else 0.0

    return {
        "old_spans": old_spans,
        "young_spans": young_spans,
        "chunk": chunk,
        "seconds": round(report.seconds, 2),
        "spans_removed": report.spans,
        "traces_removed": report.traces,
        "spans_per_s": round(report.spans / report.seconds) if report.seconds else 0,
        "chunks": report.chunks,
        "removed": report.removed,
        "old_spans_left": left_old,
        "export_before_ms": {"p50": pct(before, 0.5), "p99": pct(before, 0.99), "max": pct(before, 1.0)},
        "export_during_ms": {
            "n": len(during),
            "p50": pct(during, 0.5),
            "p99": pct(during, 0.99),
            "max": pct(during, 1.0),
        },
        "exporter_failed_batches": stats["failed_batches"],
    }


def render_retention(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "retention" not in r:
        return rows
    rt = r["retention"]
    during, before = rt["export_during_ms"], rt["export_before_ms"]
    rows += [
        (
            f"retention sweep, {rt['old_spans']:,} expired of {rt['old_spans'] + rt['young_spans']:,} spans",
            f"{rt['seconds']:.1f} s ({rt['spans_per_s']:,} spans/s, {rt['chunks']} chunks)",
            "all removed" if rt["old_spans_left"] == 0 else f"{rt['old_spans_left']} LEFT",
        ),
        (
            "export() p50 / p99 / max, before sweep",
            f"{before['p50']:.1f} / {before['p99']:.1f} / {before['max']:.1f} ms",
            "",
        ),
        (
            "export() p50 / p99 / max, during sweep",
            f"{during['p50']:.1f} / {during['p99']:.1f} / {during['max']:.1f} ms ({during['n']} batches)",
            "",
        ),
    ]
    return rows


def run(run: Run) -> dict[str, Any]:
    return {"retention": retention(run.dsn, *run.size["retention"])}
