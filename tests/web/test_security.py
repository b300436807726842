"""Configurable SQL identifiers (the schema name) are always quoted; unusable names are refused."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from otel_pg_exporter import ConfigurationError, PostgresSpanExporter, install_schema, span_uuid
from tests.helpers.support import Capture, chat_attributes

HOSTILE = 'otel"; DROP TABLE public.traces; --'


def _count(dsn: str, schema: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_hostile_schema_name_is_quoted_everywhere(make_database: Any, capture: Capture) -> None:
    dsn = make_database()
    install_schema(dsn)  # the public tables: they must survive the hostile name
    result = install_schema(dsn, schema=HOSTILE)
    assert "001_initial_schema.sql" in result.applied  # a fresh schema of its own
    with psycopg.connect(dsn) as conn:
        names = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")}
    assert HOSTILE in names
    exporter = PostgresSpanExporter(dsn, schema=HOSTILE, spool_dir="off")
    try:
        with capture.tracer.start_as_current_span("in the hostile schema") as span:
            pass
        assert exporter.export(capture.take()).name == "SUCCESS"
        assert exporter.stats()["failed_batches"] == 0
    finally:
        exporter.shutdown()
    assert _count(dsn, HOSTILE, "spans") == 1 and _count(dsn, HOSTILE, "traces") == 1
    assert (
        _count(dsn, "public", "spans") == 0 and _count(dsn, "public", "traces") == 0
    )  # still there, untouched
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(HOSTILE)))
        row = conn.execute(
            "SELECT name FROM spans WHERE span_id = %s",
            (span_uuid(span.get_span_context().trace_id, span.get_span_context().span_id),),
        ).fetchone()
    assert row == ("in the hostile schema",)


def test_the_cli_quotes_the_schema_too(make_database: Any) -> None:
    dsn = make_database()
    bindir = Path(sys.executable).parent
    for args in (["--schema", HOSTILE], ["--schema", HOSTILE, "--status"]):
        proc = subprocess.run(
            [str(bindir / "otel-pg-install-schema"), "--dsn", dsn, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
    assert "applied" in proc.stdout  # --status lists the migrations applied in that schema
    assert _count(dsn, HOSTILE, "traces") == 0


@pytest.mark.parametrize("name", ["", "x" * 64, "bad\x00name", "é" * 32])
def test_names_postgresql_would_truncate_or_cannot_hold_are_refused(db_dsn: str, name: str) -> None:
    with pytest.raises(ConfigurationError, match="schema"):
        PostgresSpanExporter(db_dsn, schema=name, spool_dir="off")
    with pytest.raises(ConfigurationError, match="schema"):
        install_schema(db_dsn, schema=name)


def test_cost_view_and_maintenance_tables_respect_rls(make_database: Any, capture: Capture) -> None:
    """Supabase's API roles read public views and tables: the daily-cost view must apply the traces
    and spans policies of the caller, and the maintenance tables must show nothing."""
    dsn = make_database()
    install_schema(dsn, rls=True)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for uid in (alice, bob):
            conn.execute("INSERT INTO profiles (id) VALUES (%s)", (uid,))
        conn.execute("INSERT INTO otel_budgets (scope, monthly_limit) VALUES ('all', 10)")
    exporter = PostgresSpanExporter(dsn, spool_dir="off")
    try:
        for uid in (alice, bob):
            with capture.tracer.start_as_current_span("root", attributes={"user.id": str(uid)}):
                with capture.tracer.start_as_current_span(
                    "chat",
                    attributes=chat_attributes(1000),
                ):
                    pass
        assert exporter.export(capture.take()).name == "SUCCESS"
    finally:
        exporter.shutdown()
    role = f"api_user_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role))
            )
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            conn.execute("SELECT set_config('request.jwt.claim.sub', %s, false)", (str(alice),))
            users = {r[0] for r in conn.execute("SELECT user_id FROM otel_daily_costs")}
            assert users == {alice}  # not bob's
            assert conn.execute("SELECT count(*) FROM otel_budgets").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM otel_retention_runs").fetchone() == (0,)
            conn.execute("RESET ROLE")
        finally:
            conn.execute("RESET ROLE")
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
