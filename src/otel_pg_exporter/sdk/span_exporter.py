"""``PostgresSpanExporter``: the OpenTelemetry SDK's ``SpanExporter`` over an ``Engine``.

It only composes: ``export()`` hands the batch to ``Engine.export_spans`` (map → price → redact →
encode → deliver) and answers the SDK with the result; everything else is the engine's. The
properties below (``settings``, ``delivery``, ``spool``, ``pricer``, ``limits``, ``telemetry``) are the
engine's, kept here because they are part of the exporter's public face.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ..config.settings import ExporterSettings
from ..config.user_settings import UserObservability
from ..delivery import Delivered, Delivery, ExporterTelemetry
from ..delivery.spool import Spool
from ..pipeline.encoding import EncodedSpan, Limits
from ..pipeline.mapping import SpanRecord
from ..pipeline.pricing import Pricer
from .engine import Engine


class PostgresSpanExporter(SpanExporter):
    """An OpenTelemetry ``SpanExporter`` that stores spans in the seed's ``traces``/``spans`` tables.

    ``dsn``: argument, else ``OTEL_EXPORTER_POSTGRES_DSN``, else ``DATABASE_URL``, else libpq's
    ``PG*`` variables. Options (or ``OTEL_EXPORTER_POSTGRES_<NAME>``): ``timeout_s``,
    ``max_payload_chars``, ``prepared_statements`` (False behind PgBouncer/Supabase transaction
    poolers), ``pool_min_size``, ``pool_max_size``, ``application_name``, ``spool_dir`` ("off" to
    disable), ``spool_max_bytes``, ``shutdown_timeout_s``. See the README for defaults.
    ``engine=``: share an existing ``Engine`` instead (no dsn/options then).
    """

    def __init__(self, dsn: str | None = None, *, engine: Engine | None = None, **options: Any) -> None:
        if engine is not None and (dsn is not None or options):
            raise TypeError("pass either engine or dsn/options, not both")
        self.engine = engine if engine is not None else Engine(dsn, **options)
        self._token: object | None = self.engine.retain()

    # -- SpanExporter API --------------------------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.engine.export_spans(spans).result

    def export_with_outcome(self, spans: Sequence[ReadableSpan]) -> Delivered:
        """``export()``, and what became of the batch (``Engine.export_spans``)."""
        return self.engine.export_spans(spans)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.engine.flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Drain the spool to the database for up to ``shutdown_timeout_s``, keep the rest on disk,
        close the pool. Idempotent; later ``export()`` calls return FAILURE. When other adapters
        share the engine (``retain``), this happens when the last of them is done."""
        token, self._token = self._token, None
        if token is not None:
            self.engine.release(token)

    def retain(self) -> object:
        """Register one more user of this exporter's engine (see ``Engine.retain``)."""
        return self.engine.retain()

    def release(self, token: object) -> None:
        self.engine.release(token)

    # -- the engine's, as the exporter's public face ------------------------------------------------

    @property
    def settings(self) -> ExporterSettings:
        return self.engine.settings

    @property
    def delivery(self) -> Delivery:
        return self.engine.delivery

    @property
    def spool(self) -> Spool | None:
        """The durable spool (None when it is off or its directory is not usable)."""
        return self.engine.spool

    @property
    def pricer(self) -> Pricer:
        return self.engine.pricer

    @property
    def limits(self) -> Limits:
        """Size caps, scrubber and content switch applied to everything this exporter stores."""
        return self.engine.limits

    @property
    def telemetry(self) -> ExporterTelemetry:
        return self.engine.telemetry

    def stats(self) -> dict[str, Any]:
        """Counters since start (``Engine.stats``)."""
        return self.engine.stats()

    def encode(self, spans: Sequence[ReadableSpan]) -> list[EncodedSpan]:
        """Map and encode a batch, as ``export()`` would (``Engine.encode``)."""
        return self.engine.encode(spans)

    def trace_users(self, records: Sequence[SpanRecord | EncodedSpan]) -> dict[uuid.UUID, uuid.UUID]:
        return self.engine.trace_users(records)

    def user_observability(self, user_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, UserObservability]:
        return self.engine.user_observability(user_ids)
