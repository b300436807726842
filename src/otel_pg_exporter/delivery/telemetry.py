"""Self-observability: the exporter's counters, as ``stats()`` and as OpenTelemetry metrics.

Metric names follow the SDK's own exporter metrics where they fit (``otel.sdk.exporter.span.*``,
``otel.sdk.exporter.operation.duration``); what has no SDK equivalent lives under
``otel_pg.exporter.*``. Instruments come from the global MeterProvider through the API, so they
reach whatever metrics pipeline the application has (and cost nothing without one).
"""

from __future__ import annotations

import itertools
import threading
from enum import Enum
from typing import Any

from opentelemetry import metrics

from .._version import __version__

COMPONENT_TYPE = "postgres_span_exporter"


class Counter(str, Enum):
    """Every counter of ``stats()``, declared once (the value is the ``stats()`` key)."""

    # mirrored to OpenTelemetry metrics (``COUNTERS``)
    EXPORTED = "exported"
    SPOOLED = "spooled"
    REPLAYED = "replayed"
    RETRIED = "retried"
    DROPPED = "dropped"
    SANITIZED = "sanitized"
    DEGRADED = "degraded"
    QUARANTINED = "quarantined"
    # stats() only
    MAPPING_FALLBACKS = "mapping_fallbacks"
    FAILED_BATCHES = "failed_batches"
    SPLIT_BATCHES = "split_batches"
    PREPARED_STATEMENTS_DISABLED = "prepared_statements_disabled"
    SPOOL_UNAVAILABLE = "spool_unavailable"
    LIVE_ROWS = "live_rows"
    LIVE_SKIPPED = "live_skipped"
    LOG_RECORDS = "log_records"
    LOG_RECORDS_IGNORED = "log_records_ignored"  # and one log_records_ignored_<reason> per reason
    LOG_FRAGMENTS_MERGED = "log_fragments_merged"
    #: coding agents' log events stored as spans (Claude Code, Codex, Gemini CLI), and skipped ones
    CODING_AGENT_SPANS = "coding_agent_spans"
    CODING_AGENT_SKIPPED = "coding_agent_skipped"
    LOG_FRAGMENTS_DROPPED = "log_fragments_dropped"
    FORWARD_SPANS_SENT = "forward_spans_sent"
    FORWARD_SPANS_FAILED = "forward_spans_failed"
    FORWARD_SPANS_SKIPPED = "forward_spans_skipped"
    FORWARD_UNATTRIBUTED = "forward_unattributed"
    FORWARD_DROPPED = "forward_dropped"


class DropReason(str, Enum):
    """Why spans were lost (``stats()["dropped_by_reason"]``, the metric's ``error.type``)."""

    DATABASE_UNREACHABLE = "database_unreachable"  # and no spool
    DATABASE_NOT_READY = "database_not_ready"  # schema or grants missing, and no spool
    INTERNAL_ERROR = "internal_error"
    INVALID_SPAN = "invalid_span"
    REJECTED_BY_DATABASE = "rejected_by_database"
    REFUSED_BY_DATABASE = "refused_by_database"
    QUARANTINE_FULL = "quarantine_full"
    SPOOL_ERROR = "spool_error"
    SPOOL_FULL = "spool_full"
    SPOOL_CORRUPT = "spool_corrupt"


_instance_ids = itertools.count()

#: stats() key → (metric name, description); all are counters of spans except ``retried``.
COUNTERS: dict[Counter, tuple[str, str]] = {
    Counter.EXPORTED: ("otel.sdk.exporter.span.exported", "Spans stored in PostgreSQL"),
    Counter.SPOOLED: ("otel_pg.exporter.span.spooled", "Spans written to the local spool"),
    Counter.REPLAYED: ("otel_pg.exporter.span.replayed", "Spans stored from the spool"),
    Counter.RETRIED: ("otel_pg.exporter.batch.retried", "Export attempts retried after a connection error"),
    Counter.DROPPED: ("otel_pg.exporter.span.dropped", "Spans lost, by reason"),
    Counter.SANITIZED: ("otel_pg.exporter.span.sanitized", "Spans with a value changed to fit the schema"),
    Counter.DEGRADED: (
        "otel_pg.exporter.span.degraded",
        "Spans stored without payload after a database refusal",
    ),
    Counter.QUARANTINED: (
        "otel_pg.exporter.span.quarantined",
        "Spans the database refused even alone, set aside in the quarantine (otel-pg-spool replays them)",
    ),
}


class ExporterTelemetry:
    """Thread-safe counters mirrored to OTel instruments."""

    def __init__(self) -> None:
        name = f"{COMPONENT_TYPE}/{next(_instance_ids)}"
        self._attrs = {"otel.component.type": COMPONENT_TYPE, "otel.component.name": name}
        meter = metrics.get_meter("otel_pg_exporter", __version__)
        self._counters = {
            key: meter.create_counter(
                metric, unit="{span}" if key is not Counter.RETRIED else "{batch}", description=desc
            )
            for key, (metric, desc) in COUNTERS.items()
        }
        self._inflight = meter.create_up_down_counter(
            "otel.sdk.exporter.span.inflight", unit="{span}", description="Spans being exported"
        )
        self._duration = meter.create_histogram(
            "otel.sdk.exporter.operation.duration", unit="s", description="Duration of export() calls"
        )
        self._lock = threading.Lock()
        self._values: dict[str, int] = {key.value: 0 for key in COUNTERS}
        self._dropped_by_reason: dict[str, int] = {}
        self._latency = {"count": 0, "total_s": 0.0, "max_s": 0.0, "last_s": 0.0}
        self._other: dict[str, int] = {
            Counter.MAPPING_FALLBACKS.value: 0,
            Counter.FAILED_BATCHES.value: 0,
            Counter.SPLIT_BATCHES.value: 0,
        }

    def add(self, key: Counter, value: int, reason: DropReason | None = None, detail: str = "") -> None:
        """Count ``value`` under ``key`` (``detail``: a per-key suffix, e.g. a log record's reason)."""
        if value <= 0:
            return
        name = f"{key.value}_{detail}" if detail else key.value
        with self._lock:
            if name in self._values:
                self._values[name] += value
                if reason is not None:
                    why = reason.value
                    self._dropped_by_reason[why] = self._dropped_by_reason.get(why, 0) + value
            else:
                self._other[name] = self._other.get(name, 0) + value
        instrument = self._counters.get(key) if not detail else None
        if instrument is not None:
            attrs = {**self._attrs, "error.type": reason.value} if reason is not None else self._attrs
            instrument.add(value, attrs)

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (another thread may have held it at the fork)."""
        self._lock = threading.Lock()

    def inflight(self, delta: int) -> None:
        self._inflight.add(delta, self._attrs)

    def export_duration(self, seconds: float, outcome: str) -> None:
        with self._lock:
            lat = self._latency
            lat["count"] += 1
            lat["total_s"] += seconds
            lat["last_s"] = seconds
            lat["max_s"] = max(lat["max_s"], seconds)
        self._duration.record(seconds, {**self._attrs, "otel_pg.outcome": outcome})

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            lat = self._latency
            out: dict[str, Any] = {**self._values, **self._other}
            out["dropped_by_reason"] = dict(self._dropped_by_reason)
            out["export_latency_ms"] = {
                "count": lat["count"],
                "avg": round(1000 * lat["total_s"] / lat["count"], 3) if lat["count"] else 0.0,
                "max": round(1000 * lat["max_s"], 3),
                "last": round(1000 * lat["last_s"], 3),
            }
            return out
