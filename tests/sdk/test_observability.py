"""Self-observability: stats(), OpenTelemetry metrics, state-change logging; configure()'s queue."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
import uuid

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_pg_exporter import PostgresSpanExporter
from tests.helpers.faults import TcpProxy
from tests.helpers.support import Capture


def _metric_points(reader: InMemoryMetricReader) -> dict[str, list]:
    data = reader.get_metrics_data()
    out: dict[str, list] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out[metric.name] = list(metric.data.data_points)
    return out


_READER: InMemoryMetricReader | None = None


@pytest.fixture
def reader() -> InMemoryMetricReader:
    """The application's metrics pipeline: one global MeterProvider per process (the API allows
    setting it once), read in memory; tests tell their exporter's points by its component name."""
    global _READER
    if _READER is None:
        from opentelemetry import metrics

        _READER = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))
    return _READER


def _points_of(reader: InMemoryMetricReader, exporter: PostgresSpanExporter) -> dict[str, list]:
    name = exporter.telemetry._attrs["otel.component.name"]
    return {
        metric: [p for p in points if p.attributes.get("otel.component.name") == name]
        for metric, points in _metric_points(reader).items()
    }


def test_counters_reach_stats_and_otel_metrics(db_dsn, tmp_path, caplog, reader) -> None:
    proxy = TcpProxy(db_dsn)
    capture = Capture()
    caplog.set_level(logging.WARNING, logger="otel_pg_exporter")
    exporter = PostgresSpanExporter(proxy.dsn, timeout_s=0.5, spool_dir=str(tmp_path), shutdown_timeout_s=30)
    try:
        with capture.tracer.start_as_current_span("n\x00ul"):  # one sanitized span
            pass
        assert exporter.export(capture.take()).name == "SUCCESS"
        proxy.cut()
        for _ in range(3):
            for _ in range(5):
                with capture.tracer.start_as_current_span("during outage"):
                    pass
            assert exporter.export(capture.take()).name == "SUCCESS"
        proxy.restore()
        exporter.shutdown()
    finally:
        proxy.close()
    stats = exporter.stats()
    assert stats["exported"] == 16 and stats["spooled"] == 15 and stats["replayed"] == 15
    assert stats["sanitized"] == 1 and stats["dropped"] == 0 and stats["retried"] >= 1
    assert stats["export_latency_ms"]["count"] == 4
    points = _points_of(reader, exporter)
    assert sum(p.value for p in points["otel.sdk.exporter.span.exported"]) == 16
    assert sum(p.value for p in points["otel_pg.exporter.span.spooled"]) == 15
    assert sum(p.value for p in points["otel_pg.exporter.span.replayed"]) == 15
    assert sum(p.value for p in points["otel_pg.exporter.span.sanitized"]) == 1
    assert sum(p.value for p in points["otel_pg.exporter.batch.retried"]) == stats["retried"]
    assert sum(p.count for p in points["otel.sdk.exporter.operation.duration"]) == 4
    exported = points["otel.sdk.exporter.span.exported"][0]
    assert exported.attributes["otel.component.type"] == "postgres_span_exporter"
    # each state change is logged once: lost (spooling), replay done, recovered — not per batch
    ours = [r.getMessage() for r in caplog.records if r.name == "otel_pg_exporter"]
    assert sum(m.startswith("otel-pg-exporter: database unreachable, spooling to") for m in ours) == 1, ours
    assert sum("replay done" in m for m in ours) == 1
    assert sum(" again (was: database unreachable" in m for m in ours) == 1, ours
    assert all("password" not in m for m in ours)


def test_drops_are_counted_by_reason(tmp_path) -> None:
    exporter = PostgresSpanExporter(
        "postgresql://u:pw-secret@127.0.0.1:1/none", timeout_s=0.3, spool_dir="off"
    )
    capture = Capture()
    with capture.tracer.start_as_current_span("lost"):
        pass
    exporter.export(capture.take())
    exporter.shutdown()
    assert exporter.stats()["dropped_by_reason"] == {"database_unreachable": 1}


