"""``otel-pg-gateway``: an OTLP/HTTP receiver that writes through the exporters' own engine.

``POST /v1/traces`` and ``POST /v1/logs`` take OTLP requests in protobuf or JSON, gzip or not, with or
without a ``Content-Length``; the decoded spans go to a ``PostgresSpanExporter`` (log records to a
``PostgresLogExporter`` sharing it), so a span received here is stored exactly as the same span
exported in-process. A request is acknowledged (200) only once its batch is durable: committed, or
in the exporter's spool while the database is down. When it cannot be (the spool is full or off,
the gateway is at its limit of concurrent batches), the answer is retryable (429/503 with
``Retry-After``): the sender's own retry and queue keep the data. Spans the database refuses even
alone (``failures``: set aside in the quarantine) are reported in ``partial_success``. ``GET /healthz``
says the process is up, ``GET /readyz`` that the database answers and the schema is installed
(``{"ready": ...}``; the reason only with the token, or in ``/stats``), ``GET /stats`` the counters.

Limits come before reading: a request takes an in-flight slot and its share of a byte budget before
its body is read, the body must arrive within ``BODY_TIMEOUT_S``, and decompressing, decoding and
writing run on a worker thread, so a large or slow request never holds up the event loop
(``/healthz``, small requests). Thin shell: decoding is ``web.gateway.otlp`` (pure), everything after it
is the engine's (``sdk.engine.Engine``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from opentelemetry.sdk.trace.export import SpanExportResult
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...connection import local_search_path, set_local
from ...delivery import Delivered, Outcome
from ...failures import Failure, classify
from ...schema.migrations import migration_states
from ...sdk.engine import Engine
from ..auth import bearer_of, token_matches
from .otlp import JSON, PROTOBUF, BadRequest, Decoded, decode_logs, decode_traces, media_type, response_body

logger = logging.getLogger("otel_pg_exporter")

#: Largest request body accepted, compressed or not (413 above it).
MAX_BODY_BYTES = 16 * 1024 * 1024
#: How many requests may be read, decoded and written at once; more get 429 (they queue at the sender).
MAX_INFLIGHT = 8
#: Bytes of request bodies (as sent) held at once; past it a request gets 429 before it is read.
MAX_INFLIGHT_BYTES = 64 * 1024 * 1024
#: A request body must have arrived completely within this many seconds (408 otherwise).
BODY_TIMEOUT_S = 30.0
#: The readiness check's connection and statement timeout, in seconds.
READY_TIMEOUT_S = 2.0
#: What a retryable answer asks the sender to wait, in seconds.
RETRY_AFTER_S = 5
#: How long a readiness answer is reused, in seconds (probes come every few seconds).
READY_CACHE_S = 2.0
#: What a request body may take in the spool, per byte (a generous bound: the spool stores the
#: encoded rows, zlib-compressed, which are larger than the protobuf they came from).
SPOOLED_BYTES_PER_BODY_BYTE = 4
#: Seconds another transport (gRPC) is given to finish its requests when the gateway closes.
TRANSPORT_GRACE_S = 5
#: Migration states (``schema_status``) that mean the tables cannot take spans yet.
NOT_READY_STATES = frozenset({"pending", "changed"})


class TooLarge(ValueError):
    """The body is over the limit (HTTP 413)."""


class OverBudget(Exception):
    """The bodies being read and written already hold the byte budget (HTTP 429)."""


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress a gzip body, every member of it (``gzip(A) + gzip(B)`` is one valid body),
    refusing more than ``limit`` bytes of output (a small body can hold a very large one) and
    anything after the last member that is not another member."""
    out: list[bytes] = []
    size = 0
    rest = data
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = inflater.decompress(rest, limit - size + 1)
        except zlib.error as exc:
            what = "bad gzip body" if not out else "bytes after the gzip data are not a gzip member"
            raise BadRequest(f"{what}: {exc}") from None
        size += len(chunk)
        if size > limit or inflater.unconsumed_tail:
            raise TooLarge(f"body over {limit} bytes once decompressed")
        if not inflater.eof:
            raise BadRequest("bad gzip body: truncated")
        out.append(chunk)
        rest = inflater.unused_data
        if not rest:
            return b"".join(out)


