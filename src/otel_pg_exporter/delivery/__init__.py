"""Delivery: getting encoded batches into the database however it behaves.

``delivery.Delivery`` (retries within the export timeout, the durable spool, replay, the pool),
``retry`` (which errors are retried, backoff, state-change logging), ``spool`` (the on-disk
format), ``forward`` (copies to a user's LangSmith / Langfuse), ``telemetry`` (counters and
OpenTelemetry metrics about the exporter itself).
"""

from .delivery import Delivered, Delivery, Outcome
from .telemetry import ExporterTelemetry

__all__ = ["Delivered", "Delivery", "ExporterTelemetry", "Outcome"]
