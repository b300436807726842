"""The exporter as users register it: SDK contract, options, zero-code path, a real instrumentation."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from otel_pg_exporter import ConfigurationError, PostgresSpanExporter, span_uuid, trace_uuid
from otel_pg_exporter.commands.fakeai import FakeOpenAI
from otel_pg_exporter.pipeline.mapping import map_span
from tests.helpers.support import Capture, app_env, drop_exporter_role, fetch_spans, fetch_trace


def test_span_uuid_is_deterministic_and_trace_scoped() -> None:
    assert span_uuid(1, 2) == span_uuid(1, 2)
    assert span_uuid(1, 2) != span_uuid(3, 2)  # same 64-bit span id in another trace
    assert span_uuid(1, 2).version == 5
    assert trace_uuid(0x0123456789ABCDEF0123456789ABCDEF) == uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")


def test_mapping_is_pure_and_needs_no_database() -> None:
    capture = Capture()
    with capture.tracer.start_as_current_span(
        "chat",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": 3,
            "gen_ai.usage.output_tokens": 1,
        },
    ):
        pass
    record = map_span(capture.take()[0])
    assert record.span_type == "llm" and record.tokens == {"input": 3, "output": 1, "total": 4}
    assert record.hints.is_root and record.hints.workflow[1] == "chat"


def test_export_never_raises_when_the_database_is_unreachable(capture) -> None:
    exporter = PostgresSpanExporter(
        "postgresql://u:topsecret-pw@127.0.0.1:1/none", timeout_s=3, spool_dir="off"
    )
    with capture.tracer.start_as_current_span("lost"):
        pass
    started = time.monotonic()
    try:
        assert exporter.export(capture.take()).name == "FAILURE"
    finally:
        exporter.shutdown()
    assert time.monotonic() - started < 6  # bounded by the export timeout
    stats = exporter.stats()
    assert stats["retried"] >= 1 and stats["failed_batches"] == 1
    assert stats["dropped_by_reason"] == {"database_unreachable": 1}
    assert "topsecret" not in repr(exporter.settings)


def test_database_down_is_logged_once_without_password(capture, caplog) -> None:
    exporter = PostgresSpanExporter(
        "postgresql://u:topsecret-pw@127.0.0.1:1/none", timeout_s=0.3, spool_dir="off"
    )
    try:
        for _ in range(3):
            with capture.tracer.start_as_current_span("lost"):
                pass
            exporter.export(capture.take())
    finally:
        exporter.shutdown()
    ours = [r for r in caplog.records if r.name == "otel_pg_exporter"]
    assert len(ours) == 1 and "database unreachable" in ours[0].getMessage()
    assert "topsecret" not in caplog.text


def test_nothing_is_buffered_and_shutdown_is_idempotent(db_dsn, capture) -> None:
    """force_flush() has nothing to flush because export() returns only once the rows are
    committed: they are readable before force_flush() is ever called."""
    exporter = PostgresSpanExporter(db_dsn, spool_dir="off")
    with capture.tracer.start_as_current_span("committed on return") as span:
        pass
    assert exporter.export(capture.take()).name == "SUCCESS"
    assert fetch_spans(db_dsn, span.get_span_context().trace_id)["committed on return"]["status"] == "completed"
    assert exporter.force_flush(100) is True
    exporter.shutdown()
    exporter.shutdown()
    with capture.tracer.start_as_current_span("after shutdown"):
        pass
    assert exporter.export(capture.take()).name == "FAILURE"


def test_transaction_pooler_mode_uses_no_prepared_statements(db_dsn, capture) -> None:
    for prepared, expect_prepared in ((False, False), (True, True)):
        exporter = PostgresSpanExporter(
            db_dsn, prepared_statements=prepared, pool_min_size=1, pool_max_size=1
        )
        try:
            for _ in range(8):  # psycopg prepares a statement after 5 executions by default
                with capture.tracer.start_as_current_span("p"):
                    pass
                assert exporter.export(capture.take()).name == "SUCCESS"
            with exporter.delivery.pool.connection() as conn:
                count = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
        finally:
            exporter.shutdown()
        assert (count > 0) is expect_prepared


def test_options_resolve_from_arguments_then_environment(monkeypatch, db_dsn) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_POSTGRES_DSN", db_dsn)
    monkeypatch.setenv("OTEL_EXPORTER_POSTGRES_TIMEOUT", "3.5")
    monkeypatch.setenv("OTEL_EXPORTER_POSTGRES_PREPARED_STATEMENTS", "false")
    exporter = PostgresSpanExporter(timeout_s=7)
    try:
        assert exporter.settings.dsn_source == "OTEL_EXPORTER_POSTGRES_DSN"
        assert exporter.settings.timeout_s == 7 and exporter.settings.prepared_statements is False
    finally:
        exporter.shutdown()
    with pytest.raises(ConfigurationError, match="unknown option"):
        PostgresSpanExporter(db_dsn, colour="blue")
    monkeypatch.setenv("OTEL_EXPORTER_POSTGRES_MAX_PAYLOAD_CHARS", "lots")
    with pytest.raises(ConfigurationError, match="MAX_PAYLOAD_CHARS"):
        PostgresSpanExporter(db_dsn)


def test_http_child_retries_and_rate_limits_reach_the_llm_span(db_dsn, exporter, capture) -> None:
    t = capture.tracer
    with t.start_as_current_span("chat", attributes={"gen_ai.operation.name": "chat"}) as llm:
        with t.start_as_current_span(
            "POST",
            attributes={
                "http.request.method": "POST",
                "http.response.status_code": 429,
                "http.response.header.x-ratelimit-remaining-requests": ("0",),
                "http.response.header.retry-after": ("2",),
            },
        ):
            pass
        with t.start_as_current_span(
            "POST",
            attributes={
                "http.request.method": "POST",
                "http.response.status_code": 200,
                "http.request.resend_count": 1,
            },
        ):
            pass
    exporter.export(capture.take())
    row = fetch_spans(db_dsn, llm.get_span_context().trace_id)["chat"]
    assert row["retry_count"] == 1
    assert row["api_limits"]["rate_limited"] is True
    assert row["api_limits"]["x-ratelimit-remaining-requests"] == "0"
    assert row["api_limits"]["retry-after"] == "2"


def test_links_and_events_are_kept_in_metadata(db_dsn, exporter, capture) -> None:
    t = capture.tracer
    with t.start_as_current_span("first") as first:
        pass
    link_ctx = first.get_span_context()
    from opentelemetry.trace import Link

    with t.start_as_current_span("second", links=[Link(link_ctx, {"why": "retry of"})]) as second:
        second.add_event("cache.miss", {"key": "k1"})
    exporter.export(capture.take())
    row = fetch_spans(db_dsn, second.get_span_context().trace_id)["second"]
    assert row["metadata"]["links"][0]["span_uuid"] == str(span_uuid(link_ctx.trace_id, link_ctx.span_id))
    assert row["metadata"]["events"][0]["name"] == "cache.miss"
    assert row["metadata"]["otel"]["span_id"] == f"{second.get_span_context().span_id:016x}"


def test_real_openai_instrumentation_against_a_fake_provider(db_dsn, exporter) -> None:
    import openai  # a test dependency (extra "test"): a missing one fails here, never skips
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    capture = Capture(service="openai-app")
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=capture.provider)
    try:
        with FakeOpenAI() as srv:
            client = openai.OpenAI(base_url=srv.base_url, api_key="sk-test-not-a-real-key", max_retries=0)
            with capture.tracer.start_as_current_span("weather agent") as root:
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "Weather in Paris?"}]
                )
    finally:
        instrumentor.uninstrument()
    tid = root.get_span_context().trace_id
    spans = capture.take()
    assert exporter.export(spans).name == "SUCCESS"
    rows = fetch_spans(db_dsn, tid)
    llm = next(r for r in rows.values() if r["span_type"] == "llm")
    assert llm["model"] == "gpt-4o-mini-2024-07-18"
    assert llm["metadata"]["request_model"] == "gpt-4o-mini"
    assert llm["provider"] == "openai"
    assert llm["tokens"]["input"] == 120 and llm["tokens"]["output"] == 30
    # (the default/legacy mode records no cache tokens; the zero-code test runs the latest mode)
    trace = fetch_trace(db_dsn, tid)
    assert trace["total_tokens"]["input"] == 120 and trace["status"] == "completed"
    assert "sk-test" not in str(rows)


def test_zero_code_opentelemetry_instrument(db_dsn, tmp_path) -> None:
    run_id = uuid.uuid4().hex
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(f"""
        import openai
        from opentelemetry import trace
        from otel_pg_exporter.commands.fakeai import FakeOpenAI

        tracer = trace.get_tracer("zero-code-app")
        with FakeOpenAI() as srv:
            client = openai.OpenAI(base_url=srv.base_url, api_key="sk-zero-code", max_retries=0)
            with tracer.start_as_current_span("zero code {run_id}"):
                client.chat.completions.create(model="gpt-4o-mini",
                                               messages=[{{"role": "user", "content": "hi"}}])
    """)
    )
    bindir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bindir / "opentelemetry-instrument"), sys.executable, str(app)],
        env=app_env(
            db_dsn,
            OTEL_TRACES_EXPORTER="postgres",
            OTEL_SERVICE_NAME="zero-code-svc",
            OTEL_SEMCONV_STABILITY_OPT_IN="gen_ai_latest_experimental",
            OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="SPAN_ONLY",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    with psycopg.connect(db_dsn) as conn:
        trace = conn.execute(
            "SELECT trace_id, workflow_id, status, total_tokens, query FROM traces WHERE workflow_id = %s",
            (f"zero code {run_id}",),
        ).fetchone()
        assert trace is not None, proc.stderr
        types = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT span_type, metadata->'resource'->>'service.name' FROM spans WHERE trace_id = %s",
                (trace[0],),
            )
        }
    assert trace[2] == "completed"
    assert trace[3] == {"input": 120, "output": 30, "total": 150}
    assert trace[4] == "hi"  # content captured on the span (SPAN_ONLY) becomes the trace query
    assert types == {"workflow": "zero-code-svc", "llm": "zero-code-svc"}


def test_configure_one_liner(db_dsn, tmp_path) -> None:
    run_id = uuid.uuid4().hex
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(f"""
        import otel_pg_exporter
        from opentelemetry import trace

        provider = otel_pg_exporter.configure(service_name="configured-svc")
        assert trace.get_tracer_provider() is provider
        with trace.get_tracer("app").start_as_current_span("configured {run_id}"):
            pass
        provider.shutdown()
    """)
    )
    proc = subprocess.run(
        [sys.executable, str(app)], env=app_env(db_dsn), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute(
            "SELECT status, metadata FROM traces WHERE workflow_id = %s", (f"configured {run_id}",)
        ).fetchone()
        span_meta = conn.execute(
            "SELECT metadata FROM spans WHERE name = %s", (f"configured {run_id}",)
        ).fetchone()[0]
    assert row is not None and row[0] == "completed"
    assert span_meta["resource"]["service.name"] == "configured-svc"  # configure(service_name=...)


def test_exporter_works_under_the_least_privilege_role(make_database, capture) -> None:
    from pathlib import Path as _Path

    from psycopg.conninfo import make_conninfo

    from otel_pg_exporter import install_schema

    dsn = make_database()
    install_schema(dsn, rls=True)
    user = uuid.uuid4()
    script = (_Path(__file__).resolve().parents[2] / "sql" / "roles" / "otel_exporter_role.sql").read_text()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(script)
        conn.execute("ALTER ROLE otel_exporter PASSWORD 'exporter-test-pw'")
        conn.execute("INSERT INTO profiles (id) VALUES (%s)", (user,))
    role_dsn = make_conninfo(dsn, user="otel_exporter", password="exporter-test-pw")
    exporter = PostgresSpanExporter(role_dsn, spool_dir="off")
    try:
        with capture.tracer.start_as_current_span("root", attributes={"user.id": str(user)}) as root:
            with capture.tracer.start_as_current_span(
                "chat", attributes={"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 5}
            ):
                pass
        assert exporter.export(capture.take()).name == "SUCCESS"
        assert exporter.stats()["failed_batches"] == 0
    finally:
        exporter.shutdown()
    trace = fetch_trace(dsn, root.get_span_context().trace_id)
    assert trace["user_id"] == user and trace["status"] == "completed"
    with psycopg.connect(role_dsn) as conn:  # and nothing more than it needs
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM spans")
    drop_exporter_role(dsn)
