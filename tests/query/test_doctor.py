"""otel-pg-doctor: a real database, broken behind the doctor's back one way at a time; the doctor
must name each problem (and stay quiet about a healthy one)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from otel_pg_exporter import PostgresSpanExporter, install_schema
from otel_pg_exporter.query.doctor import diagnose, exit_code
from otel_pg_exporter.store.retention import sweep
from tests.helpers.support import Capture, chat_attributes, drop_exporter_role

ROOT = Path(__file__).resolve().parents[2]
ROLE_SQL = ROOT / "sql" / "roles" / "otel_exporter_role.sql"


def doctor(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    bindir = Path(sys.executable).parent
    return subprocess.run(
        [str(bindir / "otel-pg-doctor"), "--dsn", dsn, *args], capture_output=True, text=True, timeout=120
    )


def by_name(dsn: str) -> dict[str, dict]:
    proc = doctor(dsn, "--format", "json")
    report = json.loads(proc.stdout)
    assert proc.returncode == {"ok": 0, "warn": 1, "fail": 2}[report["status"]]
    return {f["name"]: f for f in report["findings"]}


def sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)  # type: ignore[arg-type]


@pytest.fixture
def healthy(make_database) -> str:
    """Installed with RLS, one retention run done: nothing to warn about."""
    dsn = make_database()
    install_schema(dsn, rls=True)
    sweep(dsn, default_days=30)
    return dsn


def test_a_healthy_database_is_healthy(healthy) -> None:
    proc = doctor(healthy)
    assert proc.returncode == 0, proc.stdout
    assert "healthy:" in proc.stdout and "WARN" not in proc.stdout and "FAIL" not in proc.stdout
    findings = by_name(healthy)
    assert findings["migrations"]["status"] == "ok" and findings["rls"]["status"] == "ok"
    assert findings["seed_indexes"]["detail"].startswith("all 17 indexes")


def test_missing_redefined_and_invalid_indexes_are_named(healthy) -> None:
    sql(
        healthy,
        "DROP INDEX idx_spans_status",
        "DROP INDEX idx_traces_status",
        "CREATE INDEX idx_traces_status ON traces (workflow_id)",  # the name, not the definition
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'idx_spans_trace_started'::regclass",
    )
    f = by_name(healthy)
    assert f["seed_indexes"]["status"] == "fail" and f["seed_indexes"]["data"]["missing"] == [
        "idx_spans_status"
    ]
    assert f["seed_index_definitions"]["data"]["different"] == ["idx_traces_status"]
    assert "(workflow_id)" in f["seed_index_definitions"]["detail"]
    assert f["seed_index_validity"]["data"]["invalid"] == ["idx_spans_trace_started"]
    assert "REINDEX INDEX CONCURRENTLY idx_spans_trace_started" in f["seed_index_validity"]["action"]


def test_missing_constraint_and_column_are_named(healthy) -> None:
    sql(
        healthy,
        "ALTER TABLE spans DROP CONSTRAINT valid_span_status",
        "DROP VIEW spans_annotated",  # it names every column of spans (migration 009)
        "ALTER TABLE spans DROP COLUMN timeout",
    )
    f = by_name(healthy)
    assert f["seed_constraints"]["data"]["missing"] == ["spans.valid_span_status"]
    assert f["seed_columns"]["data"]["missing"] == ["spans.timeout"]


def test_changed_and_pending_migrations(healthy) -> None:
    sql(
        healthy,
        "UPDATE otel_pg_schema_migrations SET checksum = 'edited' WHERE version = 6",
    )
    f = by_name(healthy)
    assert (
        f["migrations"]["status"] == "fail"
        and "006_add_cost_history_and_forecast" in f["migrations"]["detail"]
    )
    sql(healthy, "DELETE FROM otel_pg_schema_migrations WHERE version IN (6, 8)")
    f = by_name(healthy)
    assert f["migrations"]["status"] == "warn"
    assert "pending: 006_add_cost_history_and_forecast, 008_add_no_usage_calls" in f["migrations"]["detail"]


def test_rls_policy_missing_and_rls_switched_off(healthy) -> None:
    sql(healthy, 'DROP POLICY "Users can update spans in their own traces" ON spans')
    f = by_name(healthy)
    assert f["rls"]["status"] == "fail" and "Users can update spans in their own traces" in f["rls"]["detail"]
    sql(
        healthy,
        "ALTER TABLE traces DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE spans DISABLE ROW LEVEL SECURITY",
    )
    f = by_name(healthy)
    assert f["rls"]["status"] == "warn" and "row level security is off" in f["rls"]["detail"]


def test_exporter_role_missing_a_grant(healthy) -> None:
    sql(healthy, ROLE_SQL.read_text())
    try:
        assert by_name(healthy)["exporter_role"]["status"] == "ok"
        sql(healthy, "REVOKE UPDATE ON spans FROM otel_exporter")
        f = by_name(healthy)["exporter_role"]
        assert f["status"] == "fail" and f["data"]["missing"] == ["UPDATE on spans"]
    finally:
        drop_exporter_role(healthy)


def _old_orphan_and_calls(dsn: str) -> None:
    """A child whose parent never came, three days ago (a running trace and a placeholder), and
    this month: two calls to a model nobody prices, one priced call."""
    capture = Capture()
    old = int((datetime.now(timezone.utc) - timedelta(days=3)).timestamp() * 1e9)
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    ghost = SpanContext(0xABC0000000000000000000000000DEF, 0x1234, True, TraceFlags(1))
    child = capture.tracer.start_span(
        "orphan", context=set_span_in_context(NonRecordingSpan(ghost)), start_time=old
    )
    child.end(end_time=old + 10**9)
    for model in ("my-unpriced-model-x", "my-unpriced-model-x", "gpt-4o-mini"):
        with capture.tracer.start_as_current_span(
            "chat", attributes=chat_attributes(1000, 100, **{"gen_ai.request.model": model})
        ):
            pass
    exporter = PostgresSpanExporter(dsn, spool_dir="off")
    assert exporter.export(capture.take()).name == "SUCCESS"
    exporter.shutdown()


def test_stuck_traces_placeholders_unpriced_models_and_budgets(healthy) -> None:
    _old_orphan_and_calls(healthy)
    sql(
        healthy, "INSERT INTO otel_budgets (scope, scope_value, monthly_limit) VALUES ('all', NULL, 0.000001)"
    )
    f = by_name(healthy)
    assert f["stuck_running_traces"]["status"] == "warn" and f["stuck_running_traces"]["data"]["count"] == 1
    assert f["stale_placeholders"]["status"] == "warn" and f["stale_placeholders"]["data"]["count"] == 1
    assert f["unpriced_models"]["status"] == "warn"
    assert "my-unpriced-model-x (openai, 2 calls)" in f["unpriced_models"]["detail"]
    assert "gpt-4o-mini" not in f["unpriced_models"]["detail"]
    assert f["budgets"]["status"] == "warn" and "breached this month: all" in f["budgets"]["detail"]
    # a longer grace hides the 3-day-old ones
    assert by_name_with(healthy, "--grace-hours", "100")["stuck_running_traces"]["status"] == "ok"
    # unpriced calls of 3 days ago: inside the default 7-day window, outside a 2-day one
    sql(
        healthy,
        "UPDATE spans SET started_at = started_at - interval '3 days' WHERE model = 'my-unpriced-model-x'",
    )
    assert by_name(healthy)["unpriced_models"]["status"] == "warn"
    assert by_name_with(healthy, "--recent-days", "2")["unpriced_models"]["status"] == "ok"


def by_name_with(dsn: str, *args: str) -> dict[str, dict]:
    proc = doctor(dsn, "--format", "json", *args)
    return {f["name"]: f for f in json.loads(proc.stdout)["findings"]}


def test_retention_never_run_or_long_ago(make_database) -> None:
    dsn = make_database()
    install_schema(dsn)
    f = by_name(dsn)["retention_runs"]
    assert f["status"] == "ok" and "not run yet" in f["detail"]  # nothing to sweep: nothing to say
    sql(
        dsn,
        "INSERT INTO traces (execution_id, workflow_id, status, started_at) "
        "VALUES ('old', 'wf', 'completed', now() - interval '120 days')",
    )
    f = by_name(dsn)["retention_runs"]
    assert f["status"] == "warn" and "never run" in f["detail"]
    sweep(dsn, default_days=30)
    assert by_name(dsn)["retention_runs"]["status"] == "ok"
    sql(
        dsn,
        "UPDATE otel_retention_runs SET started_at = now() - interval '5 days', finished_at = now() - interval '5 days'",
    )
    f = by_name(dsn)["retention_runs"]
    assert f["status"] == "warn" and "5 days ago" in f["detail"]


def test_server_settings_that_would_hurt_the_exporter(healthy) -> None:
    dbname = psycopg.conninfo.conninfo_to_dict(healthy)["dbname"]
    sql(
        healthy,
        f"ALTER DATABASE {dbname} SET statement_timeout = '1s'",
        f"ALTER DATABASE {dbname} SET lock_timeout = '100ms'",
    )
    f = by_name(healthy)["server_settings"]
    assert f["status"] == "warn"
    assert "statement_timeout = 1000 ms" in f["detail"] and "lock_timeout = 100 ms" in f["detail"]


def test_dead_tuples_and_gin_pending_list(healthy) -> None:
    """A table full of dead rows and a GIN pending list grown past 4 MB (autovacuum off, limit
    raised): both named, with what to do."""
    sql(
        healthy,
        "CREATE EXTENSION IF NOT EXISTS pgstattuple",
        "ALTER TABLE spans SET (autovacuum_enabled = false)",
        "ALTER TABLE traces SET (autovacuum_enabled = false)",
        "ALTER INDEX idx_spans_metadata_gin SET (gin_pending_list_limit = 65536)",
        "INSERT INTO traces (trace_id, workflow_id, execution_id, status) "
        "VALUES ('00000000-0000-0000-0000-0000000000aa', 'bulk', 'bulk-1', 'completed')",
    )
    with psycopg.connect(healthy, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO spans (trace_id, span_type, name, status, metadata)
               SELECT '00000000-0000-0000-0000-0000000000aa', 'other', 'bulk', 'completed',
                      jsonb_build_object('k' || (g % 50), md5(g::text), 'n', g, 'tag' || g, md5((g * 7)::text))
               FROM generate_series(1, 30000) AS g"""
        )
        conn.execute("DELETE FROM spans WHERE name = 'bulk' AND (metadata->>'n')::int % 4 <> 0")
        conn.execute("SELECT pg_stat_force_next_flush()")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # statistics reach the shared view within a moment
        f = by_name(healthy)
        if f["table:spans"]["status"] == "warn":
            break
        time.sleep(0.2)
    assert f["table:spans"]["status"] == "warn" and "dead tuples" in f["table:spans"]["detail"]
    assert "VACUUM (ANALYZE) spans" in f["table:spans"]["action"]
    sizes = f["table:spans"]["data"]["index_bytes_by_name"]
    assert (
        set(sizes) >= {"idx_spans_metadata_gin", "spans_pkey"}
        and "largest index" in f["table:spans"]["detail"]
    )
    assert (
        f["gin_pending_list"]["status"] == "warn"
        and "idx_spans_metadata_gin" in f["gin_pending_list"]["detail"]
    )


def test_read_only_and_safe_as_a_probe(healthy) -> None:
    """Works on a read-only database (a standby, a read-only role); a bad DSN is a clear failure
    that never shows the password."""
    dbname = psycopg.conninfo.conninfo_to_dict(healthy)["dbname"]
    sql(healthy, f"ALTER DATABASE {dbname} SET default_transaction_read_only = on")
    proc = doctor(healthy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = doctor("postgresql://someone:topsecret@127.0.0.1:1/nothing")
    assert bad.returncode == 2 and "FAIL  connection" in bad.stdout
    assert "topsecret" not in bad.stdout + bad.stderr
    findings = diagnose(healthy)
    assert exit_code(findings) == 0 and findings[0].name == "connection"


def test_missing_tables_and_schema_option(make_database) -> None:
    dsn = make_database()
    install_schema(dsn, schema="otel")
    assert doctor(dsn).returncode == 2  # public has no tables
    proc = doctor(dsn, "--schema", "otel")
    assert proc.returncode == 0 and "schema otel" in proc.stdout  # a fresh install is healthy
