"""otel-pg-exporter: store OpenTelemetry (GenAI) traces in PostgreSQL ``traces`` / ``spans`` tables."""

from __future__ import annotations

from ._version import __version__
from .errors import (
    ChecksumMismatch,
    ConfigurationError,
    ConnectionFailed,
    OtelPgError,
    PermissionDenied,
    SchemaDrift,
    SchemaError,
)
from .pipeline.ids import span_uuid, trace_uuid
from .pipeline.model import SpanRecord
from .query.trace_store import TraceStore, TraceStoreError
from .schema.migrations import InstallResult, MigrationState, install_schema, schema_status
from .sdk.live import LiveSpanProcessor
from .sdk.log_exporter import PostgresLogExporter
from .sdk.providers import configure
from .sdk.span_exporter import PostgresSpanExporter

__all__ = [
    "ChecksumMismatch",
    "ConfigurationError",
    "ConnectionFailed",
    "InstallResult",
    "LiveSpanProcessor",
    "MigrationState",
    "OtelPgError",
    "PermissionDenied",
    "PostgresLogExporter",
    "PostgresSpanExporter",
    "SchemaDrift",
    "SchemaError",
    "SpanRecord",
    "TraceStore",
    "TraceStoreError",
    "__version__",
    "configure",
    "install_schema",
    "schema_status",
    "span_uuid",
    "trace_uuid",
]
