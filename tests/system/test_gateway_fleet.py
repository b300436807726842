"""Several ``otel-pg-gateway`` processes against one database, fed as the OpenTelemetry Collector's
``loadbalancing`` exporter feeds them (OTLP/gRPC, the official Python exporter, every span of a
trace to the gateway its trace id routes to): exact totals; the same with traces split across
gateways on purpose; and a gateway killed with SIGKILL mid-run while the sender retries: nothing
lost, nothing doubled."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from otel_pg_exporter import PostgresSpanExporter
from tests.helpers.fleet import GatewayProcess, route_by_span, route_by_trace, send_until_stored
from tests.helpers.support import Capture
from tests.web.test_gateway import _new_db, _rows, _traces


def _reference(make_database: Callable[[], str], spans: list) -> str:
    direct = _new_db(make_database)
    exporter = PostgresSpanExporter(direct, spool_dir="off")
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    return direct


def _batches(spans: list, size: int, seed: int) -> list[list]:
    """Collector-style batches: spans in arrival order (children before their parents), a little
    shuffled, cut every ``size`` spans."""
    shuffled = list(spans)
    random.Random(seed).shuffle(shuffled)
    return [shuffled[i : i + size] for i in range(0, len(shuffled), size)]


def test_three_gateways_by_trace_id_and_split_traces_store_exact_totals(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    spans, ids = _traces(Capture("fleet"), 60, "fleet")
    direct = _reference(make_database, spans)
    for name, route in (("by_trace", route_by_trace), ("split", route_by_span)):
        received = _new_db(make_database)
        fleet = [GatewayProcess(received, tmp_path / f"{name}-{i}") for i in range(3)]
        try:
            exporters = [OTLPSpanExporter(endpoint=g.endpoint, insecure=True, timeout=10) for g in fleet]
            for batch in _batches(spans, 40, seed=7):
                for exporter, part in zip(exporters, route(batch, len(fleet)), strict=True):
                    if part:
                        send_until_stored(exporter, part)
            for exporter in exporters:
                exporter.shutdown()
        finally:
            for gateway in fleet:
                gateway.stop()
        expected, got = _rows(direct, ids), _rows(received, ids)
        assert len(got[0]) == 180, name
        assert got == expected, name  # every span and trace row, column by column


def test_a_gateway_killed_mid_run_loses_and_doubles_nothing(
    make_database: Callable[[], str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spans, ids = _traces(Capture("fleet-kill"), 150, "kill")
    direct = _reference(make_database, spans)
    received = _new_db(make_database)
    fleet = [GatewayProcess(received, tmp_path / f"kill-{i}") for i in range(2)]
    batches = _batches(spans, 30, seed=11)
    acknowledged = [0]
    retries = [0]
    errors: list[BaseException] = []

    def sender() -> None:
        exporters = [OTLPSpanExporter(endpoint=g.endpoint, insecure=True, timeout=5) for g in fleet]
        try:
            for batch in batches:
                for exporter, part in zip(exporters, route_by_trace(batch, len(fleet)), strict=True):
                    if part:
                        attempts = send_until_stored(exporter, part)
                        retries[0] += attempts - 1
                acknowledged[0] += 1
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            for exporter in exporters:
                exporter.shutdown()

    thread = threading.Thread(target=sender)
    try:
        thread.start()
        while acknowledged[0] < 3 and thread.is_alive():
            time.sleep(0.01)
        fleet[1].kill()  # mid-run: the sender is sending to it
        killed_at = acknowledged[0]
        time.sleep(1.5)
        fleet[1].start()  # same ports, same spool
        thread.join(300)
        assert not thread.is_alive() and not errors, errors
    finally:
        for gateway in fleet:
            gateway.stop()
    assert killed_at < len(batches)  # killed before the end, and the sender had to retry:
    transient = [r for r in caplog.records if "UNAVAILABLE" in r.getMessage()]
    assert transient or retries[0], "the killed gateway was never retried"
    expected, got = _rows(direct, ids), _rows(received, ids)
    assert len(got[0]) == len(expected[0]) == 450  # nothing lost, nothing doubled
    assert got == expected
