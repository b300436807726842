"""``otel-pg-gateway``'s OTLP/gRPC receiver: ``TraceService/Export`` and ``LogsService/Export``.

The same gateway as OTLP/HTTP (``Gateway.receive_body``): the same slots and byte budget, the same
decoding, the same engine, one acknowledgement rule and one set of counters. A request is answered
OK only when every span is committed or spooled (items set aside are reported in
``partial_success``); otherwise it gets the status the OTLP specification gives the sender to act on:

========================  ==================================================================
``INVALID_ARGUMENT``      not an OTLP request (do not retry)
``UNAUTHENTICATED``       missing or wrong bearer token (metadata ``authorization``)
``RESOURCE_EXHAUSTED``    over the message size (gRPC's own limit, checked before the message
                          is read: not retried), or too many batches/bytes in flight (with
                          ``google.rpc.RetryInfo``: retried after its delay)
``UNAVAILABLE``           the batch could not be made durable (database down and the spool
                          full or off): retried, with ``RetryInfo``
========================  ==================================================================

gzip is gRPC's own (``grpc-encoding``). The standard health service (``grpc.health.v1``) answers
``SERVING`` for the process (service ``""``) and, for the two OTLP services, whether the gateway is
ready (database reachable, schema installed), as ``/readyz`` does. Bodies arrive as bytes: the
requests are parsed by the same decoder as OTLP/HTTP's protobuf bodies.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .app import RETRY_AFTER_S, Gateway, Refusal
from .otlp import PROTOBUF

logger = logging.getLogger("otel_pg_exporter")

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
#: Our HTTP statuses (``Refusal``) → the gRPC status OTLP gives the sender.
GRPC_STATUS: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
RETRY_INFO_KEY = "google.rpc.retryinfo-bin"
#: Export calls queued beyond the workers, per worker; more are refused by gRPC (RESOURCE_EXHAUSTED).
QUEUED_PER_WORKER = 4


def _retry_info() -> bytes:
    return RetryInfo(retry_delay=Duration(seconds=RETRY_AFTER_S)).SerializeToString()


class _Health(health_pb2_grpc.HealthServicer):
    """``grpc.health.v1.Health/Check``: the process (``""``) is serving while it runs; the OTLP
    services are serving when the gateway is ready (the readiness check, cached like ``/readyz``)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._standard = health.HealthServicer()

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        status = health_pb2.HealthCheckResponse
        if request.service == "":
            return status(status=status.SERVING)
        if request.service not in (TRACE_SERVICE, LOGS_SERVICE):
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        ready, _ = self.gateway.ready()
        return status(status=status.SERVING if ready else status.NOT_SERVING)

    def Watch(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._standard.Watch(request, context)


def _export(gateway: Gateway, kind: str) -> Any:
    def handler(body: bytes, context: grpc.ServicerContext) -> bytes:
        token = dict(context.invocation_metadata()).get("authorization")
        try:
            return gateway.receive_body(kind, body, token=token).body(PROTOBUF)
        except Refusal as refusal:
            if refusal.retry:
                context.set_trailing_metadata(((RETRY_INFO_KEY, _retry_info()),))
            context.abort(GRPC_STATUS.get(refusal.status, grpc.StatusCode.INTERNAL), refusal.reason)
            raise AssertionError("unreachable") from None  # context.abort raises

    # request_deserializer None: the handler gets the message's bytes, parsed by our decoder
    return grpc.unary_unary_rpc_method_handler(handler)


def start_grpc(gateway: Gateway, host: str, port: int, *, workers: int | None = None) -> grpc.Server:
    """Serve ``gateway`` over OTLP/gRPC on ``host:port`` (started; call ``stop(grace)`` to end).
    Messages over the gateway's body limit are refused by gRPC before they are read."""
    threads = workers or gateway.max_inflight
    server = grpc.server(
        ThreadPoolExecutor(threads + 1, thread_name_prefix="otel-pg-gateway-grpc"),
        options=[
            ("grpc.max_receive_message_length", gateway.max_body_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.max_concurrent_streams", threads * QUEUED_PER_WORKER),
        ],
        maximum_concurrent_rpcs=threads * QUEUED_PER_WORKER,
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": _export(gateway, "traces")}),
            grpc.method_handlers_generic_handler(LOGS_SERVICE, {"Export": _export(gateway, "logs")}),
        )
    )
    health_pb2_grpc.add_HealthServicer_to_server(_Health(gateway), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port} for OTLP/gRPC")
    server.start()
    gateway.attach(server)  # stopped first when the gateway closes
    return server
