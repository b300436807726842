"""Nothing lost: outages, restarts, crashes, corrupted and full spools. Each test counts rows.

The faults are the tests' own: a TCP proxy between exporter and server (cut / restore) or a
throwaway server started with the machine's pg_ctl. The shared PostgreSQL is never stopped.
``OTEL_PG_FAULT_OUTAGE_S`` sets the short outage (default 3 s); the 30 s one runs too, in CI as well.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from otel_pg_exporter import PostgresSpanExporter, install_schema
from otel_pg_exporter.delivery.spool import Spool, iter_records
from tests.helpers.faults import TcpProxy, ThrowawayPostgres, wait_for
from tests.helpers.support import Capture

HELPERS = Path(__file__).resolve().parents[1] / "helpers"
OUTAGE_S = float(os.environ.get("OTEL_PG_FAULT_OUTAGE_S", "3"))
OUTAGES = [pytest.param(OUTAGE_S, id="short"), pytest.param(30.0, id="30s")]


def stored(dsn: str, run_id: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT count(*) FROM spans WHERE status <> 'pending' AND metadata->'attributes'->>'run.id' = %s",
            (run_id,),
        ).fetchone()[0]


def _provider(exporter: SpanExporter) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "fault-test"}))
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=100, max_queue_size=50_000)
    )
    return provider


def stream(provider: TracerProvider, run_id: str, seconds: float, pairs_per_s: int = 200) -> int:
    """A steady stream of root+child pairs for ``seconds``; returns the number of spans made."""
    tracer = provider.get_tracer("fault-test")
    made = 0
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        if made / 2 > elapsed * pairs_per_s:
            time.sleep(0.005)
            continue
        with tracer.start_as_current_span("request", attributes={"run.id": run_id}):
            with tracer.start_as_current_span(
                "chat",
                attributes={
                    "run.id": run_id,
                    "gen_ai.operation.name": "chat",
                    "gen_ai.usage.input_tokens": 3,
                },
            ):
                pass
        made += 2
    return made


@pytest.fixture
def proxy(db_dsn: str):
    p = TcpProxy(db_dsn)
    yield p
    p.close()


@pytest.mark.parametrize("outage_s", OUTAGES)
def test_outage_in_the_middle_of_a_steady_stream(db_dsn, proxy, tmp_path, outage_s) -> None:
    run_id = uuid.uuid4().hex
    exporter = PostgresSpanExporter(proxy.dsn, timeout_s=1, spool_dir=str(tmp_path), shutdown_timeout_s=60)
    provider = _provider(exporter)
    made = stream(provider, run_id, 1.0)
    proxy.cut()
    made += stream(provider, run_id, outage_s)
    proxy.restore()
    made += stream(provider, run_id, 1.0)
    provider.shutdown()  # flushes the queue, then the exporter drains the spool
    stats = exporter.stats()
    assert stored(db_dsn, run_id) == made, (stats, sorted(p.name for p in tmp_path.rglob("*")))
    assert stats["spooled"] > 0 and stats["replayed"] >= stats["spooled"]
    assert stats["dropped"] == 0 and stats["spool_bytes"] == 0


def test_silent_network_partition_does_not_hang_the_exporter(db_dsn, proxy, tmp_path) -> None:
    """Packets vanish without RST or FIN: a read would block forever without the watchdog."""
    run_id = uuid.uuid4().hex
    exporter = PostgresSpanExporter(proxy.dsn, timeout_s=2, spool_dir=str(tmp_path), shutdown_timeout_s=60)
    batches = _batches(run_id, 3, 10)
    assert exporter.export(batches[0]).name == "SUCCESS"  # a pooled connection now exists
    proxy.blackhole()
    started = time.monotonic()
    assert exporter.export(batches[1]).name == "SUCCESS"  # spooled, within the export timeout
    assert time.monotonic() - started < 6
    assert exporter.stats()["spooled"] == 10
    proxy.restore()
    assert exporter.export(batches[2]).name == "SUCCESS"
    exporter.shutdown()
    assert stored(db_dsn, run_id) == 30


def test_server_restart_mid_stream(tmp_path) -> None:
    server = ThrowawayPostgres()
    try:
        install_schema(server.dsn)
        run_id = uuid.uuid4().hex
        exporter = PostgresSpanExporter(
            server.dsn, timeout_s=2, spool_dir=str(tmp_path), shutdown_timeout_s=60
        )
        provider = _provider(exporter)
        made = stream(provider, run_id, 1.0)
        server.restart()
        made += stream(provider, run_id, 1.0)
        server.stop()
        made += stream(provider, run_id, 1.0)
        server.start()
        made += stream(provider, run_id, 1.0)
        provider.shutdown()
        assert stored(server.dsn, run_id) == made
        assert exporter.stats()["dropped"] == 0
    finally:
        server.close()


def _app(run_id: str, spans: int, mode: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HELPERS / "fault_app.py"), run_id, str(spans), mode],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _env(dsn: str, spool: Path, shutdown_s: float = 60) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        {
            "OTEL_EXPORTER_POSTGRES_DSN": dsn,
            "OTEL_EXPORTER_POSTGRES_SPOOL_DIR": str(spool),
            "OTEL_EXPORTER_POSTGRES_SHUTDOWN_TIMEOUT": str(shutdown_s),
            "OTEL_METRICS_EXPORTER": "none",
        }
    )
    return env


def test_outage_that_outlives_the_process(db_dsn, proxy, tmp_path) -> None:
    run_id = uuid.uuid4().hex
    env = _env(proxy.dsn, tmp_path)
    proxy.cut()
    first = _app(run_id, 400, "exit", _env(proxy.dsn, tmp_path, shutdown_s=1))
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert json.loads(out.splitlines()[0])["spooled"] == 400
    assert list(tmp_path.rglob("*.spool")) and stored(db_dsn, run_id) == 0
    proxy.restore()
    second = _app(uuid.uuid4().hex, 0, "exit", env)  # a new process that makes no spans of its own
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert stored(db_dsn, run_id) == 400
    assert not list(tmp_path.rglob("*.spool"))


def test_kill_9_right_after_spooling(db_dsn, proxy, tmp_path) -> None:
    run_id = uuid.uuid4().hex
    env = _env(proxy.dsn, tmp_path)
    proxy.cut()
    victim = _app(run_id, 300, "hang", _env(proxy.dsn, tmp_path, shutdown_s=1))
    line = _readline(victim, timeout=120)  # printed once force_flush has spooled everything
    assert json.loads(line)["spooled"] == 300
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    proxy.restore()
    survivor = _app(uuid.uuid4().hex, 0, "exit", env)
    _, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err
    assert stored(db_dsn, run_id) == 300


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    """One line of the child's stdout, or a failure (and the child killed) after ``timeout``."""
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            pytest.fail(f"no line from the child within {timeout} s")
    return proc.stdout.readline()


