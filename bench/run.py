"""Benchmark suite: ``python -m bench [--smoke] [--json FILE]``.

Needs a PostgreSQL where it may create a throwaway database: ``OTEL_PG_BENCH_DSN``, else
``OTEL_EXPORTER_POSTGRES_DSN``, else ``OTEL_PG_TEST_DSN``. Prints a table and writes JSON. ``--smoke``
runs tiny sizes that only prove the script works (CI uses it; nothing is timed there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import psycopg
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from psycopg import sql
from psycopg.conninfo import make_conninfo

from otel_pg_exporter import PostgresSpanExporter, install_schema
from otel_pg_exporter.pipeline.encoding import JSON_COLUMNS, EncodedSpan
from otel_pg_exporter.pipeline.encoding import ROW_COLUMNS as SPAN_COLUMNS

from .cpu import GatewayProcess, OtlpSink, PostgresCpu, process_seconds
from .workload import SPANS_PER_TRACE, make_trace, prebuilt_spans, prebuilt_spans_and_logs

BATCH = 512
TARGETS = {
    "e2e_ratio": (">=", 0.6),
    "writer_vs_naive": (">=", 10.0),
    "writer_vs_copy": (">=", 0.5),
    "export_p99_ms": ("<=", 150.0),
    "peak_rss_mib": ("<=", 200.0),
    "growth_1m_vs_empty": (">=", 0.8),
    "spooling_ratio": (">=", 0.25),
    "app_cpu_vs_otlp": ("<=", 1.0),
    "pg_cpu_vs_floor": ("<=", 1.5),
    "doctor_seconds": ("<=", 2.0),
    "explorer_seconds": ("<=", 0.5),
}
SIZES = {
    "full": {
        "e2e_traces": 5000,
        "writer_traces": 5000,
        "memory_spans": 100_000,
        "growth": (0, 100_000, 1_000_000),
        "growth_traces": 2500,
        "profile_traces": 2500,
        "retention": (1_000_000, 200_000, 1000),
        "log_traces": 3000,
        "spooling_spans": 20_000,
        "doctor_spans": 1_000_000,
        "explorer_spans": 1_000_000,
        # Collector-sized requests: (spans = traces per request, requests, big bodies, MiB each)
        "burst": (20_000, 3, 6, 15),
    },
    "smoke": {
        "e2e_traces": 50,
        "writer_traces": 50,
        "memory_spans": 400,
        "growth": (0, 1000),
        "growth_traces": 50,
        "profile_traces": 50,
        "retention": (4000, 800, 100),
        "log_traces": 40,
        "spooling_spans": 500,
        "doctor_spans": 1000,
        "explorer_spans": 1000,
        "burst": (300, 2, 2, 1),
    },
}


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


# -- 1. end to end --------------------------------------------------------------------------------


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


# -- 1b. the application's pace while the database is down ------------------------------------------


def _creation_rate(exporter: SpanExporter, spans: int, payload: int) -> float:
    """Spans the application creates per second through a real BatchSpanProcessor."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=8192))
    tracer = provider.get_tracer("bench-spooling")
    text = "x" * payload
    started = time.perf_counter()
    for _ in range(spans):
        with tracer.start_as_current_span(
            "chat", attributes={"gen_ai.operation.name": "chat", "input.value": text}
        ):
            pass
    rate = spans / (time.perf_counter() - started)
    provider.shutdown()
    return rate


