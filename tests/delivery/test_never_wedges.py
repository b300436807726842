"""Ingest never wedges: refusals that will recur (a lock table too small for the batch, a statement
timeout) are split by trace, what the database refuses even alone is set aside in the quarantine,
and nothing stops the batches behind it — in process, through the gateway, across a restart, and
in the replay of the spool. The quarantine is shown (stats, /readyz, doctor) and replayed by
``otel-pg-spool`` once the cause is gone, exactly (no duplicate, totals right)."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from otel_pg_exporter import PostgresSpanExporter, install_schema, trace_uuid
from otel_pg_exporter.commands.cli import spool_main
from otel_pg_exporter.delivery import Outcome
from otel_pg_exporter.failures import Failure, classify
from otel_pg_exporter.query.doctor import DoctorOptions, diagnose
from otel_pg_exporter.web.gateway.app import Gateway, create_app
from tests.helpers.faults import TcpProxy, ThrowawayPostgres, wait_for
from tests.helpers.support import Capture, Served, chat_attributes, count_spans

STUCK = "stuck step"
#: A trigger that makes one span name slow: under a statement timeout its trace cannot be written.
STALL_SQL = f"""
CREATE FUNCTION test_stall() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.name = '{STUCK}' THEN PERFORM pg_sleep(%s); END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER test_stall BEFORE INSERT OR UPDATE ON spans FOR EACH ROW EXECUTE FUNCTION test_stall();
"""


def _one_span_traces(n: int, run_id: str) -> list[Any]:
    """``n`` traces of one span each, made by the SDK (a Collector burst: many traces, one request)."""
    capture = Capture()
    for _ in range(n):
        with capture.tracer.start_as_current_span("request", attributes={"run.id": run_id}):
            pass
    return capture.take()


def _runs(run_id: str, n: int, stuck_at: int | None = None) -> tuple[list[Any], list[int]]:
    """``n`` agent runs (root + a chat call with 10/5 tokens); run ``stuck_at`` also has the slow
    step, a chat call of 100/50 tokens."""
    capture = Capture()
    ids = []
    for i in range(n):
        with capture.tracer.start_as_current_span("agent run", attributes={"run.id": run_id}) as root:
            ids.append(root.get_span_context().trace_id)
            with capture.tracer.start_as_current_span(
                "chat", attributes={**chat_attributes(10, 5), "run.id": run_id}
            ):
                pass
            if i == stuck_at:
                with capture.tracer.start_as_current_span(
                    STUCK, attributes={**chat_attributes(100, 50), "run.id": run_id}
                ):
                    pass
    return capture.take(), ids


def _stalling_db(make_database: Callable[[], str], sleep_s: float = 1.0, timeout_ms: int = 300) -> str:
    dsn = make_database()
    install_schema(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(STALL_SQL % sleep_s)
        dbname = conn.info.dbname
        conn.execute(f'ALTER DATABASE "{dbname}" SET statement_timeout = {timeout_ms}')
    return dsn


def _unstall(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TRIGGER test_stall ON spans")


def _trace(dsn: str, trace_id: int) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT total_tokens, (SELECT count(*) FROM spans s WHERE s.trace_id = t.trace_id) "
            "FROM traces t WHERE trace_id = %s",
            (trace_uuid(trace_id),),
        ).fetchone()
    return {"tokens": row[0], "spans": row[1]}


@pytest.fixture(scope="module")
def small_lock_table() -> Iterator[ThrowawayPostgres]:
    """A server whose lock table holds 10 × 42 = 420 locks (the minimum setting) plus the shared
    memory's slack: 500 advisory locks fit in one transaction, 1,000 do not."""
    server = ThrowawayPostgres({"max_locks_per_transaction": "10", "max_connections": "20"})
    try:
        install_schema(server.dsn)
        yield server
    finally:
        server.close()


