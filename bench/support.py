"""What every phase shares: the server, a throwaway database, emptying and counting it, a no-op
exporter, batching, and what machine the numbers were taken on."""

from __future__ import annotations

import os
import platform
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from psycopg import sql
from psycopg.conninfo import make_conninfo

from otel_pg_exporter import install_schema

from .workload import SPANS_PER_TRACE

BATCH = 512


def server_dsn() -> str:
    for var in ("OTEL_PG_BENCH_DSN", "OTEL_EXPORTER_POSTGRES_DSN", "OTEL_PG_TEST_DSN"):
        if os.environ.get(var):
            return os.environ[var]
    sys.exit("bench: set OTEL_PG_BENCH_DSN (a server where a throwaway database may be created)")


@contextmanager
def throwaway_database(server: str) -> Iterator[str]:
    name = f"otel_pg_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(server, dbname=name)
    try:
        install_schema(dsn)
        yield dsn
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def truncate(dsn: str) -> None:
    """Empty tables, as a fresh install has them. (No ANALYZE: statistics of an empty table would
    mislead the planner for the whole phase, which production never sees.)"""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE traces CASCADE")


def count_spans(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM spans WHERE status <> 'pending'").fetchone()[0]


class NoopExporter(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def batches(items: list[Any], size: int = BATCH) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def machine() -> dict[str, Any]:
    with psycopg.connect(server_dsn()) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024 // 1024
    return {
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "postgresql": version,
        "python": platform.python_version(),
    }


def prefill(dsn: str, spans: int, first_trace: int = 0, age_days: int = 0, mixed: bool = False) -> None:
    """``spans`` existing spans (4 per trace, realistic JSON) generated server-side, numbering traces
    from ``first_trace`` (so successive fills never collide), ``age_days`` old. ``mixed``: one trace
    in 20 failed and one in 20 stuck in running (for the retention phase)."""
    if spans <= 0:
        return
    traces = spans // SPANS_PER_TRACE
    params = {"first": first_trace + 1, "last": first_trace + traces, "age": age_days, "mixed": mixed}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO traces (trace_id, workflow_id, execution_id, started_at, status, total_tokens, metadata,
                                  query)
               SELECT md5('t' || g)::uuid, 'support', md5('t' || g),
                      (now() AT TIME ZONE 'UTC') - %(age)s * interval '1 day'
                          - (g - %(first)s) * interval '1 second',
                      CASE WHEN %(mixed)s AND g %% 20 = 0 THEN 'failed'
                           WHEN %(mixed)s AND g %% 20 = 1 THEN 'running' ELSE 'completed' END,
                      '{"input": 240, "output": 80, "total": 320}', jsonb_build_object('otel_trace_id', md5('t' || g)),
                      'Question ' || g || ': what is the weather like in Paris today?'
               FROM generate_series(%(first)s::int, %(last)s::int) AS g""",
            params,
        )
        conn.execute(
            """INSERT INTO spans (span_id, trace_id, parent_span_id, span_type, name, status, started_at,
                                  completed_at, duration_ms, inputs, outputs, tokens, model, provider, metadata)
               SELECT md5('s' || g || '-' || k)::uuid, md5('t' || g)::uuid,
                      CASE WHEN k = 0 THEN NULL ELSE md5('s' || g || '-0')::uuid END,
                      CASE k WHEN 0 THEN 'workflow' WHEN 3 THEN 'tool' ELSE 'llm' END, 'span ' || k, 'completed',
                      (now() AT TIME ZONE 'UTC') - %(age)s * interval '1 day',
                      (now() AT TIME ZONE 'UTC') - %(age)s * interval '1 day', 12,
                      jsonb_build_object('messages', jsonb_build_array(jsonb_build_object('role', 'user',
                          'content', repeat('question ', 55)))),
                      jsonb_build_object('messages', jsonb_build_array(jsonb_build_object('role', 'assistant',
                          'content', repeat('answer ', 70)))),
                      CASE WHEN k IN (1, 2) THEN '{"input": 120, "output": 40, "total": 160}'::jsonb
                           ELSE '{}'::jsonb END,
                      CASE WHEN k IN (1, 2) THEN 'gpt-4o-mini' END, CASE WHEN k IN (1, 2) THEN 'openai' END,
                      jsonb_build_object('otel', jsonb_build_object('trace_id', md5('t' || g), 'span_id', k),
                                         'attributes', jsonb_build_object('server.address', 'api.openai.com',
                                                                          'gen_ai.request.model', 'gpt-4o-mini'))
               FROM generate_series(%(first)s::int, %(last)s::int) AS g, generate_series(0, 3) AS k""",
            params,
        )
        conn.execute("VACUUM ANALYZE traces, spans")


def top_up(dsn: str, spans: int) -> None:
    """At least ``spans`` spans stored: what earlier phases left, plus prefilled traces numbered
    after every trace already there (so fills never collide)."""
    have = count_spans(dsn)
    if have < spans:
        with psycopg.connect(dsn) as conn:
            traces = conn.execute("SELECT count(*) FROM traces").fetchone()[0]
        prefill(dsn, spans - have, first_trace=10_000_000 + traces)
