"""The application while the database is down: span creation with the exporter spooling, against a no-op."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from otel_pg_exporter import PostgresSpanExporter

from ..registry import Row, Run, verdict
from ..support import NoopExporter


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


def render_spooling(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "spooling" not in r:
        return rows
    sp = r["spooling"]
    rows.append(
        (
            "app span creation while spooling / no-op",
            f"{sp['spooling_spans_per_s']:,.0f} / {sp['noop_spans_per_s']:,.0f} spans/s ({sp['ratio']:.2f})",
            verdict("spooling_ratio", sp["ratio"]),
        )
    )
    return rows


def run(run: Run) -> dict[str, Any]:
    return {"spooling": spooling(run.size["spooling_spans"], run.payload)}
