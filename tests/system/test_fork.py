"""A process that forks after the exporter exists (gunicorn with --preload, multiprocessing): the
child must use connections of its own, and its exit must not break the parent's."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg
import pytest

from otel_pg_exporter import PostgresSpanExporter
from tests.helpers.support import Capture, fetch_trace

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _backends(dsn: str, app: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_forked_child_exports_on_its_own_connections(db_dsn: str, tmp_path: Path) -> None:
    app = f"fork-test-{uuid.uuid4().hex[:8]}"
    exporter = PostgresSpanExporter(db_dsn, spool_dir=str(tmp_path), application_name=app, pool_max_size=1)
    capture = Capture()
    try:
        with capture.tracer.start_as_current_span("parent before fork") as before:
            pass
        assert exporter.export(capture.take()).name == "SUCCESS"
        assert _backends(db_dsn, app) == 1
        pid = os.fork()
        if pid == 0:  # the child: export, check it has its own backend, shut down as a worker does
            code = 1
            try:
                with capture.tracer.start_as_current_span("child after fork"):
                    pass
                ok = exporter.export(capture.take()).name == "SUCCESS"
                own_backend = _backends(db_dsn, app) == 2  # the parent's and ours
                exporter.shutdown()
                code = 0 if ok and own_backend else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        with capture.tracer.start_as_current_span("parent after fork") as after:
            pass
        assert exporter.export(capture.take()).name == "SUCCESS"
        stats = exporter.stats()
        assert stats["retried"] == 0 and stats["failed_batches"] == 0  # its connection survived the child
    finally:
        exporter.shutdown()
    assert fetch_trace(db_dsn, before.get_span_context().trace_id) is not None
    assert fetch_trace(db_dsn, after.get_span_context().trace_id) is not None
    with psycopg.connect(db_dsn) as conn:
        child = conn.execute("SELECT count(*) FROM spans WHERE name = 'child after fork'").fetchone()
    assert child is not None and child[0] >= 1
