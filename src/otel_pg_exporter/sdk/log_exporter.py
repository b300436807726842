"""``PostgresLogExporter``: GenAI content, evaluations and exceptions that arrive as log records.

Thin orchestration: ``logs.map_log_records`` groups a batch by span, ``logs.protect_fragment``
applies the privacy settings, and the span exporter's delivery path (retries, spool, replay) merges
the fragments into the span rows. ``configure()`` makes one that shares the span exporter's pool and
spool; ``OTEL_LOGS_EXPORTER=postgres`` makes a standalone one from the same settings.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..pipeline.log_fragments import map_log_records, protect_fragment
from .span_exporter import PostgresSpanExporter

try:  # SDK >= 1.39 names; the older aliases below
    from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
except ImportError:  # pragma: no cover - older SDKs
    from opentelemetry.sdk._logs.export import (  # type: ignore[attr-defined,no-redef]
        LogExporter as LogRecordExporter,
    )
    from opentelemetry.sdk._logs.export import (  # type: ignore[attr-defined,no-redef]
        LogExportResult as LogRecordExportResult,
    )

logger = logging.getLogger("otel_pg_exporter")


class PostgresLogExporter(LogRecordExporter):  # type: ignore[misc,valid-type]
    """A log record exporter that merges GenAI log events into the matching ``spans`` rows.

    Takes the same ``dsn`` and options as ``PostgresSpanExporter``, or ``span_exporter=`` to share
    one (its pool, spool, privacy and pricing settings). Records with no sampled span context, and
    records that are neither GenAI content, an evaluation nor an exception, are ignored and counted
    in ``stats()["log_records_ignored"]``: application logs may share the pipeline.
    """

    def __init__(
        self, dsn: str | None = None, *, span_exporter: PostgresSpanExporter | None = None, **options: Any
    ) -> None:
        if span_exporter is not None and (dsn is not None or options):
            raise TypeError("pass either span_exporter or dsn/options, not both")
        self._token: object | None = None
        if span_exporter is None:
            # a core of our own never forwards: forwarding sends spans, the span exporter does that
            span_exporter = PostgresSpanExporter(dsn, **{"forward": False, **options})
        else:
            self._token = span_exporter.retain()
        self._core = span_exporter
        self._shut = False

    @property
    def span_exporter(self) -> PostgresSpanExporter:
        return self._core

    def export(self, batch: Sequence[Any]) -> Any:
        """Map, protect and merge one batch. Never raises into the SDK."""
        if self._shut:
            return LogRecordExportResult.FAILURE
        core = self._core
        try:
            mapped = map_log_records(batch)
            core.telemetry.add("log_records", len(batch))
            for reason, count in mapped.ignored.items():
                core.telemetry.add("log_records_ignored", count)
                core.telemetry.add(f"log_records_ignored_{reason}", count)
            fragments = [protect_fragment(f, core.limits, core.settings.redact) for f in mapped.fragments]
            fragments = [f for f in fragments if not f.is_empty() or f.omitted]
            if not fragments:
                return LogRecordExportResult.SUCCESS
            ok = core.deliver_log_fragments(fragments)
            return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE
        except Exception as exc:  # never raise into the SDK
            logger.warning("otel-pg-exporter: log batch not stored: %s", type(exc).__name__)
            core.telemetry.add("failed_batches", 1)
            return LogRecordExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        """Release the shared exporter (the last user closes it), or close our own."""
        if self._shut:
            return
        self._shut = True
        if self._token is not None:
            self._core.release(self._token)
        else:
            self._core.shutdown()

    def stats(self) -> dict[str, Any]:
        return self._core.stats()
