"""Privacy controls: default secret scrubbing, extra patterns, the content switch, a redact callback."""

from __future__ import annotations

import json

import psycopg

from otel_pg_exporter import PostgresSpanExporter
from tests.helpers.support import fetch_spans, fetch_trace, messages

SECRETS = {
    "openai_api_key": "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    "anthropic_api_key": "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx",
    "google_api_key": "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "aws_access_key": "AKIAIOSFODNN7EXAMPLE",
    "github_token": "ghp_abcdefghijklmnopqrstuvwxyz0123456789AB",
}


def test_secrets_never_reach_the_tables(db_dsn, exporter, capture) -> None:
    text = " ".join(SECRETS.values())
    with capture.tracer.start_as_current_span(
        "chat",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.input.messages": messages(("user", f"my keys: {text}")),
            "http.request.header.authorization": ("Bearer sk-live-0123456789abcdefghij",),
            "db.connection_string": "postgresql://svc:s3cretpw@db.internal:5432/app",
        },
    ) as span:
        span.add_event("exception", {"exception.message": f"auth failed for {SECRETS['openai_api_key']}"})
    tid = span.get_span_context().trace_id
    assert exporter.export(capture.take()).name == "SUCCESS"
    with psycopg.connect(db_dsn) as conn:
        dump = json.dumps(
            conn.execute(
                "SELECT to_jsonb(s) FROM spans s WHERE trace_id = %s", (fetch_trace(db_dsn, tid)["trace_id"],)
            ).fetchall()
        )
        query = fetch_trace(db_dsn, tid)["query"]
    for secret in [*SECRETS.values(), "sk-live-0123456789abcdefghij", "s3cretpw"]:
        assert secret not in dump and secret not in (query or "")
    assert "[REDACTED:openai_api_key]" in dump and "[REDACTED:url_password]" in dump
    assert "[REDACTED:openai_api_key]" in query


def test_exporter_own_dsn_never_written(db_dsn, capture) -> None:
    exporter = PostgresSpanExporter(db_dsn)
    try:
        with capture.tracer.start_as_current_span("leaky", attributes={"config.dsn": db_dsn}) as span:
            pass
        exporter.export(capture.take())
    finally:
        exporter.shutdown()
    row = fetch_spans(db_dsn, span.get_span_context().trace_id)["leaky"]
    assert row["metadata"]["attributes"]["config.dsn"] == "[REDACTED:exporter_dsn]"


def test_content_switch_keeps_tokens_cost_model_and_errors(db_dsn, capture) -> None:
    exporter = PostgresSpanExporter(db_dsn, capture_content=False)
    try:
        with capture.tracer.start_as_current_span(
            "chat",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.provider.name": "openai",
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 2,
                "error.type": "Timeout",
                "gen_ai.input.messages": messages(("user", "private question")),
                "gen_ai.output.messages": messages(("assistant", "private answer")),
                "input.value": "private question again",
            },
        ) as span:
            pass
        exporter.export(capture.take())
    finally:
        exporter.shutdown()
    tid = span.get_span_context().trace_id
    row = fetch_spans(db_dsn, tid)["chat"]
    assert row["inputs"] == {"_omitted": "content capture is off"} and row["outputs"] == row["inputs"]
    assert "private" not in json.dumps(row["metadata"])
    assert row["metadata"]["content"] == "omitted"
    assert row["tokens"]["input"] == 10 and row["model"] == "gpt-4o-mini" and row["error_type"] == "Timeout"
    assert row["metadata"]["cost"]["status"] == "computed"
    assert fetch_trace(db_dsn, tid)["query"] is None


def test_redact_callback_for_custom_pii(db_dsn, capture) -> None:
    def redact(record):
        record.inputs = json.loads(json.dumps(record.inputs).replace("Alice Smith", "[NAME]"))
        return record

    def broken(record):
        raise RuntimeError("bug in user code")

    for callback, expect in ((redact, "[NAME]"), (broken, None)):
        exporter = PostgresSpanExporter(db_dsn, redact=callback)
        try:
            with capture.tracer.start_as_current_span(
                "chat",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.input.messages": messages(("user", "I am Alice Smith")),
                },
            ) as span:
                pass
            exporter.export(capture.take())
        finally:
            exporter.shutdown()
        row = fetch_spans(db_dsn, span.get_span_context().trace_id)["chat"]
        assert "Alice Smith" not in json.dumps(row, default=str)  # a failing callback never leaks content
        if expect:
            assert expect in json.dumps(row["inputs"])
