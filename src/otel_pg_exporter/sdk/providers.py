"""``configure()``: one line of setup, wiring the exporters onto the global OpenTelemetry providers."""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from .live import LiveSpanProcessor
from .log_exporter import PostgresLogExporter
from .span_exporter import PostgresSpanExporter

#: configure()'s BatchSpanProcessor settings: (our value, the SDK's env var that overrides it).
RECOMMENDED_BSP: dict[str, tuple[int, str]] = {
    "max_queue_size": (8192, "OTEL_BSP_MAX_QUEUE_SIZE"),
    "schedule_delay_millis": (1000, "OTEL_BSP_SCHEDULE_DELAY"),
    "max_export_batch_size": (512, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
    "export_timeout_millis": (30000, "OTEL_BSP_EXPORT_TIMEOUT"),
}


def _env_int(name: str) -> int | None:
    try:
        return int(os.environ.get(name, ""))
    except ValueError:
        return None


def configure(
    dsn: str | None = None,
    *,
    service_name: str | None = None,
    batch: dict[str, int] | None = None,
    logs: bool = True,
    **options: Any,
) -> TracerProvider:
    """One line of setup: a ``BatchSpanProcessor`` around ``PostgresSpanExporter`` on the global
    ``TracerProvider`` (created, with ``service_name`` if given, unless an SDK one is already set).

    The processor gets the recommended queue settings (``RECOMMENDED_BSP``) unless ``batch`` or the
    SDK's ``OTEL_BSP_*`` variables say otherwise. With ``logs`` (the default), a
    ``PostgresLogExporter`` sharing the exporter goes on the global ``LoggerProvider`` (created the
    same way), so content that instrumentations emit as log records reaches the span rows too.
    With ``live=True`` (or ``OTEL_EXPORTER_POSTGRES_LIVE=true``) a ``LiveSpanProcessor`` writes a
    ``running`` row for every span still open after ``live_delay_s`` (2 s)."""
    exporter = PostgresSpanExporter(dsn, **options)
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        provider = current
    else:
        attributes = {"service.name": service_name} if service_name else {}
        provider = TracerProvider(resource=Resource.create(attributes))
        trace.set_tracer_provider(provider)
    chosen = dict(batch or {})
    for name, (value, env_var) in RECOMMENDED_BSP.items():
        if name not in chosen and not os.environ.get(env_var):
            chosen[name] = value
    # the SDK refuses a batch larger than the queue (e.g. OTEL_BSP_MAX_QUEUE_SIZE=100)
    queue = chosen.get("max_queue_size") or _env_int("OTEL_BSP_MAX_QUEUE_SIZE") or 2048
    if "max_export_batch_size" in chosen and chosen["max_export_batch_size"] > queue:
        chosen["max_export_batch_size"] = queue
    provider.add_span_processor(BatchSpanProcessor(exporter, **chosen))
    if exporter.settings.live:
        provider.add_span_processor(LiveSpanProcessor(exporter))
    if logs:
        _configure_logs(exporter, provider.resource)
    return provider


def _configure_logs(exporter: PostgresSpanExporter, resource: Resource) -> None:
    from opentelemetry._logs import get_logger_provider, set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    current = get_logger_provider()
    if isinstance(current, LoggerProvider):
        logger_provider = current
    else:
        logger_provider = LoggerProvider(resource=resource)
        set_logger_provider(logger_provider)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(PostgresLogExporter(span_exporter=exporter))
    )