def gateway_phase(dsn: str, traces: int, payload: int, conventions: Sequence[str]) -> dict[str, Any]:
    """The same workload sent over OTLP/HTTP by the official protobuf exporter to ``otel-pg-gateway``
    in another process: first span created → last row committed (the gateway answers after the
    commit, so a flushed sender means stored rows), with the CPU of the sender, the gateway and
    PostgreSQL per span."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    truncate(dsn)
    gateway = GatewayProcess(dsn)
    try:
        provider = TracerProvider()
        provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=gateway.endpoint, timeout=60),
                max_queue_size=max(BATCH, traces * SPANS_PER_TRACE + 1),
                schedule_delay_millis=1000,
                max_export_batch_size=BATCH,
            )
        )
        tracer = provider.get_tracer("bench")
        pg = PostgresCpu(dsn)
        pg_before, gw_before, app_before = pg.seconds(), gateway.cpu_seconds(), process_seconds()
        started = time.perf_counter()
        for i in range(traces):
            make_trace(tracer, i, payload, conventions)
        provider.force_flush(timeout_millis=3_600_000)
        elapsed = time.perf_counter() - started
        app_cpu, gw_cpu = process_seconds() - app_before, gateway.cpu_seconds() - gw_before
        pg_cpu = pg.seconds() - pg_before
        provider.shutdown()
    finally:
        gateway.close()
    spans = traces * SPANS_PER_TRACE
    stored = count_spans(dsn)
    out: dict[str, Any] = {
        "spans": spans,
        "stored": stored,
        "seconds": elapsed,
        "spans_per_s": spans / elapsed,
        "sender_cpu_us_per_span": app_cpu / spans * 1e6,
        "gateway_cpu_us_per_span": gw_cpu / max(1, stored) * 1e6,
    }
    if pg.available:
        out["pg_cpu_us_per_span"] = pg_cpu / max(1, stored) * 1e6
    return out


def _one_span_traces(n: int, run: int) -> list[Any]:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench-burst")
    for i in range(n):
        with tracer.start_as_current_span("request", attributes={"burst.run": run, "i": i}):
            pass
    return list(memory.get_finished_spans())


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, float]:
    import urllib.error
    import urllib.request

    started = time.perf_counter()
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:  # answered (429) and closed before the whole body was sent
        status = -1
    return status, time.perf_counter() - started


def burst_phase(dsn: str, per_request: int, requests: int, big: int, big_mib: int) -> dict[str, Any]:
    """Collector-sized requests to ``otel-pg-gateway`` in another process: ``requests`` gzip'd
    OTLP/protobuf requests of ``per_request`` spans from as many traces (a Collector's ``batch``
    processor sends that much: its ``send_batch_max_size`` is unlimited by default), each stored in
    full (counted); then ``/healthz`` and a small request timed while ``big`` OTLP/JSON bodies of
    ``big_mib`` MiB each are being decoded and written."""
    import gzip
    import threading
    import urllib.request

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    truncate(dsn)
    bodies = [gzip.compress(encode_spans(_one_span_traces(per_request, r)).SerializeToString()) for r in range(requests)]
    gateway = GatewayProcess(dsn)
    base = gateway.endpoint.rsplit("/v1/", 1)[0]
    out: dict[str, Any] = {"spans_per_request": per_request, "requests": requests}
    try:
        seconds, statuses = [], []
        for body in bodies:
            status, took = _post(
                gateway.endpoint, body, {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
            )
            statuses.append(status)
            seconds.append(took)
        out.update(statuses=statuses, seconds=seconds, stored=count_spans(dsn))
        out["spans_per_s"] = per_request * requests / sum(seconds)
        # big bodies in flight: is the event loop still free?
        attribute = "x" * 4096
        n_spans = max(1, big_mib * 1024 * 1024 // 4400)
        big_doc = {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": uuid.uuid4().hex,
                                    "spanId": os.urandom(8).hex(),
                                    "name": "big",
                                    "startTimeUnixNano": "1",
                                    "endTimeUnixNano": "2",
                                    "attributes": [{"key": "input.value", "value": {"stringValue": attribute}}],
                                }
                                for _ in range(n_spans)
                            ]
                        }
                    ]
                }
            ]
        }
        big_body = json.dumps(big_doc).encode()
        health: list[float] = []
        small: list[tuple[int, float]] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                with urllib.request.urlopen(f"{base}/healthz", timeout=60) as response:
                    response.read()
                health.append(time.perf_counter() - started)
                time.sleep(0.02)

        big_statuses: list[int] = []

        def upload() -> None:
            big_statuses.append(_post(gateway.endpoint, big_body, {"Content-Type": "application/json"})[0])

        uploads = [threading.Thread(target=upload) for _ in range(big)]
        poller = threading.Thread(target=poll)
        poller.start()
        for t in uploads:
            t.start()
        time.sleep(0.2)
        small_body = encode_spans(_one_span_traces(3, requests + 1)).SerializeToString()
        while any(t.is_alive() for t in uploads):
            small.append(_post(gateway.endpoint, small_body, {"Content-Type": "application/x-protobuf"}))
            time.sleep(0.1)
        for t in uploads:
            t.join()
        stop.set()
        poller.join()
        out["big_bodies"] = {
            "bodies": big,
            "mib_each": round(len(big_body) / 1024 / 1024, 1),
            "statuses": sorted(big_statuses),
            "healthz_ms_p50": statistics.median(health) * 1000 if health else None,
            "healthz_ms_max": max(health) * 1000 if health else None,
            "small_requests": len(small),
            "small_ok": sum(1 for status, _ in small if status == 200),
            "small_ms_max": max(took for _, took in small) * 1000 if small else None,
        }
    finally:
        gateway.close()
    return out


def spooling(spans: int, payload: int) -> dict[str, Any]:
    """Span creation rate with the exporter spooling (its database refuses connections: a port on
    127.0.0.1 nobody listens on) against the no-op exporter, in one run. Once one batch has found
    the database down, exports go to the spool without waiting for a connection."""
    import socket
    import tempfile

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused at once
    with tempfile.TemporaryDirectory(prefix="otel-pg-bench-spool-") as spool_dir:
        exporter = PostgresSpanExporter(
            f"postgresql://bench@127.0.0.1:{port}/bench",
            timeout_s=0.5,
            spool_dir=spool_dir,
            shutdown_timeout_s=0.5,
        )
        exporter.export([])  # nothing: the first real batch below finds the database down
        baseline = _creation_rate(NoopExporter(), spans, payload)
        ours = _creation_rate(exporter, spans, payload)
        stats = exporter.stats()
        exporter.shutdown()
    return {
        "spans": spans,
        "noop_spans_per_s": baseline,
        "spooling_spans_per_s": ours,
        "ratio": ours / baseline,
        "spooled": stats["spooled"],
    }


# -- 2./3. writer only, naive baseline, COPY ceiling -------------------------------------------------


def batches(items: list[Any], size: int = BATCH) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


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
    return tuple(
        orjson.dumps(columns[c]).decode() if c in JSON_COLUMNS else columns[c] for c in _SPAN_COLS
    )


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


# -- 4. memory ------------------------------------------------------------------------------------


def peak_rss(dsn: str, spans: int, payload: int) -> dict[str, Any]:
    """Peak RSS of a separate process exporting ``spans`` spans end to end."""
    code = (
        "import sys\n"
        "from bench.run import memory_child\n"
        "memory_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, dsn, str(spans), str(payload)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _proc_status_mib(field: str) -> float:
    """VmHWM / VmRSS of this process (ru_maxrss would include the parent's peak across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def memory_child(dsn: str, spans: int, payload: int) -> None:
    exporter = PostgresSpanExporter(dsn, spool_dir="off")
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=8192, max_export_batch_size=BATCH)
    )
    tracer = provider.get_tracer("bench")
    baseline = _proc_status_mib("VmRSS")
    traces = spans // SPANS_PER_TRACE
    for i in range(traces):
        make_trace(tracer, i, payload, ("otel",))
        if i % 1024 == 1023:  # keep the producer within the queue: no SDK drops
            provider.force_flush()
    provider.force_flush()
    provider.shutdown()
    peak = _proc_status_mib("VmHWM")
    print(
        json.dumps(
            {
                "spans": traces * SPANS_PER_TRACE,
                "stored": count_spans(dsn),
                "peak_rss_mib": round(peak, 1),
                "rss_before_mib": round(baseline, 1),
            }
        )
    )


