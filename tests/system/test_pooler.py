"""Through a real PgBouncer in transaction mode (Debian's pgbouncer, started here on a free port):
the installer, several exporters sharing traces, prepared statements off and on, the log exporter,
per-user settings and retention. What works behind which pooler mode is in the README."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import pytest

from otel_pg_exporter import PostgresLogExporter, PostgresSpanExporter, install_schema, trace_uuid
from otel_pg_exporter.schema.migrations import schema_status
from otel_pg_exporter.store.retention import sweep
from tests.helpers.pooler import PgBouncer
from tests.helpers.scenarios import agent_trace
from tests.helpers.support import Capture, chat_attributes, fetch_spans, fetch_trace, messages


@pytest.fixture
def direct(make_database) -> str:
    return make_database()


@pytest.fixture
def bouncer(direct: str) -> Iterator[PgBouncer]:
    pb = PgBouncer(direct, pool_mode="transaction", pool_size=4)
    yield pb
    pb.close()


def _server_backends(direct: str) -> int:
    """How many server connections PgBouncer holds to this database (proof the pooler is in use)."""
    with psycopg.connect(direct) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]


def test_installers_at_once_through_the_pooler(direct, bouncer) -> None:
    """No session state: three installers at once through transaction pooling apply every
    migration exactly once; a second round changes nothing; --status reads through it too."""
    errors: list[BaseException] = []
    results = []

    def install() -> None:
        try:
            results.append(install_schema(bouncer.dsn(), rls=True))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=install) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    applied = sorted(name for r in results for name in r.applied)
    assert applied == sorted(m.filename for m in _all_migrations())  # each once, across the three
    with psycopg.connect(direct) as conn:
        rows = conn.execute("SELECT version, count(*) FROM otel_pg_schema_migrations GROUP BY 1").fetchall()
    assert rows and all(n == 1 for _, n in rows)
    again = install_schema(bouncer.dsn(), rls=True)
    assert not again.changed
    assert {s.state for s in schema_status(bouncer.dsn())} == {"applied"}
    # the lock is transaction-scoped: none is left behind on a pooled server connection
    with psycopg.connect(direct) as conn:
        assert conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0] == 0


def _all_migrations():
    from otel_pg_exporter.schema.migrations import load_migrations

    return load_migrations()


def test_an_installer_into_a_schema_through_the_pooler(direct, bouncer) -> None:
    install_schema(bouncer.dsn(), schema="tenant_a")
    exporter = PostgresSpanExporter(
        bouncer.dsn(), schema="tenant_a", prepared_statements=False, spool_dir="off"
    )
    capture = Capture()
    with capture.tracer.start_as_current_span("in tenant_a") as span:
        pass
    assert exporter.export(capture.take()).name == "SUCCESS"
    exporter.shutdown()
    with psycopg.connect(direct) as conn:
        row = conn.execute(
            "SELECT count(*) FROM tenant_a.spans WHERE trace_id = %s",
            (trace_uuid(span.get_span_context().trace_id),),
        ).fetchone()
        public = conn.execute("SELECT to_regclass('public.spans')").fetchone()[0]
    assert row[0] == 1 and public is None


@pytest.mark.parametrize("prepared", [False, True], ids=["prepared-off", "prepared-on"])
def test_exporters_sharing_traces_through_the_pooler(direct, prepared, caplog) -> None:
    """Three exporters at once, every span of 15 traces sent by each (shuffled, in small batches):
    totals exact, nothing lost. With prepared statements on (the default), the exporters' prepared
    statements meet on the pooler's one server connection and it refuses them; each exporter that
    meets that turns them off, says so once, and loses nothing."""
    bouncer = PgBouncer(direct, pool_mode="transaction", pool_size=1 if prepared else 4)
    try:
        _exporters_sharing_traces(direct, bouncer, prepared, caplog)
    finally:
        bouncer.close()


def _exporters_sharing_traces(direct: str, bouncer: PgBouncer, prepared: bool, caplog) -> None:
    install_schema(direct)
    capture = Capture()
    tids = [agent_trace(capture, calls=3, name=f"p{n}") for n in range(15)]
    spans = capture.take()
    workers = 3
    caplog.set_level(logging.WARNING, logger="otel_pg_exporter")
    exporters = [
        # one pooled connection each: every statement runs often enough on it to get prepared
        PostgresSpanExporter(
            bouncer.dsn(), prepared_statements=prepared, spool_dir="off", timeout_s=30, pool_max_size=1
        )
        for _ in range(workers)
    ]
    rng = random.Random(11)
    plans = []
    for _ in range(workers):
        mine = spans[:]
        rng.shuffle(mine)
        plans.append([mine[i : i + 4] for i in range(0, len(mine), 4)])
    results: list[str] = []
    barrier = threading.Barrier(workers)

    def run(exporter: PostgresSpanExporter, plan: list) -> None:
        barrier.wait()
        results.extend(exporter.export(batch).name for batch in plan)

    threads = [threading.Thread(target=run, args=(e, p)) for e, p in zip(exporters, plans, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert _server_backends(direct) <= 4  # the pooler's pool, not one connection per client
    stats = [e.stats() for e in exporters]
    for e in exporters:
        e.shutdown()
    assert results and set(results) == {"SUCCESS"}
    assert sum(s["dropped"] for s in stats) == 0 and sum(s["failed_batches"] for s in stats) == 0
    for tid in tids:
        trace = fetch_trace(direct, tid)
        assert trace["status"] == "completed" and trace["total_cost"] == Decimal("0.006")
        assert trace["total_tokens"] == {"input": 60, "output": 6, "total": 66}
        assert len(fetch_spans(direct, tid)) == 5
    disabled = sum(s.get("prepared_statements_disabled", 0) for s in stats)
    notes = [r for r in caplog.records if "refused a prepared statement" in r.getMessage()]
    if prepared:
        assert disabled >= 1 and len(notes) == disabled  # once per exporter that met it, at most
    else:
        assert disabled == 0 and not notes


def test_log_exporter_user_settings_and_retention_through_the_pooler(direct, bouncer) -> None:
    install_schema(direct)
    uid = "00000000-0000-4000-8000-00000000b0b0"
    with psycopg.connect(direct, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO profiles (id, settings) VALUES (%s, %s)",
            (uid, json.dumps({"observability": {"capture_content": False}})),
        )
    spans_exporter = PostgresSpanExporter(bouncer.dsn(), prepared_statements=False, spool_dir="off")
    logs_exporter = PostgresLogExporter(span_exporter=spans_exporter)
    capture = Capture()
    # 1. content in a log record, merged into its span's row
    with capture.tracer.start_as_current_span("chat", attributes=chat_attributes(5, 2)) as chat:
        capture.logger.emit(
            event_name="gen_ai.user.message",
            body={"content": "what is in the log"},
            attributes={"gen_ai.system": "openai"},
        )
    # 2. a user who does not allow content: the settings lookup runs through the pooler
    with capture.tracer.start_as_current_span("run", attributes={"user.id": uid}) as private_root:
        with capture.tracer.start_as_current_span(
            "chat",
            attributes=chat_attributes(5, 2, **{"gen_ai.input.messages": messages(("user", "secret"))}),
        ):
            pass
    assert spans_exporter.export(capture.take()).name == "SUCCESS"
    assert logs_exporter.export(capture.take_logs()).name == "SUCCESS"
    stats = spans_exporter.stats()
    logs_exporter.shutdown()
    spans_exporter.shutdown()
    logged = fetch_spans(direct, chat.get_span_context().trace_id)["chat"]
    assert logged["inputs"]["messages"][0]["content"] == "what is in the log"
    private = fetch_spans(direct, private_root.get_span_context().trace_id)["chat"]
    assert "messages" not in private["inputs"]
    assert stats["user_settings_queries"] >= 1 and stats["user_settings_failures"] == 0
    # 3. retention: chunked sweep through the pooler removes what expired, keeps the rest
    with psycopg.connect(direct, autocommit=True) as conn:
        old = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=100)
        conn.execute(
            "UPDATE traces SET started_at = %s WHERE trace_id = %s",
            (old, trace_uuid(chat.get_span_context().trace_id)),
        )
    report = sweep(bouncer.dsn(), default_days=30, chunk=1)
    assert report.removed == {"expired_completed": {"traces": 1, "spans": 1}}
    assert fetch_trace(direct, chat.get_span_context().trace_id) is None
    assert fetch_trace(direct, private_root.get_span_context().trace_id) is not None


def test_session_mode_keeps_prepared_statements_and_session_settings(direct) -> None:
    """Session pooling hands one server connection to one client for its whole session: prepared
    statements stay on, and the commands' session search_path (--schema) is safe there."""
    from otel_pg_exporter.query.report import build_report

    bouncer = PgBouncer(direct, pool_mode="session", pool_size=4)
    try:
        install_schema(bouncer.dsn(), schema="tenant_s")
        exporter = PostgresSpanExporter(bouncer.dsn(), schema="tenant_s", spool_dir="off", pool_max_size=1)
        capture = Capture()
        for _ in range(12):  # enough executions for psycopg to prepare the writer's statements
            with capture.tracer.start_as_current_span("chat", attributes=chat_attributes(10, 5)):
                pass
            assert exporter.export(capture.take()).name == "SUCCESS"
        stats = exporter.stats()
        exporter.shutdown()
        assert stats["exported"] == 12 and stats.get("prepared_statements_disabled", 0) == 0
        report = build_report(bouncer.dsn(), days=1, horizon=1, schema="tenant_s")
        assert sum(r["calls"] for r in report["top_models"]) == 12
    finally:
        bouncer.close()
