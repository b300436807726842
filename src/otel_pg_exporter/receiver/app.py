"""``otel-pg-gateway``: an OTLP/HTTP receiver that writes through the exporter's own pipeline.

``POST /v1/traces`` and ``POST /v1/logs`` take OTLP requests in protobuf or JSON, gzip or not, with or
without a ``Content-Length``; the decoded spans go to a ``PostgresSpanExporter`` (log records to a
``PostgresLogExporter`` sharing it), so a span received here is stored exactly as the same span
exported in-process. A request is acknowledged (200) only once its batch is durable: committed, or
in the exporter's spool while the database is down. When it cannot be (the spool is full or off,
the gateway is at its limit of concurrent batches), the answer is retryable (429/503 with
``Retry-After``): the sender's own retry and queue keep the data. ``GET /healthz`` says the process is
up, ``GET /readyz`` that the database answers and the schema is installed, ``GET /stats`` the
counters. Thin shell: decoding is ``receiver.otlp`` (pure), everything after it is the exporter's.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from opentelemetry.sdk.trace.export import SpanExportResult
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..dsn import safe_message
from ..exporter import PostgresSpanExporter
from ..log_exporter import PostgresLogExporter
from ..schema import schema_status
from .otlp import JSON, PROTOBUF, BadRequest, Decoded, decode_logs, decode_traces, media_type, response_body

logger = logging.getLogger("otel_pg_exporter")

#: Largest request body accepted, compressed or not (413 above it).
MAX_BODY_BYTES = 16 * 1024 * 1024
#: How many batches may be written at once; more requests get 429 (they queue at the sender).
MAX_INFLIGHT = 8
#: What a retryable answer asks the sender to wait, in seconds.
RETRY_AFTER_S = 5
#: How long a readiness answer is reused, in seconds (probes come every few seconds).
READY_CACHE_S = 2.0
#: What a request body may take in the spool, per byte (a generous bound: the spool stores the
#: encoded rows, zlib-compressed, which are larger than the protobuf they came from).
SPOOLED_BYTES_PER_BODY_BYTE = 4
#: Migration states (``schema_status``) that mean the tables cannot take spans yet.
NOT_READY_STATES = frozenset({"pending", "changed"})


class TooLarge(ValueError):
    """The body is over the limit (HTTP 413)."""


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing more than ``limit`` bytes of output (a small body can hold a
    very large one)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"bad gzip body: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise TooLarge(f"body over {limit} bytes once decompressed")
    if not inflater.eof:
        raise BadRequest("bad gzip body: truncated")
    return out


class Gateway:
    """The receiver's state: the exporters, the limits, the token, the counters."""

    def __init__(
        self,
        dsn: str | None = None,
        *,
        token: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_inflight: int = MAX_INFLIGHT,
        **options: Any,
    ) -> None:
        self.exporter = PostgresSpanExporter(dsn, **options)
        self.log_exporter = PostgresLogExporter(span_exporter=self.exporter)
        self._token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._lock = threading.Lock()
        self._counters: dict[str, float] = {}
        self._ready: tuple[float, bool, str] = (0.0, False, "")

    # -- counters ----------------------------------------------------------------------------------

    def count(self, name: str, n: float = 1) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + n

    def stats(self) -> dict[str, Any]:
        """Requests by outcome, spans and log records accepted/rejected/spooled, time spent, and the
        exporter's own ``stats()`` under ``exporter``."""
        with self._lock:
            out: dict[str, Any] = dict(self._counters)
        out["exporter"] = self.exporter.stats()
        return out

    # -- checks ------------------------------------------------------------------------------------

    def authorized(self, request: Request) -> bool:
        if self._token is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        given = value.strip().encode() if scheme.lower() == "bearer" else b""
        return hmac.compare_digest(given, self._token)

    def spool_cannot_take(self, size: int) -> bool:
        """While the database is down a batch goes to the spool: refuse when it would not fit (the
        spool would drop older data to make room) or when there is no spool."""
        delivery = self.exporter.delivery
        if not delivery.database_down:
            return False
        spool = delivery.spool
        return spool is None or spool.size_bytes() + size > spool.max_bytes

    def ready(self) -> tuple[bool, str]:
        checked, ok, why = self._ready
        if time.monotonic() - checked < READY_CACHE_S:
            return ok, why
        settings = self.exporter.settings
        try:
            states = schema_status(settings.dsn, schema=settings.schema)
            missing = [m.name for m in states if m.state in NOT_READY_STATES]
            ok = not missing
            why = "database reachable, schema installed" if ok else f"migrations not applied: {missing}"
        except Exception as exc:  # unreachable, no rights: not ready, and say why (no secrets)
            ok, why = False, safe_message(exc, self.exporter.settings.dsn)
        self._ready = (time.monotonic(), ok, why)
        return ok, why

    # -- requests ----------------------------------------------------------------------------------

    async def read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise TooLarge(f"body of {declared} bytes is over {self.max_body_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():  # chunked bodies too
            size += len(chunk)
            if size > self.max_body_bytes:
                raise TooLarge(f"body over {self.max_body_bytes} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding == "gzip":
            return gunzip(body, self.max_body_bytes)
        if encoding not in ("", "identity"):
            raise BadRequest(f"unsupported content encoding {encoding!r}: use gzip or none")
        return body

    async def receive(self, request: Request, kind: str) -> Response:
        started = time.perf_counter()
        self.count("requests")
        content_type = request.headers.get("content-type", "")
        answer_as = JSON if media_type(content_type) == JSON else PROTOBUF
        if not self.authorized(request):
            return self._refuse(401, "missing or wrong bearer token", answer_as, kind)
        if media_type(content_type) not in (PROTOBUF, JSON):
            reason = f"unsupported content type {media_type(content_type)!r}"
            return self._refuse(415, reason, answer_as, kind)
        try:
            body = await self.read_body(request)
            decoded = (decode_traces if kind == "traces" else decode_logs)(body, content_type)
        except TooLarge as exc:
            return self._refuse(413, str(exc), answer_as, kind)
        except BadRequest as exc:
            return self._refuse(400, str(exc), answer_as, kind)
        unit = "spans" if kind == "traces" else "log_records"
        self.count(f"{unit}_rejected", decoded.rejected)
        if decoded.items and self.spool_cannot_take(len(body) * SPOOLED_BYTES_PER_BODY_BYTE):
            return self._retry_later(503, "database down and the spool is full", answer_as, kind)
        if not self._slots.acquire(blocking=False):
            return self._retry_later(429, "too many batches in flight", answer_as, kind)
        try:
            stored = await run_in_threadpool(self._export, kind, decoded)
        finally:
            self._slots.release()
        if not stored:
            return self._retry_later(503, "the batch could not be stored", answer_as, kind)
        self.count(f"{unit}_accepted", len(decoded.items))
        self.count("seconds", time.perf_counter() - started)
        self.count("requests_ok")
        return Response(response_body(kind, decoded, answer_as), media_type=answer_as)

    def _export(self, kind: str, decoded: Decoded) -> bool:
        if not decoded.items:
            return True
        if kind == "logs":
            return self.log_exporter.export(decoded.items).name == "SUCCESS"
        result, outcome = self.exporter.export_with_outcome(decoded.items)
        if outcome == "spooled":
            self.count("spans_spooled", len(decoded.items))
        return result is SpanExportResult.SUCCESS

    def _refuse(self, status: int, reason: str, answer_as: str, kind: str) -> Response:
        if status >= 500 or status == 429:
            logger.info("otel-pg-gateway: %s request answered %d: %s", kind, status, reason)
        self.count(f"requests_{status}")
        return _status_response(status, reason, answer_as)

    def _retry_later(self, status: int, reason: str, answer_as: str, kind: str) -> Response:
        response = self._refuse(status, reason, answer_as, kind)
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response

    def close(self) -> None:
        self.log_exporter.shutdown()
        self.exporter.shutdown()


def _status_response(status: int, reason: str, answer_as: str) -> Response:
    """An error body as OTLP asks: a ``google.rpc.Status`` (protobuf or JSON) with the reason."""
    if answer_as == JSON:
        return JSONResponse({"code": status, "message": reason}, status_code=status)
    from google.rpc import status_pb2  # shipped with googleapis-common-protos (OTLP's dependency)

    body = status_pb2.Status(code=status, message=reason).SerializeToString()
    return Response(body, status, media_type=PROTOBUF)


def create_app(gateway: Gateway) -> Starlette:
    """The Starlette application serving ``gateway``."""

    def post(kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await gateway.receive(request, kind)

        return endpoint

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ok, why = await run_in_threadpool(gateway.ready)
        return JSONResponse({"ready": ok, "reason": why}, status_code=200 if ok else 503)

    async def stats(request: Request) -> Response:
        if not gateway.authorized(request):
            return JSONResponse({"message": "missing or wrong bearer token"}, status_code=401)
        return JSONResponse(gateway.stats())

    return Starlette(
        routes=[
            Route("/v1/traces", post("traces"), methods=["POST"]),
            Route("/v1/logs", post("logs"), methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/stats", stats, methods=["GET"]),
        ],
        lifespan=_closing(gateway),
    )


def _closing(gateway: Gateway) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """On server shutdown: drain the spool (bounded) and close the exporters."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(gateway.close)

    return lifespan
