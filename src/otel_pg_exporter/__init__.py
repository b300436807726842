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
from .exporter import PostgresSpanExporter
from .ids import span_uuid, trace_uuid
from .live import LiveSpanProcessor
from .log_exporter import PostgresLogExporter
from .providers import configure
from .schema import InstallResult, MigrationState, install_schema, schema_status
from .trace_store import TraceStore, TraceStoreError

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
    "TraceStore",
    "TraceStoreError",
    "__version__",
    "configure",
    "install_schema",
    "schema_status",
    "span_uuid",
    "trace_uuid",
]
