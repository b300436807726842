"""``PostgresSpanExporter`` and ``configure()``: thin orchestration around mapping and writer.

``export()`` maps each span (a span that breaks the mapping still gets a minimal row), writes the
batch in one transaction, retries connection-class errors with exponential backoff and jitter
within the export timeout, and never raises into the SDK. State changes are logged once each.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from psycopg_pool import ConnectionPool, PoolTimeout

from .dsn import describe, safe_message
from .mapping import fallback_record, map_span
from .records import EncodedSpan, Limits, encode_span
from .settings import ExporterSettings, resolve_settings
from .writer import SpanWriter

logger = logging.getLogger("otel_pg_exporter")

#: Errors worth retrying: the server is down, restarting, failing over, or the pool is exhausted.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    PoolTimeout,
)
BACKOFF_BASE_S = 0.1
BACKOFF_MAX_S = 5.0
#: Shortest wait for a pooled connection per attempt (a quarter of the export timeout otherwise).
ATTEMPT_MIN_S = 0.5


class _StateLog:
    """Logs a state change once ("database unreachable", "recovered"), never once per batch."""

    def __init__(self, target: str) -> None:
        self._target = target
        self._state = "ok"
        self._lock = threading.Lock()

    def set(self, state: str, message: str = "") -> None:
        with self._lock:
            if state == self._state:
                return
            previous, self._state = self._state, state
        if state == "ok":
            logger.warning("otel-pg-exporter: writing to %s again (was: %s)", self._target, previous)
        else:
            logger.error("otel-pg-exporter: %s on %s: %s", state, self._target, message)


class PostgresSpanExporter(SpanExporter):
    """An OpenTelemetry ``SpanExporter`` that stores spans in the seed's ``traces``/``spans`` tables.

    ``dsn``: argument, else ``OTEL_EXPORTER_POSTGRES_DSN``, else ``DATABASE_URL``, else libpq's
    ``PG*`` variables. Options (or ``OTEL_EXPORTER_POSTGRES_<NAME>``): ``timeout_s``,
    ``max_payload_chars``, ``prepared_statements`` (False for PgBouncer/Supabase transaction
    poolers), ``pool_min_size``, ``pool_max_size``, ``application_name``.
    """

    def __init__(self, dsn: str | None = None, **options: Any) -> None:
        self.settings: ExporterSettings = resolve_settings(dsn, **options)
        s = self.settings
        self._limits = Limits(max_payload_chars=s.max_payload_chars)
        connect_kwargs: dict[str, Any] = {"autocommit": True, "application_name": s.application_name}
        if not s.prepared_statements:
            connect_kwargs["prepare_threshold"] = None
        self._pool = ConnectionPool(
            s.dsn,
            min_size=s.pool_min_size,
            max_size=s.pool_max_size,
            kwargs=connect_kwargs,
            timeout=s.timeout_s,
            open=False,
            name="otel-pg-exporter",
        )
        self._pool.open(wait=False)
        self._writer = SpanWriter(self._pool, self._limits)
        self._state = _StateLog(describe(s.dsn))
        self._closed = threading.Event()
        self._shutdown_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats: dict[str, int] = {
            "exported": 0,
            "degraded": 0,
            "dropped": 0,
            "mapping_fallbacks": 0,
            "retries": 0,
            "failed_batches": 0,
        }

    # -- SpanExporter API --------------------------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed.is_set():
            return SpanExportResult.FAILURE
        try:
            return self._export(spans)
        except Exception as exc:  # never raise into the SDK
            self._count(failed_batches=1)
            self._state.set("export failed", safe_message(exc, self.settings.dsn))
            return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing is buffered here: every ``export()`` has committed before it returns."""
        return True

    def shutdown(self) -> None:
        """Close the pool (idempotent). Later ``export()`` calls return FAILURE."""
        with self._shutdown_lock:
            if self._closed.is_set():
                return
            self._closed.set()
            self._pool.close(timeout=self.settings.timeout_s)

    # -- internals --------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters since start: spans exported, degraded, dropped, retries, failed batches."""
        with self._stats_lock:
            return dict(self._stats)

    def _count(self, **deltas: int) -> None:
        with self._stats_lock:
            for key, value in deltas.items():
                self._stats[key] += value

    def encode(self, spans: Sequence[ReadableSpan]) -> list[EncodedSpan]:
        """Map and encode a batch; a span that breaks the mapping gets a minimal row instead."""
        encoded: list[EncodedSpan] = []
        for span in spans:
            try:
                encoded.append(encode_span(map_span(span), self._limits))
            except Exception as exc:
                record = fallback_record(span, exc)
                self._count(mapping_fallbacks=1)
                logger.warning(
                    "otel-pg-exporter: span %r mapped minimally: %s",
                    span.name,
                    f"{type(exc).__name__}: {exc}"[:300],
                )
                if record is not None:
                    encoded.append(encode_span(record, self._limits))
        return encoded

    def _export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        deadline = time.monotonic() + self.settings.timeout_s
        encoded = self.encode(spans)
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                # wait for a pooled connection for part of the budget, so there is time to retry
                wait = max(0.1, min(remaining, max(ATTEMPT_MIN_S, self.settings.timeout_s / 4)))
                report = self._writer.write(encoded, timeout=wait)
            except CONNECTION_ERRORS as exc:
                delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt) * random.uniform(0.5, 1.0)
                remaining = deadline - time.monotonic()
                if remaining <= delay or self._closed.is_set():
                    self._count(failed_batches=1)
                    self._state.set("database unreachable", safe_message(exc, self.settings.dsn))
                    return SpanExportResult.FAILURE
                attempt += 1
                self._count(retries=1)
                self._closed.wait(delay)
                continue
            self._state.set("ok")
            self._count(exported=report.written, degraded=report.degraded, dropped=report.dropped)
            return SpanExportResult.SUCCESS


def configure(dsn: str | None = None, *, service_name: str | None = None, **options: Any) -> TracerProvider:
    """One line of setup: a ``BatchSpanProcessor`` around ``PostgresSpanExporter`` on the global
    ``TracerProvider`` (created, with ``service_name`` if given, unless an SDK one is already set)."""
    exporter = PostgresSpanExporter(dsn, **options)
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        provider = current
    else:
        attributes = {"service.name": service_name} if service_name else {}
        provider = TracerProvider(resource=Resource.create(attributes))
        trace.set_tracer_provider(provider)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
