"""The retention routine (sql/007, ``retention.sweep``, ``otel-pg-cleanup``) on a small dataset
that covers every status, per-user retention, stale and live running traces, and locked rows."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry import trace as trace_api
from opentelemetry.trace import Status, StatusCode
from psycopg.conninfo import make_conninfo

from otel_pg_exporter import PostgresLogExporter, PostgresSpanExporter, install_schema, trace_uuid
from otel_pg_exporter.store.retention import sweep
from tests.helpers.support import Capture

DAY = timedelta(days=1)
MS = 1_000_000


def _ns(delta: timedelta) -> int:
    return time.time_ns() - int(delta.total_seconds() * 1e9)


class Dataset:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.capture = Capture()
        self.exporter = PostgresSpanExporter(dsn, spool_dir="off", user_settings=False)
        self.expected: dict[str, set[uuid.UUID]] = {}
        self.kept: set[uuid.UUID] = set()

    def user(self, retention_days: Any) -> uuid.UUID:
        uid = uuid.uuid4()
        settings = {"observability": {"retention_days": retention_days}}
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO profiles (id, settings) VALUES (%s, %s)", (uid, json.dumps(settings)))
        return uid

    def trace(
        self,
        age: timedelta,
        expect: str | None,
        *,
        outcome: str = "ok",
        root: bool = True,
        user: uuid.UUID | None = None,
        activity: timedelta | None = None,
    ) -> uuid.UUID:
        tracer = self.capture.tracer
        t0 = _ns(age)
        attrs = {"user.id": str(user)} if user else {}
        top = tracer.start_span("root", start_time=t0, attributes=attrs)
        ctx = trace_api.set_span_in_context(top)
        chat = tracer.start_span(
            "chat", context=ctx, start_time=t0 + MS, attributes={"gen_ai.operation.name": "chat"}
        )
        chat.end(end_time=t0 + 2 * MS)
        if activity is not None:  # a long-running trace still receiving spans
            late = tracer.start_span("late step", context=ctx, start_time=_ns(activity))
            late.end(end_time=_ns(activity) + MS)
        if outcome == "failed":
            top.set_status(Status(StatusCode.ERROR, "boom"))
        elif outcome == "cancelled":
            top.set_attribute("error.type", "asyncio.CancelledError")
            top.set_status(Status(StatusCode.ERROR))
        top.end(end_time=t0 + 3 * MS)
        spans = self.capture.take()
        if not root:
            spans = [s for s in spans if s.name != "root"]
        assert self.exporter.export(spans).name == "SUCCESS"
        tid = trace_uuid(top.get_span_context().trace_id)
        if expect:
            self.expected.setdefault(expect, set()).add(tid)
        else:
            self.kept.add(tid)
        return tid

    def placeholders_only(self, age: timedelta, expect: str) -> uuid.UUID:
        logs = PostgresLogExporter(span_exporter=self.exporter)
        with self.capture.tracer.start_as_current_span("never exported", start_time=_ns(age)) as span:
            self.capture.logger.emit(
                event_name="gen_ai.user.message", body={"content": "hi"}, timestamp=_ns(age)
            )
        self.capture.take()
        assert logs.export(self.capture.take_logs()).name == "SUCCESS"
        logs.shutdown()
        tid = trace_uuid(span.get_span_context().trace_id)
        self.expected.setdefault(expect, set()).add(tid)
        return tid

    def close(self) -> None:
        self.exporter.shutdown()


def present(dsn: str) -> tuple[set[uuid.UUID], int]:
    with psycopg.connect(dsn) as conn:
        traces = {r[0] for r in conn.execute("SELECT trace_id FROM traces")}
        spans = conn.execute("SELECT count(*) FROM spans").fetchone()
    return traces, int(spans[0]) if spans else 0


@pytest.fixture
def dataset(make_database: Any) -> Any:
    dsn = make_database()
    install_schema(dsn)
    data = Dataset(dsn)
    short, long, bad = data.user(7), data.user(365), data.user("forever")
    data.trace(40 * DAY, "expired_completed")
    data.trace(20 * DAY, None)  # within the default 30 days
    data.trace(40 * DAY, "expired_failed", outcome="failed")
    data.trace(40 * DAY, "expired_cancelled", outcome="cancelled")
    data.trace(40 * DAY, "stale_running", root=False)  # its root never arrived
    data.trace(40 * DAY, None, root=False, activity=timedelta(hours=1))  # old, but still running
    data.trace(timedelta(hours=2), None, root=False)  # young and running
    data.placeholders_only(40 * DAY, "stale_pending")  # log records of a span that never came
    data.trace(10 * DAY, "expired_completed", user=short)  # 7-day retention
    data.trace(100 * DAY, None, user=long)  # 365-day retention
    data.trace(400 * DAY, "expired_completed", user=long)
    data.trace(40 * DAY, "expired_completed", user=bad)  # unusable setting: the default applies
    yield data
    data.close()


def test_sweep_covers_every_status_and_per_user_retention(dataset: Dataset) -> None:
    dsn = dataset.dsn
    before, spans_before = present(dsn)
    dry = sweep(dsn, default_days=30, grace=DAY, chunk=3, dry_run=True)
    assert present(dsn) == (before, spans_before)  # a dry run removes nothing
    assert {k: v["traces"] for k, v in dry.removed.items()} == {
        k: len(v) for k, v in dataset.expected.items()
    }

    report = sweep(dsn, default_days=30, grace=DAY, chunk=3)  # several chunks, cursor carried over
    assert report.removed == dry.removed and report.chunks > 2
    after, spans_after = present(dsn)
    gone = set().union(*dataset.expected.values())
    assert after == before - gone and dataset.kept <= after
    assert spans_before - spans_after == report.spans
    with psycopg.connect(dsn) as conn:
        run = conn.execute(
            "SELECT removed, chunks, finished_at FROM otel_retention_runs WHERE run_id = %s", (report.run_id,)
        ).fetchone()
    assert run is not None and run[0] == report.removed and run[1] == report.chunks and run[2] is not None
    again = sweep(dsn, default_days=30, grace=DAY)
    assert again.removed == {}  # idempotent


def test_rows_held_by_a_writer_are_skipped_not_waited_for(dataset: Dataset) -> None:
    dsn = dataset.dsn
    held = next(iter(dataset.expected["expired_failed"]))
    with psycopg.connect(dsn) as writer:  # an exporter in the middle of writing that trace
        writer.execute("SELECT 1 FROM traces WHERE trace_id = %s FOR UPDATE", (held,))
        started = time.monotonic()
        # a sweep that waited for the lock (no SKIP LOCKED) fails after 5 s instead of hanging CI
        bounded = make_conninfo(dsn, options="-c lock_timeout=5s")
        report = sweep(bounded, default_days=30, grace=DAY, chunk=2)
        assert time.monotonic() - started < 10
        assert "expired_failed" not in report.removed and held in present(dsn)[0]
    assert sweep(dsn, default_days=30, grace=DAY).removed == {"expired_failed": {"traces": 1, "spans": 2}}


def test_procedure_for_pg_cron_and_the_seed_function_unchanged(dataset: Dataset) -> None:
    dsn = dataset.dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        # the seed's function still deletes only completed traces, in one statement
        deleted = conn.execute("SELECT cleanup_old_traces(30)").fetchone()
        assert deleted == (len(dataset.expected["expired_completed"]),)
        conn.execute("CALL otel_retention_sweep(30, interval '1 day', 2)")
        run = conn.execute(
            "SELECT removed, finished_at FROM otel_retention_runs ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
    assert run is not None and run[1] is not None
    assert set(run[0]) == {
        "expired_completed",
        "expired_failed",
        "expired_cancelled",
        "stale_running",
        "stale_pending",
    }
    assert run[0]["expired_completed"]["traces"] == 1  # only the 7-day user's: the seed took the rest
    # what is left: the kept traces, minus the 100-day one of the 365-day user, which the seed's
    # function (no per-user retention) took
    remaining = present(dsn)[0]
    assert remaining <= dataset.kept and len(remaining) == len(dataset.kept) - 1


def test_cleanup_command(dataset: Dataset) -> None:
    bindir = Path(sys.executable).parent
    base = [str(bindir / "otel-pg-cleanup"), "--dsn", dataset.dsn, "--days", "30", "--grace-hours", "24"]
    dry = subprocess.run([*base, "--dry-run"], capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "would remove" in dry.stdout and "stale_running" in dry.stdout
    real = subprocess.run([*base, "--chunk", "4"], capture_output=True, text=True, timeout=60)
    assert real.returncode == 0, real.stderr
    total = sum(len(v) for v in dataset.expected.values())
    assert f"removed {total:,} traces" in real.stdout
    bad = subprocess.run([*base, "--days", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--days" in bad.stderr


def test_cleanup_max_chunks_stops_early_and_the_next_run_goes_on(dataset: Dataset) -> None:
    bindir = Path(sys.executable).parent
    base = [str(bindir / "otel-pg-cleanup"), "--dsn", dataset.dsn, "--days", "30", "--chunk", "2"]
    total = sum(len(v) for v in dataset.expected.values())
    first = subprocess.run([*base, "--max-chunks", "1"], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "in 1 chunks" in first.stdout
    left_after_first = len(present(dataset.dsn)[0])
    assert left_after_first > len(dataset.kept)  # one chunk of 2 traces cannot take all the expired ones
    rest = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert rest.returncode == 0, rest.stderr
    assert present(dataset.dsn)[0] == dataset.kept  # the second run took the rest
    removed_first = len(dataset.kept) + total - left_after_first
    assert 0 < removed_first < total and f"removed {total - removed_first:,} traces" in rest.stdout
