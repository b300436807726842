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
from .pipeline.annotations import Annotation, AnnotationError, AnnotatorKind, Target
from .pipeline.ids import span_uuid, trace_uuid
from .pipeline.model import SpanRecord
from .query.trace_store import TraceStore, TraceStoreError
from .schema.migrations import InstallResult, MigrationState, install_schema, schema_status
from .sdk.annotations import Annotated, annotate, annotate_current_span, annotate_many, target_of
from .sdk.live import LiveSpanProcessor
from .sdk.log_exporter import PostgresLogExporter
from .sdk.providers import configure
from .sdk.span_exporter import PostgresSpanExporter

__all__ = [
    "Annotated",
    "Annotation",
    "AnnotationError",
    "AnnotatorKind",
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
    "Target",
    "TraceStore",
    "TraceStoreError",
    "__version__",
    "annotate",
    "annotate_current_span",
    "annotate_many",
    "configure",
    "install_schema",
    "schema_status",
    "span_uuid",
    "target_of",
    "trace_uuid",
]