def test_configure_applies_recommended_queue_settings(db_dsn, tmp_path) -> None:
    code = textwrap.dedent("""
        import otel_pg_exporter
        provider = otel_pg_exporter.configure()
        bsp = provider._active_span_processor._span_processors[-1]._batch_processor
        print(bsp._max_queue_size, bsp._schedule_delay_millis, bsp._max_export_batch_size)
        provider.shutdown()
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_BSP")}
    env.update({"OTEL_EXPORTER_POSTGRES_DSN": db_dsn, "OTEL_EXPORTER_POSTGRES_SPOOL_DIR": str(tmp_path)})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["8192", "1000", "512"], out.stderr
    env["OTEL_BSP_MAX_QUEUE_SIZE"] = "100"  # the SDK's own variable still wins
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["100", "1000", "100"], out.stderr  # batch capped to the queue
    del env["OTEL_BSP_MAX_QUEUE_SIZE"]
    chosen = code.replace(
        "configure()", 'configure(batch={"max_queue_size": 300, "schedule_delay_millis": 50})'
    )
    out = subprocess.run([sys.executable, "-c", chosen], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["300", "50", "300"], out.stderr  # batch= wins, batch capped to the queue


def test_configure_logs_false_adds_no_log_exporter(db_dsn, tmp_path) -> None:
    code = textwrap.dedent("""
        import otel_pg_exporter
        from opentelemetry._logs import get_logger_provider
        from opentelemetry.sdk._logs import LoggerProvider
        otel_pg_exporter.configure(logs={logs})
        lp = get_logger_provider()
        procs = lp._multi_log_record_processor._log_record_processors if isinstance(lp, LoggerProvider) else ()
        print(sum(type(getattr(p, "_exporter", None) or getattr(getattr(p, "_batch_processor", None), "_exporter", None)).__name__
                  == "PostgresLogExporter" for p in procs))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"OTEL_EXPORTER_POSTGRES_DSN": db_dsn, "OTEL_EXPORTER_POSTGRES_SPOOL_DIR": str(tmp_path)})
    for logs, expected in (("True", "1"), ("False", "0")):
        out = subprocess.run(
            [sys.executable, "-c", code.replace("{logs}", logs)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.stdout.split() == [expected], out.stderr


def test_spool_directories_are_per_destination(db_dsn, tmp_path) -> None:
    a = PostgresSpanExporter(db_dsn, spool_dir=str(tmp_path))
    b = PostgresSpanExporter(f"postgresql://other@127.0.0.1:5432/{uuid.uuid4().hex}", spool_dir=str(tmp_path))
    try:
        assert a.spool is not None and b.spool is not None
        assert a.spool.directory != b.spool.directory
        assert a.spool.directory.parent == b.spool.directory.parent == tmp_path
    finally:
        a.shutdown()
        b.shutdown()


def test_drop_reasons_and_degraded_spans_reach_stats_and_metrics(make_database, tmp_path, reader) -> None:
    """Each way of losing (or thinning) a span is counted under its own reason, in stats() and as
    otel_pg.exporter.span.dropped{error.type=...}: refused by the database, spool unwritable."""
    import psycopg

    from otel_pg_exporter import install_schema

    dsn = make_database()
    install_schema(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE spans ADD CONSTRAINT no_deadly CHECK (name <> 'deadly')")
        conn.execute("ALTER TABLE spans ADD CONSTRAINT no_poison CHECK (NOT inputs::text LIKE '%poison%')")
    capture = Capture()
    for name, value in (("deadly", "ok"), ("fine", "poison"), ("fine", "ok")):
        with capture.tracer.start_as_current_span(name, attributes={"input.value": value}):
            pass
    exporter = PostgresSpanExporter(dsn, spool_dir="off")
    assert exporter.export(capture.take()).name == "SUCCESS"
    exporter.shutdown()
    stats = exporter.stats()
    assert stats["dropped_by_reason"] == {"rejected_by_database": 1} and stats["degraded"] == 1
    points = _points_of(reader, exporter)
    dropped = {p.attributes.get("error.type"): p.value for p in points["otel_pg.exporter.span.dropped"]}
    assert dropped == {"rejected_by_database": 1}
    assert sum(p.value for p in points["otel_pg.exporter.span.degraded"]) == 1

    # a spool that breaks after start (its directory replaced by a file: every write fails)
    lost = PostgresSpanExporter("postgresql://u@127.0.0.1:1/none", timeout_s=0.3, spool_dir=str(tmp_path))
    assert lost.spool is not None
    shutil.rmtree(lost.spool.directory)
    lost.spool.directory.write_text("not a directory any more")
    with capture.tracer.start_as_current_span("cannot be spooled"):
        pass
    assert lost.export(capture.take()).name == "FAILURE"
    lost.shutdown()
    assert lost.stats()["dropped_by_reason"] == {"spool_error": 1}
    dropped = {
        p.attributes.get("error.type"): p.value
        for p in _points_of(reader, lost)["otel_pg.exporter.span.dropped"]
    }
    assert dropped == {"spool_error": 1}


def test_an_unusable_spool_directory_does_not_stop_the_application(tmp_path, caplog) -> None:
    """A read-only or broken volume: the exporter starts without a spool and says so once."""
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("a file where the spool directory should be")
    caplog.set_level(logging.ERROR, logger="otel_pg_exporter")
    exporter = PostgresSpanExporter(
        "postgresql://u@127.0.0.1:1/none", timeout_s=0.3, spool_dir=str(not_a_dir / "spool")
    )
    assert exporter.spool is None and exporter.stats()["spool_unavailable"] == 1
    assert "is not usable" in caplog.text and "running without a spool" in caplog.text
    capture = Capture()
    with capture.tracer.start_as_current_span("lost, and counted"):
        pass
    assert exporter.export(capture.take()).name == "FAILURE"
    exporter.shutdown()
    assert exporter.stats()["dropped_by_reason"] == {"database_unreachable": 1}
