"""Gateway processes as a Collector's ``loadbalancing`` exporter sees them: several
``otel-pg-gateway`` commands on their own ports, one database, a spool each; started, killed with
SIGKILL and restarted on the same ports. And the sender: the official OTLP/gRPC exporter, one per
gateway, each span sent to the gateway its trace id routes to (or deliberately not)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.helpers.support import free_port

BIN = Path(sys.executable).parent


class GatewayProcess:
    """One ``otel-pg-gateway`` process (HTTP and gRPC ports on 127.0.0.1, its own spool)."""

    def __init__(self, dsn: str, spool_dir: Path, *extra: str) -> None:
        self.dsn, self.spool_dir, self.extra = dsn, spool_dir, extra
        self.http_port, self.grpc_port = free_port(), free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> None:
        env = {**os.environ, "OTEL_EXPORTER_POSTGRES_SPOOL_DIR": str(self.spool_dir)}
        self.proc = subprocess.Popen(
            [
                str(BIN / "otel-pg-gateway"),
                "--dsn",
                self.dsn,
                "--port",
                str(self.http_port),
                "--grpc-port",
                str(self.grpc_port),
                *self.extra,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.serving(30), (
            self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
        )

    def serving(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with grpc.insecure_channel(self.endpoint) as channel:
                    status = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=1
                    )
                    if status.status == health_pb2.HealthCheckResponse.SERVING:
                        return True
            except grpc.RpcError:
                time.sleep(0.1)
        return False

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; what it had not acknowledged, the sender still holds."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def route_by_trace(spans: Sequence[Any], n: int) -> list[list[Any]]:
    """The ``loadbalancing`` exporter's ``routing_key: traceID``: every span of a trace to one
    gateway (a hash of the trace id; any stable function does)."""
    out: list[list[Any]] = [[] for _ in range(n)]
    for span in spans:
        out[span.context.trace_id % n].append(span)
    return out


def route_by_span(spans: Sequence[Any], n: int) -> list[list[Any]]:
    """Deliberately wrong routing: the spans of a trace spread over the gateways."""
    out: list[list[Any]] = [[] for _ in range(n)]
    for span in spans:
        out[span.context.span_id % n].append(span)
    return out


def send_until_stored(
    exporter: OTLPSpanExporter,
    batch: Sequence[Any],
    *,
    give_up_s: float = 120.0,
    on_retry: Callable[[], None] | None = None,
) -> int:
    """Send like a Collector's ``sending_queue``: the exporter retries within its timeout; a batch it
    still could not deliver is sent again, until it is acknowledged. Returns the attempts."""
    deadline = time.monotonic() + give_up_s
    attempts = 0
    while True:
        attempts += 1
        if exporter.export(list(batch)) is SpanExportResult.SUCCESS:
            return attempts
        if on_retry is not None:
            on_retry()
        assert time.monotonic() < deadline, "the batch was never acknowledged"
        time.sleep(0.5)