# -- 5. growth ------------------------------------------------------------------------------------


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


def growth(dsn: str, existing: Sequence[int], traces: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    loaded = 0
    truncate(dsn)
    for target in existing:
        prefill(dsn, target - loaded, first_trace=loaded // SPANS_PER_TRACE)
        loaded = target
        spans = prebuilt_spans(traces)
        result = writer_only(dsn, spans)
        out[str(target)] = {
            "spans_per_s": result["spans_per_s"],
            "p99_ms": result["p99_ms"],
            "stored_before": count_spans(dsn) - len(spans),
        }
    return out


# -- 5b. otel-pg-doctor on a big table ------------------------------------------------------------


def top_up(dsn: str, spans: int) -> None:
    """At least ``spans`` spans stored: what earlier phases left, plus prefilled traces numbered
    after every trace already there (so fills never collide)."""
    have = count_spans(dsn)
    if have < spans:
        with psycopg.connect(dsn) as conn:
            traces = conn.execute("SELECT count(*) FROM traces").fetchone()[0]
        prefill(dsn, spans - have, first_trace=10_000_000 + traces)


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


# -- 5c. the explorer on a big table -------------------------------------------------------------


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


# -- 6. log records ------------------------------------------------------------------------------


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


# -- 7. retention ---------------------------------------------------------------------------------


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


# -- 8. profile -----------------------------------------------------------------------------------


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


# -- driver ---------------------------------------------------------------------------------------


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


def verdict(name: str, value: float) -> str:
    op, target = TARGETS[name]
    ok = value >= target if op == ">=" else value <= target
    return f"{'met' if ok else 'MISSED'} ({op} {target:g})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: proves the script runs, times nothing"
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/latest.json"))
    parser.add_argument("--payload", type=int, default=500, help="bytes of input and of output per LLM span")
    parser.add_argument("--conventions", default="otel", help="comma list of otel,oi,tl (cycled per trace)")
    parser.add_argument(
        "--skip",
        default="",
        help="comma list of phases to skip: "
        "e2e,gateway,burst,spooling,writer,memory,growth,doctor,explorer,profile,logs,retention",
    )
    parser.add_argument("--only", default="", help="comma list of the phases to run (the others are skipped)")
    parser.add_argument("--retention", action="store_true", help="shorthand for --only retention")
    args = parser.parse_args(argv)
    size = SIZES["smoke" if args.smoke else "full"]
    conventions = tuple(args.conventions.split(","))
    skip = set(filter(None, args.skip.split(",")))
    only = set(filter(None, args.only.split(","))) | ({"retention"} if args.retention else set())
    if only:
        skip |= {
            "e2e",
            "gateway",
            "burst",
            "spooling",
            "writer",
            "memory",
            "growth",
            "doctor",
            "explorer",
            "profile",
            "logs",
            "retention",
        } - only
    args.json.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every phase, so a long run that dies keeps what it measured
        args.json.write_text(json.dumps(results, indent=2, default=str))

    results: dict[str, Any] = {
        "machine": machine(),
        "mode": "smoke" if args.smoke else "full",
        "payload": args.payload,
        "conventions": conventions,
    }
    with throwaway_database(server_dsn()) as dsn:
        if "e2e" not in skip:
            noop = end_to_end(None, size["e2e_traces"], args.payload, conventions)
            sink = OtlpSink()
            try:
                otlp = end_to_end(
                    None,
                    size["e2e_traces"],
                    args.payload,
                    conventions,
                    kind="otlp",
                    otlp_endpoint=sink.endpoint,
                )
            finally:
                sink.close()
            truncate(dsn)
            ours = end_to_end(dsn, size["e2e_traces"], args.payload, conventions)
            floor = insert_floor(dsn)
            ours_cpu = ours["app_cpu_us_per_span"] - noop["app_cpu_us_per_span"]
            otlp_cpu = otlp["app_cpu_us_per_span"] - noop["app_cpu_us_per_span"]
            results["e2e"] = {
                "noop": noop,
                "otlp": otlp,
                "postgres": ours,
                "floor": floor,
                "ratio": ours["spans_per_s"] / noop["spans_per_s"],
                "exporter_cpu_us_per_span": {"postgres": ours_cpu, "otlp": otlp_cpu},
                "app_cpu_vs_otlp": ours_cpu / otlp_cpu if otlp_cpu > 0 else None,
                "pg_cpu_vs_floor": (
                    ours["pg_cpu_us_per_span"] / floor["all_indexes"]["pg_cpu_us_per_row"]
                    if "pg_cpu_us_per_span" in ours and floor["all_indexes"]["pg_cpu_us_per_row"] > 0
                    else None
                ),
            }
            save()
        if "gateway" not in skip:
            results["gateway"] = gateway_phase(dsn, size["e2e_traces"], args.payload, conventions)
            save()
        if "burst" not in skip:
            results["burst"] = burst_phase(dsn, *size["burst"])
            save()
        if "spooling" not in skip:
            results["spooling"] = spooling(size["spooling_spans"], args.payload)
            save()
        if "writer" not in skip:
            spans = prebuilt_spans(size["writer_traces"], args.payload, conventions)
            truncate(dsn)
            writer = writer_only(dsn, spans)
            truncate(dsn)
            naive = naive_inserts(dsn, spans)
            truncate(dsn)
            ceiling = copy_ceiling(dsn, spans)
            results["scrub"] = scrub_cost(dsn, spans)
            results["writer"] = {
                "ours": writer,
                "naive": naive,
                "copy": ceiling,
                "vs_naive": writer["spans_per_s"] / naive["spans_per_s"],
                "vs_copy": writer["spans_per_s"] / ceiling["spans_per_s"],
            }
            save()
        if "memory" not in skip:
            truncate(dsn)
            results["memory"] = peak_rss(dsn, size["memory_spans"], args.payload)
            save()
        if "profile" not in skip:
            truncate(dsn)
            results["profile"] = profile_writer(
                dsn, prebuilt_spans(size["profile_traces"], args.payload, conventions)
            )
            save()
        if "growth" not in skip:
            results["growth"] = growth(dsn, size["growth"], size["growth_traces"])
            save()
        if "doctor" not in skip:
            results["doctor"] = doctor_probe(dsn, size["doctor_spans"])
            save()
        if "explorer" not in skip:
            results["explorer"] = explorer_probe(dsn, size["explorer_spans"])
            save()
        if "logs" not in skip:
            results["logs"] = log_merge(dsn, size["log_traces"], args.payload)
            save()
        if "retention" not in skip:
            results["retention"] = retention(dsn, *size["retention"])
            save()
    report(results)
    save()
    print(f"\nJSON written to {args.json}")
    return 0


def report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(
        f"machine: {m['cores']} cores, {m['memory_gib']} GiB, PostgreSQL {m['postgresql']}, "
        f"Python {m['python']}; mode {r['mode']}; payload {r['payload']} B; conventions {','.join(r['conventions'])}"
    )
    rows: list[tuple[str, str, str]] = []
    if "e2e" in r:
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
    if "gateway" in r:
        g = r["gateway"]
        rows += [
            (
                "end to end over OTLP/HTTP: official exporter -> otel-pg-gateway",
                f"{g['spans_per_s']:,.0f} spans/s ({g['stored']}/{g['spans']} rows)",
                "",
            ),
            (
                "CPU per span: sender / gateway / PostgreSQL",
                f"{g['sender_cpu_us_per_span']:.0f} / {g['gateway_cpu_us_per_span']:.0f} / "
                f"{g.get('pg_cpu_us_per_span', float('nan')):.0f} µs",
                "",
            ),
        ]
    if "burst" in r:
        b = r["burst"]
        total = b["spans_per_request"] * b["requests"]
        rows.append(
            (
                f"Collector burst: {b['requests']} gzip requests of {b['spans_per_request']:,} spans from as many traces",
                f"{b['stored']:,}/{total:,} stored, {' / '.join(f'{x:.1f}' for x in b['seconds'])} s per request "
                f"({b['spans_per_s']:,.0f} spans/s), answers {sorted(set(b['statuses']))}",
                "",
            )
        )
        big = b.get("big_bodies")
        if big:
            rows.append(
                (
                    f"/healthz while {big['bodies']} OTLP/JSON bodies of {big['mib_each']} MiB are written",
                    f"p50 {big['healthz_ms_p50']:.0f} ms, max {big['healthz_ms_max']:.0f} ms; small request "
                    f"{big['small_ok']}/{big['small_requests']} ok, max {big['small_ms_max']:.0f} ms; "
                    f"big answers {big['statuses']}",
                    "",
                )
            )
    if "spooling" in r:
        sp = r["spooling"]
        rows.append(
            (
                "app span creation while spooling / no-op",
                f"{sp['spooling_spans_per_s']:,.0f} / {sp['noop_spans_per_s']:,.0f} spans/s ({sp['ratio']:.2f})",
                verdict("spooling_ratio", sp["ratio"]),
            )
        )
    if "writer" in r:
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
    if "scrub" in r:
        sc = r["scrub"]
        rows.append(
            (
                "mapping+encoding, scrubbing on / off",
                f"{sc['with_scrubbing']:,.0f} / {sc['without_scrubbing']:,.0f} spans/s ({sc['ratio']:.2f})",
                "",
            )
        )
    if "memory" in r:
        mem = r["memory"]
        rows.append(
            (
                f"peak RSS, {mem['spans']:,}-span run",
                f"{mem['peak_rss_mib']:.0f} MiB (idle {mem['rss_before_mib']:.0f})",
                verdict("peak_rss_mib", mem["peak_rss_mib"]),
            )
        )
    if "growth" in r:
        g = r["growth"]
        for existing, v in g.items():
            rows.append(
                (f"writer with {int(existing):,} spans stored", f"{v['spans_per_s']:,.0f} spans/s", "")
            )
        keys = list(g)
        if len(keys) > 1:
            ratio = g[keys[-1]]["spans_per_s"] / g[keys[0]]["spans_per_s"]
            r["growth_ratio"] = ratio
            rows.append(
                (f"growth {int(keys[-1]):,} vs empty", f"{ratio:.2f}", verdict("growth_1m_vs_empty", ratio))
            )
    if "doctor" in r:
        d = r["doctor"]
        rows.append(
            (
                f"otel-pg-doctor, {d['spans']:,} spans stored",
                f"{d['seconds_median'] * 1000:,.0f} ms median, {d['seconds_max'] * 1000:,.0f} max ({d['findings']} findings)",
                verdict("doctor_seconds", d["seconds_median"]),
            )
        )
    if "explorer" in r:
        x = r["explorer"]
        for name, seconds in x["seconds"].items():
            rows.append(
                (
                    f"explorer: {name} ({x['traces']:,} traces / {x['spans']:,} spans)",
                    f"{seconds * 1000:,.1f} ms median",
                    verdict("explorer_seconds", seconds),
                )
            )
    if "logs" in r:
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
    if "retention" in r:
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
    width = max((len(a) for a, _, _ in rows), default=0)
    print()
    for a, b, c in rows:
        print(f"{a:<{width}}  {b:<32} {c}")
    if "profile" in r:
        print("\nwriter-only profile, top functions by self time:")
        for p in r["profile"]:
            print(f"  {p.get('share', 0) * 100:5.1f}%  {p['function']}")