class ByteBudget:
    """Bytes of request bodies held at once, across requests (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if n and self.held + n > self.limit:
                return False
            self.held += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.held -= n


class Refusal(Exception):
    """A request answered without being stored: its status, the reason, and whether the sender
    should retry later (429/503 with ``Retry-After``)."""

    def __init__(self, status: int, reason: str, *, retry: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry = retry


@dataclass(frozen=True)
class Accepted:
    """A request acknowledged: what it held, and what became of it (``refused``: set aside)."""

    kind: str
    decoded: Decoded
    delivered: Delivered

    def body(self, answer_as: str = PROTOBUF) -> bytes:
        """The OTLP response (with ``partial_success`` when items were rejected or set aside)."""
        refused = self.delivered.refused
        reason = f"refused by the database: {self.delivered.reason}" if refused else None
        return response_body(self.kind, self.decoded, answer_as, refused, reason)


class Gateway:
    """The receiver's state: the exporters, the limits, the token, the counters."""

    def __init__(
        self,
        dsn: str | None = None,
        *,
        token: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_inflight: int = MAX_INFLIGHT,
        max_inflight_bytes: int = MAX_INFLIGHT_BYTES,
        body_timeout_s: float = BODY_TIMEOUT_S,
        **options: Any,
    ) -> None:
        self.engine = Engine(dsn, **options)
        self._engine_token = self.engine.retain()
        self._bearer = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self.max_inflight = max_inflight
        self.body_timeout_s = body_timeout_s
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._budget = ByteBudget(max(max_inflight_bytes, max_body_bytes))
        # decoding and writing: a pool of our own, as wide as the slots, so neither can starve the
        # server's other work (and readiness checks have their own single thread)
        self._workers = ThreadPoolExecutor(max_inflight, thread_name_prefix="otel-pg-gateway")
        self._ready_worker = ThreadPoolExecutor(1, thread_name_prefix="otel-pg-gateway-ready")
        self._ready_check: asyncio.Future[tuple[bool, str]] | None = None
        self._lock = threading.Lock()
        self._counters: dict[str, float] = {}
        self._ready: tuple[float, bool, str] = (0.0, False, "")
        self.ready_checks = 0
        self._transports: list[Any] = []

    # -- counters ----------------------------------------------------------------------------------

    def count(self, name: str, n: float = 1) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + n

    def stats(self) -> dict[str, Any]:
        """Requests by outcome, spans and log records accepted/rejected/spooled, time spent, and the
        exporter's own ``stats()`` under ``exporter``."""
        with self._lock:
            out: dict[str, Any] = dict(self._counters)
        _, ok, why = self._ready
        out["ready"] = {"ready": ok, "reason": why, "checks": self.ready_checks}
        out["exporter"] = self.engine.stats()
        return out

    # -- checks ------------------------------------------------------------------------------------

    @property
    def has_token(self) -> bool:
        return self._bearer is not None

    def authorized(self, request: Request) -> bool:
        return self.authorized_by(request.headers.get("authorization"))

    def authorized_by(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` value (HTTP header, gRPC metadata) carries the token."""
        if self._bearer is None:
            return True
        return token_matches(bearer_of(authorization or ""), self._bearer)

    def spool_cannot_take(self, size: int) -> bool:
        """While the database is down a batch goes to the spool: refuse when it would not fit (the
        spool would drop older data to make room) or when there is no spool."""
        return self.engine.spool_cannot_take(size)

    def ready(self) -> tuple[bool, str]:
        """Readiness, from a cache of ``READY_CACHE_S`` seconds, else checked now (blocking)."""
        checked, ok, why = self._ready
        if time.monotonic() - checked < READY_CACHE_S:
            return ok, why
        return self.check_ready()

    async def ready_async(self) -> tuple[bool, str]:
        """Readiness for ``/readyz``: cached; at most one check in flight, on its own thread and its
        own short-timeout connection, however many probes ask at once."""
        checked, ok, why = self._ready
        if time.monotonic() - checked < READY_CACHE_S:
            return ok, why
        if self._ready_check is None or self._ready_check.done():
            loop = asyncio.get_running_loop()
            self._ready_check = asyncio.ensure_future(
                loop.run_in_executor(self._ready_worker, self.check_ready)
            )
        return await asyncio.shield(self._ready_check)

    def check_ready(self) -> tuple[bool, str]:
        """Does the database answer, with the schema installed, and can batches be made durable?
        The reason never names the database, its host or its user."""
        settings = self.engine.settings
        self.ready_checks += 1
        try:
            with (
                psycopg.connect(
                    settings.dsn,
                    autocommit=True,
                    connect_timeout=max(1, round(READY_TIMEOUT_S)),
                    prepare_threshold=None,
                    application_name="otel-pg-gateway-readyz",
                ) as conn,
                conn.transaction(),
            ):
                set_local(
                    conn,
                    {
                        "statement_timeout": str(int(READY_TIMEOUT_S * 1000)),
                        "search_path": local_search_path(settings.schema),
                    },
                )
                missing = [m.name for m in migration_states(conn) if m.state in NOT_READY_STATES]
            ok = not missing
            why = "database reachable, schema installed" if ok else f"migrations not applied: {missing}"
        except Exception as exc:  # unreachable, no rights: not ready; the class of failure, no names
            ok = False
            failure = classify(exc)
            why = {
                Failure.DOWN: "database unreachable",
                Failure.NOT_READY: "database not ready (schema or grants)",
            }.get(failure, f"readiness check failed ({type(exc).__name__})")
        if ok and self.spool_cannot_take(self.max_body_bytes):
            ok, why = False, "database down and the spool is full"
        self._ready = (time.monotonic(), ok, why)
        return ok, why

    # -- requests ----------------------------------------------------------------------------------

    async def read_body(self, request: Request, declared: int | None) -> tuple[bytes, int]:
        """The body as sent (not decompressed), and the bytes it took from the budget (to give
        back). ``declared`` bytes were taken already; a body without a length takes its share as it
        arrives."""
        chunks, size, taken = [], 0, 0
        async for chunk in request.stream():  # chunked bodies too
            size += len(chunk)
            if size > self.max_body_bytes:
                raise TooLarge(f"body over {self.max_body_bytes} bytes")
            if declared is None:
                if not self._budget.take(len(chunk)):
                    raise OverBudget(taken)
                taken += len(chunk)
            chunks.append(chunk)
        return b"".join(chunks), taken

    def _inflate(self, body: bytes, encoding: str) -> bytes:
        if encoding == "gzip":
            return gunzip(body, self.max_body_bytes)
        if encoding not in ("", "identity"):
            raise BadRequest(f"unsupported content encoding {encoding!r}: use gzip or none")
        return body

    def _handle(self, kind: str, body: bytes, encoding: str, content_type: str) -> tuple[Decoded, Delivered]:
        """On a worker thread: decompress, decode, write. Raises ``TooLarge``/``BadRequest``."""
        raw = self._inflate(body, encoding)
        decoded = (decode_traces if kind == "traces" else decode_logs)(raw, content_type)
        return decoded, self._export(kind, decoded)

    async def receive(self, request: Request, kind: str) -> Response:
        """One OTLP/HTTP export request: checked, read within the limits, decoded and exported on
        the gateway's workers, answered (200 only when every item is stored, spooled or set aside)."""
        started = time.perf_counter()
        self.count("requests")
        self.count("requests_http")
        content_type = request.headers.get("content-type", "")
        answer_as = JSON if media_type(content_type) == JSON else PROTOBUF
        try:
            declared = self._checked_headers(request, content_type)
            decoded, delivered = await self._read_and_export(request, kind, declared, content_type)
            accepted = self.settle(kind, decoded, delivered, started)
        except Refusal as refusal:
            answer = self._retry_later if refusal.retry else self._refuse
            return answer(refusal.status, refusal.reason, answer_as, kind)
        return Response(accepted.body(answer_as), media_type=answer_as)

    def receive_body(self, kind: str, body: bytes, *, token: str | None = None) -> Accepted:
        """One export request whose protobuf body a transport has read already (OTLP/gRPC: within
        its message size limit, decompressed by gRPC): the same slots, byte budget, spool check,
        decoding, export and acknowledgement rule as ``receive``. Raises ``Refusal``."""
        started = time.perf_counter()
        self.count("requests")
        self.count("requests_grpc")
        try:
            if not self.authorized_by(token):
                raise Refusal(401, "missing or wrong bearer token")
            if len(body) > self.max_body_bytes:
                raise Refusal(413, f"message of {len(body)} bytes is over {self.max_body_bytes}")
            if not self._slots.acquire(blocking=False):
                raise Refusal(429, "too many batches in flight", retry=True)
            try:
                decoded, delivered = self._export_read(kind, body)
            finally:
                self._slots.release()
            return self.settle(kind, decoded, delivered, started)
        except Refusal as refusal:
            self._note_refusal(kind, refusal.status, refusal.reason)
            raise

    def _export_read(self, kind: str, body: bytes) -> tuple[Decoded, Delivered]:
        """A body already read (the caller holds a slot): its bytes from the budget, the spool
        check, decoding and export."""
        if not self._budget.take(len(body)):
            raise Refusal(429, "too many bytes in flight", retry=True)
        try:
            if self.spool_cannot_take(len(body) * SPOOLED_BYTES_PER_BODY_BYTE):
                raise Refusal(503, "database down and the spool is full", retry=True)
            return self._handle(kind, body, "identity", PROTOBUF)
        except TooLarge as exc:
            raise Refusal(413, str(exc)) from None
        except BadRequest as exc:
            raise Refusal(400, str(exc)) from None
        finally:
            self._budget.give(len(body))

    def settle(self, kind: str, decoded: Decoded, delivered: Delivered, started: float) -> Accepted:
        """The one acknowledgement rule, for both protocols: every item stored, spooled or set aside
        (reported as rejected), else a retryable refusal; the counters either way."""
        unit = "spans" if kind == "traces" else "log_records"
        self.count(f"{unit}_rejected", decoded.rejected + delivered.refused)
        if not delivered.durable:
            raise Refusal(503, "the batch could not be stored", retry=True)
        if delivered.outcome is Outcome.SPOOLED:
            self.count(f"{unit}_spooled", len(decoded.items))
        self.count(f"{unit}_accepted", len(decoded.items) - delivered.refused)
        self.count("seconds", time.perf_counter() - started)
        self.count("requests_ok")
        return Accepted(kind, decoded, delivered)

    def _checked_headers(self, request: Request, content_type: str) -> int | None:
        """The token, the media type and the declared length, before anything is read; returns the
        declared length (None: chunked)."""
        if not self.authorized(request):
            raise Refusal(401, "missing or wrong bearer token")
        if media_type(content_type) not in (PROTOBUF, JSON):
            raise Refusal(415, f"unsupported content type {media_type(content_type)!r}")
        length = request.headers.get("content-length")
        if length is not None and not length.strip().isdigit():
            raise Refusal(400, "bad Content-Length")
        declared = int(length) if length is not None else None
        if declared is not None and declared > self.max_body_bytes:
            raise Refusal(413, f"body of {declared} bytes is over {self.max_body_bytes}")
        return declared

    async def _read_and_export(
        self, request: Request, kind: str, declared: int | None, content_type: str
    ) -> tuple[Decoded, Delivered]:
        """Limits first: a slot and the body's bytes are taken before a byte of it is read, and
        given back when the batch is stored (or refused)."""
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if not self._slots.acquire(blocking=False):
            raise Refusal(429, "too many batches in flight", retry=True)
        held = 0
        try:
            if declared is not None:
                if not self._budget.take(declared):
                    raise Refusal(429, "too many bytes in flight", retry=True)
                held = declared
            try:
                body, taken = await asyncio.wait_for(self.read_body(request, declared), self.body_timeout_s)
                held += taken
            except OverBudget as exc:
                held += exc.args[0]
                raise Refusal(429, "too many bytes in flight", retry=True) from None
            except asyncio.TimeoutError:
                raise Refusal(408, f"body not received within {self.body_timeout_s:g} s") from None
            if self.spool_cannot_take(len(body) * SPOOLED_BYTES_PER_BODY_BYTE):
                raise Refusal(503, "database down and the spool is full", retry=True)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._workers, self._handle, kind, body, encoding, content_type)
        except TooLarge as exc:
            raise Refusal(413, str(exc)) from None
        except BadRequest as exc:
            raise Refusal(400, str(exc)) from None
        finally:
            self._budget.give(held)
            self._slots.release()

    def _export(self, kind: str, decoded: Decoded) -> Delivered:
        if not decoded.items:
            return Delivered(SpanExportResult.SUCCESS, Outcome.EMPTY)
        if kind == "logs":
            return self.engine.export_logs(decoded.items)
        return self.engine.export_spans(decoded.items)

    def _note_refusal(self, kind: str, status: int, reason: str) -> None:
        """A refused request, whatever the protocol: counted by status, logged when retryable."""
        if status >= 500 or status == 429:
            logger.info("otel-pg-gateway: %s request answered %d: %s", kind, status, reason)
        self.count(f"requests_{status}")

    def _refuse(self, status: int, reason: str, answer_as: str, kind: str) -> Response:
        self._note_refusal(kind, status, reason)
        return _status_response(status, reason, answer_as)

    def _retry_later(self, status: int, reason: str, answer_as: str, kind: str) -> Response:
        response = self._refuse(status, reason, answer_as, kind)
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response

    def attach(self, server: Any) -> None:
        """Another transport serving this gateway (the gRPC server): stopped first on ``close``,
        so no request arrives after the engine is gone."""
        self._transports.append(server)

    def close(self) -> None:
        for server in self._transports:
            server.stop(TRANSPORT_GRACE_S).wait(TRANSPORT_GRACE_S * 2)
        self._workers.shutdown(wait=True)
        self._ready_worker.shutdown(wait=False)
        self.engine.release(self._engine_token)


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
        ok, why = await gateway.ready_async()
        body: dict[str, Any] = {"ready": ok}
        if gateway.has_token and gateway.authorized(request):  # the reason only behind the token
            exporter = gateway.engine.stats()
            body["reason"] = why
            body["quarantine_spans"] = exporter.get("quarantine_spans", 0)
            body["replay_stalled"] = exporter.get("replay_stalled", False)
        return JSONResponse(body, status_code=200 if ok else 503)

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
