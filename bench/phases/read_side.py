"""The read side on a 1M-span database: otel-pg-doctor and the explorer's pages."""

from __future__ import annotations

import statistics
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg

from ..registry import Row, Run, verdict
from ..support import count_spans, top_up


def doctor_probe(dsn: str, spans: int, runs: int = 3) -> dict[str, Any]:
    """``otel-pg-doctor``'s whole diagnosis on a database holding at least ``spans`` spans (what the
    growth phase left, topped up), as a monitoring probe would run it: wall time per run."""
    from otel_pg_exporter.query.doctor import diagnose, exit_code

    top_up(dsn, spans)
    times = []
    findings: list[Any] = []
    for _ in range(runs):
        started = time.perf_counter()
        findings = diagnose(dsn)
        times.append(time.perf_counter() - started)
    return {
        "spans": count_spans(dsn),
        "seconds_median": statistics.median(times),
        "seconds_max": max(times),
        "findings": len(findings),
        "status": ("ok", "warn", "fail")[exit_code(findings)],
    }


def explorer_probe(dsn: str, spans: int, runs: int = 5) -> dict[str, Any]:
    """``TraceStore`` calls and the explorer's pages (in-process HTTP, Starlette's TestClient) on a
    database holding at least ``spans`` spans: median wall time of ``runs`` each."""
    from starlette.testclient import TestClient

    from otel_pg_exporter.query.trace_store import TraceStore
    from otel_pg_exporter.web.explorer.app import create_app

    top_up(dsn, spans)
    store = TraceStore(dsn)
    client = TestClient(create_app(store))
    first = store.list_traces(limit=50)
    trace_id = first.traces[len(first.traces) // 2].trace_id

    def timed(fn: Any) -> float:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    def page(path: str) -> None:
        assert client.get(path).status_code == 200, path

    cases = {
        "list, newest 50": lambda: store.list_traces(limit=50),
        "list, 2nd page (cursor)": lambda: store.list_traces(limit=50, cursor=first.older),
        "list, by cost": lambda: store.list_traces(limit=50, sort="cost"),
        "list, workflow + model filter": lambda: store.list_traces(
            limit=50, workflow="support", model="gpt-4o-mini"
        ),
        "list, text search, last 24 h": lambda: store.list_traces(
            limit=50,
            query="weather",
            since=datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=24),
        ),
        "list, text search matching nothing, last 24 h": lambda: store.list_traces(
            limit=50,
            query="umbrella",
            since=datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=24),
        ),
        "trace with its spans": lambda: store.get_trace(trace_id),
        "page / (last 7 days)": lambda: page("/"),
        "page /traces/{id}": lambda: page(f"/traces/{trace_id}"),
    }
    out = {name: timed(fn) for name, fn in cases.items()}
    with psycopg.connect(dsn) as conn:
        traces = conn.execute("SELECT count(*) FROM traces").fetchone()[0]
    client.close()
    store.close()
    return {"spans": count_spans(dsn), "traces": traces, "seconds": out, "worst": max(out.values())}


def render_doctor(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "doctor" not in r:
        return rows
    d = r["doctor"]
    rows.append(
        (
            f"otel-pg-doctor, {d['spans']:,} spans stored",
            f"{d['seconds_median'] * 1000:,.0f} ms median, {d['seconds_max'] * 1000:,.0f} max ({d['findings']} findings)",
            verdict("doctor_seconds", d["seconds_median"]),
        )
    )
    return rows


def render_explorer(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "explorer" not in r:
        return rows
    x = r["explorer"]
    for name, seconds in x["seconds"].items():
        rows.append(
            (
                f"explorer: {name} ({x['traces']:,} traces / {x['spans']:,} spans)",
                f"{seconds * 1000:,.1f} ms median",
                verdict("explorer_seconds", seconds),
            )
        )
    return rows


def run_doctor(run: Run) -> dict[str, Any]:
    return {"doctor": doctor_probe(run.dsn, run.size["doctor_spans"])}


def run_explorer(run: Run) -> dict[str, Any]:
    return {"explorer": explorer_probe(run.dsn, run.size["explorer_spans"])}
