"""Live spans: a long step gets a ``running`` row while it runs; the real row replaces it in place."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from psycopg.rows import dict_row

from otel_pg_exporter import PostgresSpanExporter, TraceStore, span_uuid, trace_uuid
from otel_pg_exporter.sdk.live import LiveSpanProcessor
from tests.helpers.support import chat_attributes

DELAY_S = 0.3


def _wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _row(dsn: str, sql: str, *args: Any) -> dict[str, Any] | None:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(sql, args).fetchone()


def _pipeline(
    db_dsn: str, simple: bool = True
) -> tuple[TracerProvider, PostgresSpanExporter, LiveSpanProcessor]:
    exporter = PostgresSpanExporter(db_dsn, spool_dir="off")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter) if simple else BatchSpanProcessor(exporter))
    live = LiveSpanProcessor(exporter, delay_s=DELAY_S)
    provider.add_span_processor(live)
    return provider, exporter, live


def test_a_long_step_is_visible_while_it_runs_and_replaced_in_place(db_dsn: str) -> None:
    provider, exporter, _ = _pipeline(db_dsn)
    tracer = provider.get_tracer("live-test")
    try:
        with tracer.start_as_current_span("agent run", attributes={"gen_ai.workflow.name": "live"}) as root:
            trace_id = root.get_span_context().trace_id
            root_id = span_uuid(trace_id, root.get_span_context().span_id)
            with tracer.start_as_current_span("chat", attributes=chat_attributes(10, 2)) as chat:
                chat_id = span_uuid(trace_id, chat.get_span_context().span_id)
                running = _wait_for(
                    lambda: _row(
                        db_dsn, "SELECT * FROM spans WHERE span_id = %s AND status = 'running'", chat_id
                    )
                )
                assert running["span_type"] == "llm" and running["model"] == "gpt-4o-mini"
                assert running["parent_span_id"] == root_id and running["started_at"] is not None
                assert running["completed_at"] is None and running["metadata"]["live"] is True
                trace = _wait_for(
                    lambda: _row(db_dsn, "SELECT * FROM traces WHERE trace_id = %s", trace_uuid(trace_id))
                )
                assert trace["status"] == "running" and trace["workflow_id"] == "live"
                root_row = _wait_for(
                    lambda: _row(
                        db_dsn, "SELECT * FROM spans WHERE span_id = %s AND status = 'running'", root_id
                    )
                )
                assert root_row["name"] == "agent run"
                detail = TraceStore(db_dsn).get_trace(trace_uuid(trace_id))  # what the explorer reads
                assert detail is not None and detail.span(chat_id).running
                assert [s.name for s in detail.spans] == ["agent run", "chat"]  # the tree, while it runs
        done = _row(db_dsn, "SELECT * FROM spans WHERE span_id = %s", chat_id)
        assert done["status"] == "completed" and done["completed_at"] is not None
        assert "live" not in done["metadata"] and done["tokens"]["input"] == 10
        trace = _row(db_dsn, "SELECT * FROM traces WHERE trace_id = %s", trace_uuid(trace_id))
        assert trace["status"] == "completed" and trace["total_tokens"]["input"] == 10
        assert trace["metadata"]["model_calls"] == 1
        count = _row(db_dsn, "SELECT count(*) AS n FROM spans WHERE trace_id = %s", trace_uuid(trace_id))
        assert count["n"] == 2  # the same two rows, no duplicates
        assert exporter.stats().get("live_rows", 0) >= 2
    finally:
        provider.shutdown()


def test_short_spans_cost_no_live_row(db_dsn: str) -> None:
    provider, exporter, _ = _pipeline(db_dsn, simple=False)
    tracer = provider.get_tracer("live-test")
    try:
        for _ in range(50):
            with tracer.start_as_current_span("quick step"):
                pass
        time.sleep(DELAY_S * 3)
        provider.force_flush()
        assert exporter.stats().get("live_rows", 0) == 0
    finally:
        provider.shutdown()


def test_a_late_live_row_never_replaces_the_real_row(db_dsn: str) -> None:
    """The live thread may read a span just before it ends and write after the real row."""
    provider, _, live = _pipeline(db_dsn)
    tracer = provider.get_tracer("live-test")
    try:
        span = tracer.start_span("racing step")
        live._open.clear()  # keep the live thread away; we write its row ourselves, late
        snapshot = span._readable_span()  # what the live thread read while the span ran
        span.end()  # the real row is written (SimpleSpanProcessor)
        ctx = span.get_span_context()
        span_id = span_uuid(ctx.trace_id, ctx.span_id)
        assert _row(db_dsn, "SELECT status FROM spans WHERE span_id = %s", span_id)["status"] == "completed"
        assert snapshot.end_time is None
        live._write([snapshot])  # type: ignore[list-item]  # written after the real row
        row = _row(db_dsn, "SELECT status, metadata FROM spans WHERE span_id = %s", span_id)
        assert row["status"] == "completed" and "live" not in row["metadata"]
    finally:
        provider.shutdown()


def test_configure_live_adds_the_processor(db_dsn: str, monkeypatch: Any) -> None:
    from opentelemetry import trace

    from otel_pg_exporter import configure

    monkeypatch.setenv("OTEL_EXPORTER_POSTGRES_LIVE", "true")
    monkeypatch.setenv("OTEL_EXPORTER_POSTGRES_LIVE_DELAY", str(DELAY_S))
    provider = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    configure(db_dsn, logs=False, spool_dir="off")
    tracer = provider.get_tracer("live-test")
    try:
        with tracer.start_as_current_span("configured long step") as span:
            ctx = span.get_span_context()
            _wait_for(
                lambda: _row(
                    db_dsn,
                    "SELECT 1 FROM spans WHERE span_id = %s AND status = 'running'",
                    span_uuid(ctx.trace_id, ctx.span_id),
                )
            )
    finally:
        provider.shutdown()


def test_live_rows_are_skipped_while_the_database_is_down(db_dsn: str, tmp_path: Any) -> None:
    """Best effort: no live row while the database does not answer; the real row still arrives
    (through the spool and its replay)."""
    from tests.helpers.faults import TcpProxy

    proxy = TcpProxy(db_dsn)
    exporter = PostgresSpanExporter(proxy.dsn, spool_dir=str(tmp_path), timeout_s=1)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(LiveSpanProcessor(exporter, delay_s=DELAY_S))
    try:
        proxy.cut()
        with provider.get_tracer("live-test").start_as_current_span("step during an outage") as span:
            ctx = span.get_span_context()
            _wait_for(lambda: exporter.stats().get("live_skipped", 0) >= 1, timeout=15)
        assert exporter.stats().get("live_rows", 0) == 0
        proxy.restore()
        row = _wait_for(
            lambda: _row(
                db_dsn, "SELECT status FROM spans WHERE span_id = %s", span_uuid(ctx.trace_id, ctx.span_id)
            ),
            timeout=30,
        )
        assert row["status"] == "completed"
    finally:
        provider.shutdown()
        proxy.close()


def test_a_running_row_goes_through_the_redact_hook_like_the_real_row(db_dsn: str) -> None:
    def redact(record: Any) -> Any:
        record.name = record.name.replace("alice@example.com", "[user]")
        return record

    exporter = PostgresSpanExporter(db_dsn, spool_dir="off", redact=redact)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(LiveSpanProcessor(exporter, delay_s=DELAY_S))
    try:
        with provider.get_tracer("live-test").start_as_current_span("ticket for alice@example.com") as span:
            span_id = span_uuid(span.get_span_context().trace_id, span.get_span_context().span_id)
            running = _wait_for(
                lambda: _row(db_dsn, "SELECT * FROM spans WHERE span_id = %s AND status = 'running'", span_id)
            )
            assert running["name"] == "ticket for [user]"
    finally:
        provider.shutdown()
    assert _row(db_dsn, "SELECT name FROM spans WHERE span_id = %s", span_id)["name"] == "ticket for [user]"
