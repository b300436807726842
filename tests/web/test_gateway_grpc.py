"""``otel-pg-gateway`` over OTLP/gRPC: the official gRPC exporters in (traces and logs, gzip, a
token), the same rows as the in-process exporter, the statuses OTLP senders act on (garbage,
oversized, busy, an outage with and without the spool, with RetryInfo), the health service."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace.export import SpanExportResult

from otel_pg_exporter import PostgresSpanExporter, span_uuid, trace_uuid
from otel_pg_exporter.web.gateway.app import Gateway
from otel_pg_exporter.web.gateway.grpc_receiver import LOGS_SERVICE, TRACE_SERVICE, start_grpc
from tests.helpers.faults import TcpProxy, wait_for
from tests.helpers.support import Capture, free_port
from tests.web.test_gateway import _new_db, _rows, _traces

BIN = Path(sys.executable).parent
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class GrpcGateway:
    """A gateway serving OTLP/gRPC on 127.0.0.1, in this process."""

    def __init__(self, dsn: str, **options: Any) -> None:
        options.setdefault("spool_dir", "off")
        self.gateway = Gateway(dsn, **options)
        self.port = free_port()
        self.server = start_grpc(self.gateway, "127.0.0.1", self.port)
        self.endpoint = f"127.0.0.1:{self.port}"

    def raw_export(self, body: bytes, **metadata: str) -> tuple[grpc.StatusCode, Any]:
        """One Export call with a raw body: (status, the error, if any)."""
        with grpc.insecure_channel(self.endpoint) as channel:
            call = channel.unary_unary(EXPORT)
            try:
                call(body, timeout=30, metadata=tuple(metadata.items()))
                return grpc.StatusCode.OK, None
            except grpc.RpcError as error:
                return error.code(), error

    def close(self) -> None:
        self.server.stop(2).wait(10)
        self.gateway.close()


@pytest.fixture
def grpc_gateway() -> Iterator[Callable[..., GrpcGateway]]:
    running: list[GrpcGateway] = []

    def start(dsn: str, **options: Any) -> GrpcGateway:
        gateway = GrpcGateway(dsn, **options)
        running.append(gateway)
        return gateway

    yield start
    for gateway in running:
        gateway.close()


def _retry_delay(error: Any) -> float | None:
    for key, value in error.trailing_metadata() or ():
        if key == "google.rpc.retryinfo-bin":
            delay = RetryInfo.FromString(value).retry_delay
            return delay.seconds + delay.nanos / 1e9
    return None


def test_official_grpc_exporter_stores_what_the_in_process_exporter_stores(
    make_database: Callable[[], str], grpc_gateway: Callable[..., GrpcGateway]
) -> None:
    spans, ids = _traces(Capture("gw-grpc", **{"host.name": "h1"}), 3, "grpc")
    direct, received = _new_db(make_database), _new_db(make_database)
    exporter = PostgresSpanExporter(direct, spool_dir="off")
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    gateway = grpc_gateway(received, token="s3cret-token")
    otlp = OTLPSpanExporter(
        endpoint=gateway.endpoint,
        insecure=True,
        compression=grpc.Compression.Gzip,
        headers={"authorization": "Bearer s3cret-token"},
    )
    assert otlp.export(spans) is SpanExportResult.SUCCESS
    otlp.shutdown()
    expected, got = _rows(direct, ids), _rows(received, ids)
    assert len(expected[0]) == 9 and got == expected  # column by column, spans and traces
    stats = gateway.gateway.stats()
    assert stats["spans_accepted"] == 9 and stats["requests_grpc"] == 1 and stats["requests_ok"] == 1


def test_logs_over_grpc_merge_into_span_rows(db_dsn: str, grpc_gateway: Callable[..., GrpcGateway]) -> None:
    gateway = grpc_gateway(db_dsn)
    capture = Capture()
    with capture.tracer.start_as_current_span("chat with logged content") as span:
        capture.logger.emit(
            body={"content": "what is the weather?"}, attributes={"event.name": "gen_ai.user.message"}
        )
    spans, records = capture.take(), capture.take_logs()
    traces = OTLPSpanExporter(endpoint=gateway.endpoint, insecure=True)
    logs = OTLPLogExporter(endpoint=gateway.endpoint, insecure=True)
    assert traces.export(spans) is SpanExportResult.SUCCESS
    assert logs.export(records).name == "SUCCESS"
    traces.shutdown()
    logs.shutdown()
    ctx = span.get_span_context()
    spans_rows, _ = _rows(db_dsn, [ctx.trace_id])
    (row,) = [r for r in spans_rows if r["span_id"] == span_uuid(ctx.trace_id, ctx.span_id)]
    assert "what is the weather?" in str(row["inputs"])
    assert gateway.gateway.stats()["log_records_accepted"] == 1


def test_refusals_have_the_status_otlp_senders_act_on(
    db_dsn: str, tmp_path: Any, grpc_gateway: Callable[..., GrpcGateway]
) -> None:
    gateway = grpc_gateway(db_dsn, token="t0ken-t0ken", max_body_bytes=64 * 1024)
    auth = {"authorization": "Bearer t0ken-t0ken"}
    spans, ids = _traces(Capture(), 2, "refusals")
    body = encode_spans(spans).SerializeToString()
    assert gateway.raw_export(body)[0] is grpc.StatusCode.UNAUTHENTICATED
    assert gateway.raw_export(body, authorization="Bearer wrong")[0] is grpc.StatusCode.UNAUTHENTICATED
    code, error = gateway.raw_export(b"\xff\xff not protobuf \x00", **auth)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "not a valid protobuf" in error.details()
    oversized = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    oversized.resource_spans[0].scope_spans[0].spans[0].name = "x" * 100_000
    code, error = gateway.raw_export(oversized.SerializeToString(), **auth)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and _retry_delay(error) is None  # not to retry
    assert gateway.raw_export(body, **auth)[0] is grpc.StatusCode.OK  # and the gateway goes on
    assert len(_rows(db_dsn, ids)[0]) == 6
    stats = gateway.gateway.stats()
    assert stats["requests_401"] == 2 and stats["requests_400"] == 1
    # an outage: OK only once spooled; UNAVAILABLE with RetryInfo when it cannot be
    proxy = TcpProxy(db_dsn)
    try:
        spooling = grpc_gateway(proxy.dsn, spool_dir=str(tmp_path), timeout_s=2)
        no_spool = grpc_gateway(proxy.dsn, timeout_s=2)
        more, more_ids = _traces(Capture(), 2, "outage-grpc")
        body = encode_spans(more).SerializeToString()
        proxy.cut()
        assert spooling.raw_export(body)[0] is grpc.StatusCode.OK
        assert spooling.gateway.stats()["spans_spooled"] == 6
        code, error = no_spool.raw_export(body)
        assert code is grpc.StatusCode.UNAVAILABLE and _retry_delay(error) == 5.0
        proxy.restore()
        assert wait_for(lambda: len(_rows(db_dsn, more_ids)[0]) == 6, 30)  # the spool replayed
    finally:
        proxy.close()


def test_busy_is_resource_exhausted_with_retry_info(
    db_dsn: str, grpc_gateway: Callable[..., GrpcGateway]
) -> None:
    gateway = grpc_gateway(db_dsn)
    held = [gateway.gateway._slots.acquire(blocking=False) for _ in range(gateway.gateway.max_inflight)]
    try:
        spans, _ = _traces(Capture(), 1, "busy")
        code, error = gateway.raw_export(encode_spans(spans).SerializeToString())
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and _retry_delay(error) == 5.0
    finally:
        for _ in held:
            gateway.gateway._slots.release()
    assert gateway.gateway.stats()["requests_429"] == 1


def test_health_service(db_dsn: str, empty_db: str, grpc_gateway: Callable[..., GrpcGateway]) -> None:
    ready, not_installed = grpc_gateway(db_dsn), grpc_gateway(empty_db)

    def check(gateway: GrpcGateway, service: str) -> Any:
        with grpc.insecure_channel(gateway.endpoint) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status

    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert check(ready, "") == serving and check(ready, TRACE_SERVICE) == serving
    assert check(not_installed, "") == serving  # the process is up
    assert check(not_installed, LOGS_SERVICE) == not_serving  # the schema is not installed
    with pytest.raises(grpc.RpcError) as unknown:
        check(ready, "no.such.Service")
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND


def test_the_command_serves_both_protocols(db_dsn: str) -> None:
    http_port, grpc_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "otel-pg-gateway"),
            "--dsn",
            db_dsn,
            "--port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"OTLP/gRPC on 127.0.0.1:{grpc_port}" in line, line + (
            proc.stderr.read() if proc.stderr else ""
        )
        spans, ids = _traces(Capture(), 1, "cmd-grpc")
        otlp = OTLPSpanExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True)
        assert otlp.export(spans) is SpanExportResult.SUCCESS
        otlp.shutdown()
        assert len(_rows(db_dsn, ids)[0]) == 3
        assert trace_uuid(ids[0]) == _rows(db_dsn, ids)[1][0]["trace_id"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_coding_agent_sending_only_logs_over_grpc(
    db_dsn: str, grpc_gateway: Callable[..., GrpcGateway]
) -> None:
    """What Claude Code does with OTEL_LOGS_EXPORTER=otlp and OTEL_EXPORTER_OTLP_PROTOCOL=grpc."""
    from tests.sdk.test_coding_agents import _claude_code, _session

    gateway = grpc_gateway(db_dsn)
    capture = Capture("claude-code")
    _claude_code(capture)
    logs = OTLPLogExporter(endpoint=gateway.endpoint, insecure=True, compression=grpc.Compression.Gzip)
    records = capture.take_logs()
    assert logs.export(records).name == "SUCCESS"
    assert logs.export(records).name == "SUCCESS"  # the agent's retry: stored once
    logs.shutdown()
    trace, spans = _session(db_dsn, "cc-session-1")
    assert len(spans) == 5 and trace["workflow_id"] == "claude-code"
    assert str(trace["total_cost"]) == "0.012300"
    assert gateway.gateway.engine.stats()["coding_agent_spans"] == 10
