"""Documented options that had no test of their own, each checked by what it does (so ignoring it
fails): privacy switches through the exporter, settings given only as environment variables,
``--schema`` on the report, cleanup and recompute commands, the SQL clamp of ``retention_days``."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from otel_pg_exporter import PostgresSpanExporter, install_schema, trace_uuid
from tests.helpers.support import Capture, chat_attributes, fetch_spans, messages

KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
BIN = Path(sys.executable).parent


def _chat_with(capture: Capture, text: str) -> int:
    attrs = chat_attributes(10, 5, **{"gen_ai.input.messages": messages(("user", text))})
    with capture.tracer.start_as_current_span("chat", attributes=attrs) as span:
        pass
    return span.get_span_context().trace_id


def _stored_text(dsn: str, tid: int) -> str:
    return fetch_spans(dsn, tid)["chat"]["inputs"]["messages"][0]["parts"][0]["content"]


# -- privacy options through the exporter ------------------------------------------------------------


def test_scrub_secrets_false_keeps_what_the_default_scrubs(db_dsn, capture) -> None:
    tid_default, tid_off = _chat_with(capture, f"key {KEY}"), _chat_with(capture, f"key {KEY}")
    spans = capture.take()
    default = PostgresSpanExporter(db_dsn, spool_dir="off")
    off = PostgresSpanExporter(db_dsn, spool_dir="off", scrub_secrets=False)
    assert default.export([s for s in spans if s.context.trace_id == tid_default]).name == "SUCCESS"
    assert off.export([s for s in spans if s.context.trace_id == tid_off]).name == "SUCCESS"
    default.shutdown()
    off.shutdown()
    assert _stored_text(db_dsn, tid_default) == "key [REDACTED:openai_api_key]"
    assert _stored_text(db_dsn, tid_off) == f"key {KEY}"


def test_redact_patterns_option_and_environment(db_dsn, capture, monkeypatch) -> None:
    by_option = PostgresSpanExporter(db_dsn, spool_dir="off", redact_patterns=[r"\bEMP-\d{6}\b"])
    tid = _chat_with(capture, "employee EMP-123456 asked")
    assert by_option.export(capture.take()).name == "SUCCESS"
    by_option.shutdown()
    assert "EMP-123456" not in _stored_text(db_dsn, tid) and "[REDACTED" in _stored_text(db_dsn, tid)
    # newline-separated in the environment
    monkeypatch.setenv("OTEL_EXPORTER_POSTGRES_REDACT_PATTERNS", "\\bEMP-\\d{6}\\b\n\\bCASE-\\d+\\b")
    by_env = PostgresSpanExporter(db_dsn, spool_dir="off")
    tid = _chat_with(capture, "EMP-654321 opened CASE-42")
    assert by_env.export(capture.take()).name == "SUCCESS"
    by_env.shutdown()
    text = _stored_text(db_dsn, tid)
    assert "EMP-654321" not in text and "CASE-42" not in text and text.count("[REDACTED") == 2


# -- settings given only as environment variables ----------------------------------------------------


def test_settings_from_the_environment_alone(db_dsn, capture, monkeypatch, tmp_path) -> None:
    """No arguments at all: the DSN, content switch, secret scrubbing, application name, payload
    cap and custom prices all come from OTEL_EXPORTER_POSTGRES_* and take effect."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"openai/gpt-4o-mini": {"input": 1000, "output": 1000}}))
    env = {
        "OTEL_EXPORTER_POSTGRES_DSN": db_dsn,
        "OTEL_EXPORTER_POSTGRES_SCRUB_SECRETS": "false",
        "OTEL_EXPORTER_POSTGRES_APPLICATION_NAME": "env-only-app",
        "OTEL_EXPORTER_POSTGRES_MAX_PAYLOAD_CHARS": "2048",
        "OTEL_EXPORTER_POSTGRES_PRICES": str(prices),
        "OTEL_EXPORTER_POSTGRES_SPOOL_DIR": "off",
        "OTEL_EXPORTER_POSTGRES_POOL_MIN_SIZE": "1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    exporter = PostgresSpanExporter()
    tid = _chat_with(capture, f"{KEY} " + "x" * 5000)
    assert exporter.export(capture.take()).name == "SUCCESS"
    with psycopg.connect(db_dsn) as conn:
        names = {r[0] for r in conn.execute("SELECT application_name FROM pg_stat_activity")}
    exporter.shutdown()
    row = fetch_spans(db_dsn, tid)["chat"]
    assert "env-only-app" in names
    assert row["inputs"]["_truncated"] is True and KEY in row["inputs"]["preview"]  # capped, not scrubbed
    assert row["cost"] == Decimal("0.015")  # (10 + 5) tokens at 1000 USD per million
    monkeypatch.setenv("OTEL_EXPORTER_POSTGRES_CAPTURE_CONTENT", "false")
    quiet = PostgresSpanExporter()
    tid = _chat_with(capture, "nothing of this is kept")
    assert quiet.export(capture.take()).name == "SUCCESS"
    quiet.shutdown()
    row = fetch_spans(db_dsn, tid)["chat"]
    assert row["inputs"] == {"_omitted": "content capture is off"} and row["tokens"]["input"] == 10


def test_a_bad_environment_value_is_a_clear_error(monkeypatch, db_dsn) -> None:
    from otel_pg_exporter.errors import ConfigurationError

    monkeypatch.setenv("OTEL_EXPORTER_POSTGRES_TIMEOUT", "soon")
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_POSTGRES_TIMEOUT: cannot use 'soon'"):
        PostgresSpanExporter(db_dsn)


# -- --schema on the commands -----------------------------------------------------------------------


@pytest.fixture
def two_schemas(make_database) -> str:
    """The tables in public and in "tenant b", each with one expired trace of a model priced by a
    custom price: a command that ignored --schema would act on public."""
    dsn = make_database()
    for schema in (None, "tenant b"):
        install_schema(dsn, schema=schema)
        capture = Capture()
        start = int((datetime.now(timezone.utc) - timedelta(days=40)).timestamp() * 1e9)
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "acme",
            "gen_ai.request.model": f"model-{'public' if schema is None else 'tenant'}",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 0,
        }
        span = capture.tracer.start_span("chat", start_time=start, attributes=attrs)
        span.end(end_time=start + 10**9)
        exporter = PostgresSpanExporter(dsn, schema=schema, spool_dir="off", user_settings=False)
        assert exporter.export(capture.take()).name == "SUCCESS"
        exporter.shutdown()
    return dsn


