"""Self-observability: the exporter's counters, as ``stats()`` and as OpenTelemetry metrics.

Metric names follow the SDK's own exporter metrics where they fit (``otel.sdk.exporter.span.*``,
``otel.sdk.exporter.operation.duration``); what has no SDK equivalent lives under
``otel_pg.exporter.*``. Instruments come from the global MeterProvider through the API, so they
reach whatever metrics pipeline the application has (and cost nothing without one).
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from opentelemetry import metrics

from .._version import __version__

COMPONENT_TYPE = "postgres_span_exporter"
_instance_ids = itertools.count()

#: stats() key → (metric name, description); all are counters of spans except ``retried``.
COUNTERS: dict[str, tuple[str, str]] = {
    "exported": ("otel.sdk.exporter.span.exported", "Spans stored in PostgreSQL"),
    "spooled": ("otel_pg.exporter.span.spooled", "Spans written to the local spool"),
    "replayed": ("otel_pg.exporter.span.replayed", "Spans stored from the spool"),
    "retried": ("otel_pg.exporter.batch.retried", "Export attempts retried after a connection error"),
    "dropped": ("otel_pg.exporter.span.dropped", "Spans lost, by reason"),
    "sanitized": ("otel_pg.exporter.span.sanitized", "Spans with a value changed to fit the schema"),
    "degraded": ("otel_pg.exporter.span.degraded", "Spans stored without payload after a database refusal"),
    "quarantined": (
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
                metric, unit="{span}" if key != "retried" else "{batch}", description=desc
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
        self._values: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._dropped_by_reason: dict[str, int] = {}
        self._latency = {"count": 0, "total_s": 0.0, "max_s": 0.0, "last_s": 0.0}
        self._other: dict[str, int] = {"mapping_fallbacks": 0, "failed_batches": 0, "split_batches": 0}

    def add(self, key: str, value: int, reason: str | None = None) -> None:
        if value <= 0:
            return
        with self._lock:
            if key in self._values:
                self._values[key] += value
                if reason:
                    self._dropped_by_reason[reason] = self._dropped_by_reason.get(reason, 0) + value
            else:
                self._other[key] = self._other.get(key, 0) + value
        if key in self._counters:
            attrs = {**self._attrs, "error.type": reason} if reason else self._attrs
            self._counters[key].add(value, attrs)

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