def _batches(run_id: str, batches: int, per_batch: int, payload: int = 0) -> list[list]:
    capture = Capture()
    out = []
    for _ in range(batches):
        for _ in range(per_batch):
            attrs = {"run.id": run_id}
            if payload:
                attrs["input.value"] = os.urandom(payload // 2).hex()
            with capture.tracer.start_as_current_span("s", attributes=attrs):
                pass
        out.append(capture.take())
    return out


def test_corrupted_and_truncated_spool_files(db_dsn, tmp_path, caplog) -> None:
    run_id = uuid.uuid4().hex
    encoder = PostgresSpanExporter(db_dsn, spool_dir="off")
    encoded = [encoder.encode(b) for b in _batches(run_id, 5, 10)]
    encoder.shutdown()
    spool = Spool(tmp_path, db_dsn, max_bytes=10_000_000)
    for batch in encoded[:3]:
        spool.append(batch)
    spool.seal()
    for batch in encoded[3:]:
        spool.append(batch)
    spool.seal()
    first, second = spool.segments()
    with open(first, "rb") as f:
        records = list(iter_records(f))
    raw = bytearray(first.read_bytes())
    raw[records[1].offset + 40] ^= 0xFF  # flip a byte inside the 2nd record's payload
    first.write_bytes(bytes(raw))
    data = second.read_bytes()
    second.write_bytes(data[:-7])  # the last record is torn, as by a crash mid-write
    caplog.set_level(logging.WARNING, logger="otel_pg_exporter")
    exporter = PostgresSpanExporter(db_dsn, spool_dir=str(tmp_path), shutdown_timeout_s=30)
    assert wait_for(lambda: not spool.segments(), timeout=30)
    exporter.shutdown()
    assert stored(db_dsn, run_id) == 30  # records 1 and 3 of the first file, 1 of the second
    assert "corrupted record" in caplog.text and "torn record" in caplog.text
    assert exporter.stats()["dropped_by_reason"] == {"spool_corrupt": 20}  # both lost records, counted


def test_full_spool_counts_drops_exactly(db_dsn, proxy, tmp_path) -> None:
    run_id = uuid.uuid4().hex
    proxy.cut()
    exporter = PostgresSpanExporter(
        proxy.dsn, timeout_s=0.5, spool_dir=str(tmp_path), spool_max_bytes=300_000, shutdown_timeout_s=60
    )
    batches = _batches(run_id, 40, 10, payload=2000)
    for batch in batches:
        assert exporter.export(batch).name == "SUCCESS"
    stats = exporter.stats()
    dropped = stats["dropped_by_reason"].get("spool_full", 0)
    assert stats["spooled"] == 400 and dropped > 0
    assert stats["spool_bytes"] <= 300_000
    proxy.restore()
    exporter.shutdown()
    assert exporter.stats()["spool_bytes"] == 0
    assert stored(db_dsn, run_id) == 400 - dropped


def test_spooled_exports_never_wait_on_the_pool(db_dsn, proxy, tmp_path) -> None:
    """What keeps the application at its pace during an outage (the rate itself is a benchmark
    figure, ``python -m bench --only spooling``): once one batch has found the database down, later
    exports go to the spool without asking the pool for a connection, so none of them waits for a
    connect timeout."""
    proxy.cut()
    exporter = PostgresSpanExporter(proxy.dsn, timeout_s=0.5, spool_dir=str(tmp_path), shutdown_timeout_s=0.5)
    try:
        capture = Capture()
        with capture.tracer.start_as_current_span("warm-up"):
            pass
        exporter.export(capture.take())  # finds the database down: retries, then spools
        requests_before = exporter.delivery.pool.get_stats().get("requests_num", 0)
        assert requests_before > 0  # the first batch did ask the pool
        for batch in _batches(uuid.uuid4().hex, 50, 20):
            assert exporter.export(batch).name == "SUCCESS"
        stats = exporter.stats()
        assert stats["spooled"] == 1 + 50 * 20
        assert exporter.delivery.pool.get_stats().get("requests_num", 0) == requests_before  # never asked again
    finally:
        exporter.shutdown()


def test_schema_not_installed_yet_keeps_the_spans(make_database, tmp_path, caplog) -> None:
    """A database that answers but has no tables yet: spool, then replay once the schema exists."""
    dsn = make_database()
    run_id = uuid.uuid4().hex
    caplog.set_level(logging.ERROR, logger="otel_pg_exporter")
    exporter = PostgresSpanExporter(dsn, timeout_s=2, spool_dir=str(tmp_path), shutdown_timeout_s=60)
    batches = _batches(run_id, 2, 5)
    assert exporter.export(batches[0]).name == "SUCCESS"
    assert exporter.stats()["spooled"] == 5
    assert "database not ready" in caplog.text
    install_schema(dsn)
    assert exporter.export(batches[1]).name == "SUCCESS"
    exporter.shutdown()
    assert stored(dsn, run_id) == 10