def _count(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f'SELECT count(*) FROM "{schema}".traces').fetchone()[0]


def _run(command: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / command), *args], capture_output=True, text=True, timeout=120)


def test_report_cleanup_and_recompute_honour_schema(two_schemas, tmp_path) -> None:
    dsn = two_schemas
    report = _run("otel-pg-report", "--dsn", dsn, "--schema", "tenant b", "--days", "60", "--format", "json")
    assert report.returncode == 0, report.stderr
    models = [r["name"] for r in json.loads(report.stdout)["top_models"]]
    assert models == ["model-tenant"]

    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps(
            {"acme/model-tenant": {"input": 2, "output": 0}, "acme/model-public": {"input": 9, "output": 0}}
        )
    )
    recompute = _run("otel-pg-recompute-costs", "--dsn", dsn, "--schema", "tenant b", "--prices", str(prices))
    assert recompute.returncode == 0, recompute.stderr
    with psycopg.connect(dsn) as conn:
        tenant_cost = conn.execute('SELECT cost FROM "tenant b".spans').fetchone()[0]
        public_cost = conn.execute("SELECT cost FROM public.spans").fetchone()[0]
    assert tenant_cost == Decimal("0.002") and public_cost == 0  # public untouched (still unpriced)

    cleanup = _run("otel-pg-cleanup", "--dsn", dsn, "--schema", "tenant b", "--days", "30")
    assert cleanup.returncode == 0, cleanup.stderr
    assert _count(dsn, "tenant b") == 0 and _count(dsn, "public") == 1


# -- retention_days clamp (sql/007) -----------------------------------------------------------------


def test_retention_days_are_clamped_in_sql(make_database) -> None:
    dsn = make_database()
    install_schema(dsn)
    cases = {0: 1, -5: 1, 1: 1, 30: 30, 100_000: 36_500, 7.6: 8}
    with psycopg.connect(dsn) as conn:
        for given, expected in cases.items():
            got = conn.execute(
                "SELECT otel_retention_days(%s::jsonb, 90)",
                (json.dumps({"observability": {"retention_days": given}}),),
            ).fetchone()[0]
            assert got == expected, (given, got)
        assert conn.execute("SELECT otel_retention_days('{}'::jsonb, 90)").fetchone()[0] == 90


def test_a_zero_retention_setting_keeps_a_day_not_nothing(make_database) -> None:
    """retention_days 0 is clamped to 1: a trace from 12 hours ago stays; one from 2 days ago goes."""
    from otel_pg_exporter.store.retention import sweep

    dsn = make_database()
    install_schema(dsn)
    uid = "00000000-0000-4000-8000-000000000a00"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO profiles (id, settings) VALUES (%s, %s)",
            (uid, json.dumps({"observability": {"retention_days": 0}})),
        )
    capture = Capture()
    ids = {}
    for label, age in (("young", timedelta(hours=12)), ("old", timedelta(days=2))):
        start = int((datetime.now(timezone.utc) - age).timestamp() * 1e9)
        span = capture.tracer.start_span(label, start_time=start, attributes={"user.id": uid})
        span.end(end_time=start + 10**9)
        ids[label] = trace_uuid(span.get_span_context().trace_id)
    exporter = PostgresSpanExporter(dsn, spool_dir="off")
    assert exporter.export(capture.take()).name == "SUCCESS"
    exporter.shutdown()
    sweep(dsn, default_days=90)
    with psycopg.connect(dsn) as conn:
        left = {r[0] for r in conn.execute("SELECT trace_id FROM traces")}
    assert left == {ids["young"]}
