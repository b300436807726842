"""The pipeline's data: what each pure stage hands the next. No I/O, no logic beyond conversions.

``SpanRecord`` (one ``spans`` row before encoding, with its ``TraceHints``) comes out of
``mapping``; ``encoding`` turns it into an ``EncodedSpan`` (``Limits`` say how), and
``trace_deltas`` merges the hints of a batch into one ``TraceDelta`` per trace.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson

EPOCH = datetime(1970, 1, 1)

#: A span's (or a resource's) attributes.
Attrs = Mapping[str, Any]


@dataclass(slots=True)
class TraceHints:
    """What one span contributes to its trace row; merged across spans by rank (lower wins)."""

    trace_id: UUID
    trace_hex: str
    is_root: bool
    start_ns: int
    #: (rank, value, source attribute)
    workflow: tuple[int, str, str]
    user: tuple[int, str, str] | None = None
    #: (rank, start_ns, value, source)
    query: tuple[int, int, str, str] | None = None
    execution_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SpanRecord:
    """One ``spans`` row before encoding (column names and order follow the seed)."""

    span_id: UUID
    trace_id: UUID
    parent_span_id: UUID | None
    span_type: str
    name: str
    status: str
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    tokens: dict[str, int]
    cost: Decimal | None
    model: str | None
    provider: str | None
    error: str | None
    error_type: str | None
    error_stack: str | None
    api_limits: dict[str, Any]
    retry_count: int
    timeout: int | None
    evaluation: dict[str, Any]
    metadata: dict[str, Any]
    hints: TraceHints


def ns_to_datetime(ns: int | None) -> datetime | None:
    if ns is None:
        return None
    return EPOCH + timedelta(microseconds=ns // 1000)


@dataclass(frozen=True, slots=True)
class Limits:
    """What encoding enforces: size caps (``max_payload_chars`` per JSON column and long TEXT
    column), the secret scrubber, and whether message content is stored at all."""

    max_payload_chars: int = 262_144
    scrub: Callable[[str], str] | None = None
    capture_content: bool = True


#: The ``api_limits_obj`` of most spans: one shared empty dict (read only).


@dataclass(slots=True)
class EncodedSpan:
    """A ``spans`` row ready for the writer: ``row`` is one JSON object holding every column of
    ``ROW_COLUMNS``, built in one pass; the other fields are what the writer needs to plan the batch
    (locks, placeholders, the children folded into their parent)."""

    span_id: UUID
    trace_id: UUID
    parent_span_id: UUID | None
    span_type: str
    name: str
    started_at: datetime | None
    retry_count: int
    #: the row as a JSON object (``{"span_id": ..., ..., "metadata": {...}}``)
    row: str
    hints: TraceHints
    parent_hex: str | None
    api_limits_obj: dict[str, Any] = field(default_factory=dict)
    #: True when ``encode_span`` had to change a value (see ``metadata.sanitized``)
    sanitized: bool = False
    #: the judgements the span carried, as ``otel_annotations`` rows (JSON list), or None
    annotations: str | None = None

    def columns(self) -> dict[str, Any]:
        """The row's column values (JSON columns as Python data). For the rare paths (degraded
        rows, benchmarks); the writer sends ``row`` as it is."""
        return orjson.loads(self.row)


@dataclass(slots=True)
class TraceDelta:
    """What a batch knows about one trace; the writer merges it into the row by rank."""

    trace_id: UUID
    trace_hex: str
    started_at: datetime
    workflow: tuple[int, str, str]
    user: tuple[int, str, str] | None
    user_uuid: UUID | None
    query: tuple[int, int, str, str] | None
    execution_id: str | None
    metadata: dict[str, Any]


#: Text columns checked on the fast path: (column, widest value that needs no change).
