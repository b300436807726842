"""otel-pg-exporter: store OpenTelemetry (GenAI) traces in PostgreSQL ``traces`` / ``spans`` tables."""

from __future__ import annotations

from .errors import (
    ChecksumMismatch,
    ConfigurationError,
    ConnectionFailed,
    OtelPgError,
    PermissionDenied,
    SchemaDrift,
    SchemaError,
)
from .schema import InstallResult, MigrationState, install_schema, schema_status

__version__ = "0.1.0"

__all__ = [
    "ChecksumMismatch",
    "ConfigurationError",
    "ConnectionFailed",
    "InstallResult",
    "MigrationState",
    "OtelPgError",
    "PermissionDenied",
    "SchemaDrift",
    "SchemaError",
    "__version__",
    "install_schema",
    "schema_status",
]