def test_the_sqlstate_table_tells_down_from_refused() -> None:
    from psycopg import errors

    assert classify(errors.OutOfMemory()) is Failure.REFUSED  # 53200: out of shared memory (locks)
    assert classify(errors.QueryCanceled()) is Failure.REFUSED  # 57014: statement timeout
    assert classify(errors.ProgramLimitExceeded()) is Failure.REFUSED
    assert classify(errors.AdminShutdown()) is Failure.DOWN
    assert classify(errors.SerializationFailure()) is Failure.RETRY
    assert classify(errors.UndefinedTable()) is Failure.NOT_READY
    assert classify(errors.CheckViolation()) is Failure.BAD_ROW
    assert classify(psycopg.OperationalError("connection lost")) is Failure.DOWN  # no SQLSTATE
    assert classify(TypeError("ours")) is Failure.BUG


def test_more_traces_than_the_lock_table_holds_are_stored_in_full(small_lock_table, tmp_path) -> None:
    dsn = small_lock_table.dsn
    run_id = uuid.uuid4().hex
    spans = _one_span_traces(3000, run_id)
    exporter = PostgresSpanExporter(dsn, spool_dir=str(tmp_path), timeout_s=20)
    try:
        delivered = exporter.export_with_outcome(spans)
        assert delivered.outcome is Outcome.STORED and delivered.refused == 0
        assert count_spans(dsn, run_id) == 3000
        stats = exporter.stats()
        assert stats["quarantined"] == 0 and stats["spooled"] == 0 and stats["retried"] == 0
        assert stats["split_batches"] == 0  # transactions of 500 traces fit: chunking was enough
        after = uuid.uuid4().hex
        assert exporter.export_with_outcome(_one_span_traces(10, after)).outcome is Outcome.STORED
        assert count_spans(dsn, after) == 10
    finally:
        exporter.shutdown()
    # a bound the lock table cannot hold: "out of shared memory" splits the chunk, never "down"
    unbounded = PostgresSpanExporter(dsn, spool_dir=str(tmp_path), max_traces_per_transaction=100_000)
    try:
        again = uuid.uuid4().hex
        delivered = unbounded.export_with_outcome(_one_span_traces(3000, again))
        assert delivered.outcome is Outcome.STORED and delivered.refused == 0
        stats = unbounded.stats()
        assert count_spans(dsn, again) == 3000 and stats["split_batches"] >= 2 and stats["retried"] == 0
        assert stats["spooled"] == 0 and stats["quarantined"] == 0
    finally:
        unbounded.shutdown()


