"""``PostgresLogExporter``: GenAI content, evaluations and exceptions that arrive as log records.

An adapter over ``Engine.export_logs``: ``pipeline.log_fragments`` groups a batch by span and
applies the privacy settings, and the engine's delivery (retries, spool, replay) merges the
fragments into the span rows. ``configure()`` makes one that shares the span exporter's engine;
``OTEL_LOGS_EXPORTER=postgres`` makes a standalone one from the same settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .engine import Engine
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


class PostgresLogExporter(LogRecordExporter):  # type: ignore[misc,valid-type]
    """A log record exporter that merges GenAI log events into the matching ``spans`` rows.

    Takes the same ``dsn`` and options as ``PostgresSpanExporter``, or ``span_exporter=`` to share
    its engine (pool, spool, privacy and pricing settings), or ``engine=``. Records with no sampled
    span context, and records that are neither GenAI content, an evaluation nor an exception, are
    ignored and counted in ``stats()["log_records_ignored"]``: application logs may share the
    pipeline.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        span_exporter: PostgresSpanExporter | None = None,
        engine: Engine | None = None,
        **options: Any,
    ) -> None:
        given = [x for x in (span_exporter, engine) if x is not None]
        if len(given) > 1 or (given and (dsn is not None or options)):
            raise TypeError("pass one of span_exporter, engine or dsn/options")
        if span_exporter is not None:
            engine = span_exporter.engine
        if engine is None:
            # an engine of our own never forwards: forwarding sends spans, the span exporter does that
            engine = Engine(dsn, **{"forward": False, **options})
        self.engine = engine
        self._token: object | None = engine.retain()

    def export(self, batch: Sequence[Any]) -> Any:
        """Map, protect and merge one batch (``Engine.export_logs``). Never raises into the SDK."""
        if self._token is None:
            return LogRecordExportResult.FAILURE
        delivered = self.engine.export_logs(batch)
        return LogRecordExportResult.SUCCESS if delivered.durable else LogRecordExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        """Release the engine (the last of its users closes it)."""
        token, self._token = self._token, None
        if token is not None:
            self.engine.release(token)

    def stats(self) -> dict[str, Any]:
        return self.engine.stats()
