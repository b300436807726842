"""One Engine per process and database: every adapter holds it, none reaches into another."""

from __future__ import annotations

import uuid

from otel_pg_exporter import LiveSpanProcessor, PostgresLogExporter, PostgresSpanExporter, SpanRecord
from otel_pg_exporter.sdk.engine import Engine
from otel_pg_exporter.web.gateway.app import Gateway
from tests.helpers.support import count_spans


def test_the_adapters_share_one_engine_and_the_last_release_closes_it(db_dsn, capture) -> None:
    spans = PostgresSpanExporter(db_dsn)
    logs = PostgresLogExporter(span_exporter=spans)
    live = LiveSpanProcessor(spans, delay_s=60)
    engine = spans.engine
    assert isinstance(engine, Engine) and logs.engine is engine and live._engine is engine
    spans.shutdown()  # the log exporter and the live processor still hold it
    with capture.tracer.start_as_current_span("after the span exporter's shutdown"):
        pass
    assert engine.export_spans(capture.take()).durable and not engine.closed
    logs.shutdown()
    live.shutdown()  # the last holder: drained and closed
    assert engine.closed and not engine.export_spans([]).durable


def test_an_engine_given_to_the_gateway_and_an_exporter_is_the_same(db_dsn, capture) -> None:
    gateway = Gateway(db_dsn)
    exporter = PostgresSpanExporter(engine=gateway.engine)
    run_id = uuid.uuid4().hex
    with capture.tracer.start_as_current_span("shared", attributes={"run.id": run_id}):
        pass
    try:
        assert exporter.export(capture.take()).name == "SUCCESS"
        assert gateway.stats()["exporter"]["exported"] == 1  # one set of counters
        assert count_spans(db_dsn, run_id) == 1
    finally:
        exporter.shutdown()
        gateway.close()
    assert gateway.engine.closed


def test_the_redact_hook_receives_the_exported_span_record(db_dsn, capture) -> None:
    seen: list[object] = []

    def redact(record: SpanRecord) -> SpanRecord:
        seen.append(record)
        return record

    exporter = PostgresSpanExporter(db_dsn, redact=redact)
    with capture.tracer.start_as_current_span("redacted"):
        pass
    try:
        exporter.export(capture.take())
    finally:
        exporter.shutdown()
    assert len(seen) == 1 and isinstance(seen[0], SpanRecord)