def test_the_gateway_stores_a_collector_burst_on_a_small_lock_table(small_lock_table, tmp_path) -> None:
    run_id = uuid.uuid4().hex
    body = encode_spans(_one_span_traces(3000, run_id)).SerializeToString()
    gateway = Gateway(small_lock_table.dsn, spool_dir=str(tmp_path), timeout_s=20)
    served = Served(create_app(gateway))
    try:
        request = urllib.request.Request(
            f"{served.url}/v1/traces",
            data=body,
            method="POST",
            headers={"Content-Type": "application/x-protobuf"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200 and response.read() == b""  # no partial success: all stored
        assert count_spans(small_lock_table.dsn, run_id) == 3000
        assert gateway.stats()["exporter"]["quarantine_spans"] == 0
    finally:
        served.close()


def test_a_batch_slower_than_the_statement_timeout_is_split_and_stored(make_database, tmp_path) -> None:
    dsn = make_database()
    install_schema(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET statement_timeout = 300')
    run_id = uuid.uuid4().hex
    spans = _one_span_traces(6000, run_id)
    exporter = PostgresSpanExporter(
        dsn, spool_dir=str(tmp_path), timeout_s=30, max_traces_per_transaction=100_000
    )
    try:
        delivered = exporter.export_with_outcome(spans)
        assert delivered.outcome is Outcome.STORED and delivered.refused == 0
        assert count_spans(dsn, run_id) == 6000
        stats = exporter.stats()
        assert stats["split_batches"] >= 1 and stats["spooled"] == 0 and stats["quarantined"] == 0
    finally:
        exporter.shutdown()


def test_a_trace_refused_alone_is_quarantined_and_replayed_once_fixed(
    make_database, tmp_path, capsys
) -> None:
    dsn = _stalling_db(make_database)
    run_id = uuid.uuid4().hex
    spans, ids = _runs(run_id, 20, stuck_at=7)
    exporter = PostgresSpanExporter(dsn, spool_dir=str(tmp_path), timeout_s=20)
    try:
        delivered = exporter.export_with_outcome(spans)
        assert delivered.outcome is Outcome.STORED and delivered.refused == 1
        assert "statement timeout" in (delivered.reason or "")
        assert count_spans(dsn, run_id) == 40  # 20 roots and 20 chats; only the stuck step is set aside
        # the next batch is not held behind the refused one
        nxt = uuid.uuid4().hex
        assert exporter.export_with_outcome(_runs(nxt, 3)[0]).outcome is Outcome.STORED
        assert count_spans(dsn, nxt) == 6
        stats = exporter.stats()
        assert stats["quarantined"] == 1 and stats["quarantine_spans"] == 1 and stats["state"] == "ok"
    finally:
        exporter.shutdown()
    # a restart does not wedge on it: the quarantine is never replayed on its own
    restarted = PostgresSpanExporter(dsn, spool_dir=str(tmp_path), timeout_s=20)
    try:
        later = uuid.uuid4().hex
        assert restarted.export_with_outcome(_runs(later, 2)[0]).outcome is Outcome.STORED
        assert count_spans(dsn, later) == 4 and restarted.stats()["quarantine_spans"] == 1
    finally:
        restarted.shutdown()
    found = {f.name: f for f in diagnose(dsn, options=DoctorOptions(spool_dir=str(tmp_path)))}
    assert found["quarantine"].status == "warn" and found["quarantine"].data["spans"] == 1
    assert "statement timeout" in found["quarantine"].detail
    assert spool_main(["list", "--dsn", dsn, "--spool-dir", str(tmp_path)]) == 0
    assert "statement timeout" in capsys.readouterr().out
    # the cause removed, the quarantine is replayed once, exactly
    _unstall(dsn)
    assert spool_main(["replay", "--dsn", dsn, "--spool-dir", str(tmp_path)]) == 0
    assert "stored 1 spans; refused again 0" in capsys.readouterr().out
    stuck = _trace(dsn, ids[7])
    assert stuck["spans"] == 3 and stuck["tokens"]["input"] == 110 and stuck["tokens"]["output"] == 55
    assert _trace(dsn, ids[6]) == {"tokens": {"input": 10, "output": 5, "total": 15}, "spans": 2}
    assert spool_main(["replay", "--dsn", dsn, "--spool-dir", str(tmp_path)]) == 0  # nothing left: no double
    assert "stored 0 spans" in capsys.readouterr().out
    assert _trace(dsn, ids[7])["spans"] == 3


def test_the_gateway_reports_refused_spans_as_partial_success(make_database, tmp_path) -> None:
    dsn = _stalling_db(make_database)
    run_id = uuid.uuid4().hex
    spans, _ = _runs(run_id, 6, stuck_at=2)
    gateway = Gateway(dsn, spool_dir=str(tmp_path), timeout_s=20, token="t0ken")
    served = Served(create_app(gateway), token="t0ken")
    try:
        request = urllib.request.Request(
            f"{served.url}/v1/traces",
            data=encode_spans(spans).SerializeToString(),
            method="POST",
            headers={"Content-Type": "application/x-protobuf", "Authorization": "Bearer t0ken"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

            answer = ExportTraceServiceResponse.FromString(response.read())
        assert answer.partial_success.rejected_spans == 1
        assert "refused by the database" in answer.partial_success.error_message
        assert count_spans(dsn, run_id) == 12
        stats = gateway.stats()
        assert stats["spans_rejected"] == 1 and stats["spans_accepted"] == 12
        assert stats["exporter"]["quarantine_spans"] == 1
        ready = urllib.request.Request(f"{served.url}/readyz", headers={"Authorization": "Bearer t0ken"})
        with urllib.request.urlopen(ready, timeout=10) as response:
            detail = json.loads(response.read())
        assert (
            detail["ready"] is True and detail["quarantine_spans"] == 1 and detail["replay_stalled"] is False
        )
    finally:
        served.close()


def test_the_spool_replay_sets_aside_what_is_refused_and_goes_on(make_database, tmp_path: Path) -> None:
    dsn = _stalling_db(make_database)
    proxy = TcpProxy(dsn)
    exporter = PostgresSpanExporter(proxy.dsn, spool_dir=str(tmp_path), timeout_s=3, shutdown_timeout_s=30)
    try:
        run_id = uuid.uuid4().hex
        proxy.cut()
        spans, _ = _runs(run_id, 10, stuck_at=4)
        assert exporter.export_with_outcome(spans).outcome is Outcome.SPOOLED
        proxy.restore()
        assert wait_for(
            lambda: count_spans(dsn, run_id) == 20, 60
        )  # the stuck step set aside, the rest replayed
        assert wait_for(lambda: exporter.stats()["quarantine_spans"] == 1, 30)
        assert wait_for(
            lambda: not list(tmp_path.rglob("*.spool")) or exporter.stats()["spool_bytes"] == 0, 30
        )
        later = uuid.uuid4().hex
        assert exporter.export_with_outcome(_runs(later, 2)[0]).outcome is Outcome.STORED
        assert count_spans(dsn, later) == 4
    finally:
        exporter.shutdown()
        proxy.close()


def test_a_record_that_keeps_timing_out_does_not_hold_the_line(make_database, tmp_path: Path) -> None:
    """Our own watchdog cuts the stuck trace's transaction every time (no statement timeout on this
    database): a connection-class failure while the database answers. The replayer tries it a few
    times, then splits it and sets aside only what still fails; new batches are stored meanwhile."""
    dsn = make_database()
    install_schema(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(STALL_SQL % 30)
        # a backend whose client is gone stops at once (and frees its locks) instead of sleeping on
        conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET client_connection_check_interval = 100')
    exporter = PostgresSpanExporter(dsn, spool_dir=str(tmp_path), timeout_s=1, shutdown_timeout_s=5)
    try:
        run_id = uuid.uuid4().hex
        spans, _ = _runs(run_id, 8, stuck_at=3)
        first = exporter.export_with_outcome(spans)
        assert first.outcome is Outcome.SPOOLED  # cut by the watchdog until the export timeout
        other = uuid.uuid4().hex
        assert exporter.export_with_outcome(_runs(other, 2)[0]).durable
        assert wait_for(lambda: count_spans(dsn, other) == 4, 30)  # not held behind the stuck record
        assert wait_for(lambda: exporter.stats()["quarantined"] >= 1, 60)
        assert wait_for(lambda: exporter.stats()["spool_bytes"] == 0, 30)
        # nothing lost, nothing doubled: the record's 17 spans are stored or set aside, and the
        # split stored the good traces it reached within its deadline
        held = exporter.stats()["quarantine_spans"]
        assert count_spans(dsn, run_id) + held == 17 and 3 <= held < 17
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM spans WHERE name = %s", (STUCK,)).fetchone()[0] == 0
    finally:
        exporter.shutdown()


def test_quarantine_counts_are_reused_only_while_a_segment_keeps_its_size(db_dsn, tmp_path: Path) -> None:
    from otel_pg_exporter.delivery.spool import QUARANTINE, Spool, summarize

    quarantine = Spool(tmp_path, db_dsn, 1 << 20, folder=QUARANTINE)
    exporter = PostgresSpanExporter(db_dsn, spool_dir="off")
    try:
        encoded = exporter.encode(_runs(uuid.uuid4().hex, 2)[0])
    finally:
        exporter.shutdown()
    quarantine.append(encoded[:3], "first")
    counted: dict = {}
    assert summarize(quarantine.directory, counted=counted).spans == 3 and len(counted) == 1
    quarantine.append(encoded[3:], "second")  # same (active) segment, grown: read again
    assert summarize(quarantine.directory, counted=counted).spans == len(encoded)
    quarantine.seal()
    (segment,) = quarantine.directory.glob("*.spool")
    assert counted[segment.name][2] == len(encoded)
    segment.unlink()  # replayed or dropped: forgotten
    assert summarize(quarantine.directory, counted=counted).spans == 0 and counted == {}
