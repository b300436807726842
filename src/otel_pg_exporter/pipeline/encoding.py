"""Mapped records → column-ready values. Pure: sanitizing, JSON encoding, per-trace merging.

``encode_span`` makes a ``SpanRecord`` fit the seed columns (``sanitize``) and records every change in
``metadata.sanitized``. ``trace_deltas`` merges the ``TraceHints`` of a batch into one ``TraceDelta``
per trace, sorted by trace id (the lock order of the writer).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import orjson

from ..schema.tables import SEED_COLUMNS, SPAN_JSON_COLUMNS, SPAN_SCRUBBED_COLUMNS, VARCHAR_WIDTHS
from .conventions import CONTENT_ATTRIBUTES, FLAT_PREFIXES, OPERATION_DETAILS_EVENT
from .mapping import EPOCH, SpanRecord, TraceHints
from .privacy import scrub_json_text
from .sanitize import INT_MAX, clamp_int, clean_text, column_cost, encode_json

#: Columns that may carry free text from the application, and so secrets (``schema.tables``).
SCRUBBED = SPAN_SCRUBBED_COLUMNS
#: VARCHAR widths of the seed schema (``schema.tables``).
VARCHAR = VARCHAR_WIDTHS
_dumps = json.JSONEncoder(ensure_ascii=False).encode
_TRACE_HEX = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True, slots=True)
class Limits:
    """What encoding enforces: size caps (``max_payload_chars`` per JSON column and long TEXT
    column), the secret scrubber, and whether message content is stored at all."""

    max_payload_chars: int = 262_144
    scrub: Callable[[str], str] | None = None
    capture_content: bool = True


#: The ``api_limits_obj`` of most spans: one shared empty dict (read only).
_NO_LIMITS: dict[str, Any] = {}

OMITTED = {"_omitted": "content capture is off"}


def _without_content(record: SpanRecord) -> None:
    """Drop message content (and content-bearing attributes) but keep everything else."""
    if record.inputs:
        record.inputs = dict(OMITTED)
    if record.outputs:
        record.outputs = dict(OMITTED)
    record.hints.query = None
    attrs = record.metadata.get("attributes")
    if isinstance(attrs, dict):
        record.metadata["attributes"] = {
            k: v for k, v in attrs.items() if k not in CONTENT_ATTRIBUTES and not k.startswith(FLAT_PREFIXES)
        }
    for event in record.metadata.get("events", []):
        if event.get("name") == OPERATION_DETAILS_EVENT:
            event["attributes"] = dict(OMITTED)
    record.metadata["content"] = "omitted"


#: The ``spans`` columns a row carries, in the seed's order (``child_spans`` is added by the writer,
#: which folds a batch's children into their parent).
ROW_COLUMNS: tuple[str, ...] = tuple(c for c in SEED_COLUMNS["spans"] if c != "child_spans")
#: JSONB columns (embedded in the row as JSON values, not as strings).
JSON_COLUMNS = SPAN_JSON_COLUMNS


@dataclass(slots=True)
class EncodedSpan:
    """A ``spans`` row ready for the writer: ``row`` is one JSON object holding every column of
    ``ROW_COLUMNS``, built in one pass; the other fields are what the writer needs to plan the batch
    (locks, placeholders, the children folded into their parent)."""

    span_id: uuid.UUID
    trace_id: uuid.UUID
    parent_span_id: uuid.UUID | None
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

    def columns(self) -> dict[str, Any]:
        """The row's column values (JSON columns as Python data). For the rare paths (degraded
        rows, benchmarks); the writer sends ``row`` as it is."""
        return orjson.loads(self.row)


@dataclass(slots=True)
class TraceDelta:
    """What a batch knows about one trace; the writer merges it into the row by rank."""

    trace_id: uuid.UUID
    trace_hex: str
    started_at: datetime
    workflow: tuple[int, str, str]
    user: tuple[int, str, str] | None
    user_uuid: uuid.UUID | None
    query: tuple[int, int, str, str] | None
    execution_id: str | None
    metadata: dict[str, Any]


#: Text columns checked on the fast path: (column, widest value that needs no change).
_TEXT_WIDTHS = (
    ("span_type", VARCHAR["span_type"]),
    ("name", VARCHAR["name"]),
    ("model", VARCHAR["model"]),
    ("provider", VARCHAR["provider"]),
    ("error_type", VARCHAR["error_type"]),
)


def _dumps_row(values: dict[str, Any]) -> str:
    """Part of a row as JSON text: UUIDs and datetimes as orjson writes them, other types as text."""
    return orjson.dumps(values, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def encode_span(record: SpanRecord, limits: Limits) -> EncodedSpan:
    """Sanitize and JSON-encode one record into one row. Never raises for bad values; notes what it
    changed.

    The common case takes one pass: the row's columns go through ``orjson`` in two objects (the
    columns the scrubber reads, and the rest), checked once for what PostgreSQL refuses. Any value
    that needs a change (NUL, lone surrogates, over-long text, huge integers, a column over the
    cap) sends the span through the column-by-column path that fixes and notes each change."""
    if not limits.capture_content:
        _without_content(record)
    metadata = record.metadata
    cost, cost_value, cost_note = column_cost(record.cost)
    if cost_value is not None:
        metadata.setdefault("cost", {})["exact"] = str(cost_value)
    elif "cost" in metadata and cost_note:
        metadata["cost"]["status"] = "invalid"
    notes: dict[str, Any] = {"cost": cost_note} if cost_note else {}
    row = None if notes else _fast_row(record, cost, limits)
    sanitized, span_type = False, record.span_type
    if row is None:
        row, span_type, sanitized = _checked_row(record, cost, limits, notes)
    return EncodedSpan(
        span_id=record.span_id,
        trace_id=record.trace_id,
        parent_span_id=record.parent_span_id,
        span_type=span_type,
        name=record.name,
        started_at=record.started_at,
        retry_count=record.retry_count if type(record.retry_count) is int else 0,
        row=row,
        hints=record.hints,
        parent_hex=(metadata.get("otel") or {}).get("parent_span_id"),
        api_limits_obj=record.api_limits or _NO_LIMITS,
        sanitized=sanitized,
    )


def _fast_row(record: SpanRecord, cost: Decimal, limits: Limits) -> str | None:
    """The row in one pass, or None when some value needs the checked path."""
    for column, width in _TEXT_WIDTHS:
        value = getattr(record, column)
        if value is not None and (type(value) is not str or len(value) > width or "\x00" in value):
            return None
    cap = limits.max_payload_chars
    for value in (record.error, record.error_stack):
        if value is not None and (type(value) is not str or len(value) > cap or "\x00" in value):
            return None
    for value in (record.duration_ms, record.retry_count, record.timeout):
        if value is not None and (type(value) is not int or not 0 <= value <= INT_MAX):
            return None
    if not record.span_type:
        return None
    try:
        plain = _dumps_row(
            {
                "span_id": record.span_id,
                "trace_id": record.trace_id,
                "parent_span_id": record.parent_span_id,
                "span_type": record.span_type,
                "status": record.status,
                "started_at": record.started_at,
                "completed_at": record.completed_at,
                "duration_ms": record.duration_ms,
                "tokens": record.tokens,
                "cost": str(cost),
                "model": record.model,
                "provider": record.provider,
                "error_type": record.error_type,
                "retry_count": record.retry_count,
                "timeout": record.timeout,
            }
        )
        content = _dumps_row(
            {
                "name": record.name or "(unnamed)",
                "inputs": record.inputs,
                "outputs": record.outputs,
                "error": record.error,
                "error_stack": record.error_stack,
                "api_limits": record.api_limits,
                "evaluation": record.evaluation,
                "metadata": record.metadata,
            }
        )
    except TypeError:  # lone surrogates, integers beyond 64 bits
        return None
    if len(content) > cap or "u0000" in content or "u0000" in plain:
        return None
    if limits.scrub is not None:
        content = scrub_json_text(limits.scrub, content)
    return plain[:-1] + "," + content[1:]


def _checked_row(
    record: SpanRecord, cost: Decimal, limits: Limits, notes: dict[str, Any]
) -> tuple[str, str, bool]:
    """The row column by column, each value fixed to fit and each change noted in
    ``metadata.sanitized``. Returns the row, its (fixed) span type, and whether anything was noted."""
    cap = limits.max_payload_chars
    scrub = limits.scrub

    def text(column: str, value: Any, max_chars: int) -> str | None:
        cleaned, note = clean_text(value, max_chars)
        if note:
            notes[column] = note
        if scrub is not None and cleaned and column in SCRUBBED:
            cleaned = scrub(cleaned)
        return cleaned

    def js(column: str, value: Any) -> str:
        encoded, note = encode_json(value, cap)
        if note:
            notes[column] = note
        return scrub_json_text(scrub, encoded) if scrub is not None and column in SCRUBBED else encoded

    def integer(column: str, value: Any, lo: int, default: int | None) -> int | None:
        number, note = clamp_int(value, lo, INT_MAX)
        if note:
            notes[column] = note
        return default if number is None else number

    values: dict[str, Any] = {
        "span_id": record.span_id,
        "trace_id": record.trace_id,
        "parent_span_id": record.parent_span_id,
        "span_type": text("span_type", record.span_type, VARCHAR["span_type"]) or "other",
        "name": text("name", record.name, VARCHAR["name"]) or "(unnamed)",
        "status": record.status,
        "started_at": record.started_at,
        "completed_at": record.completed_at,
        "duration_ms": integer("duration_ms", record.duration_ms, 0, 0) or 0,
        "inputs": js("inputs", record.inputs),
        "outputs": js("outputs", record.outputs),
        "tokens": js("tokens", record.tokens),
        "cost": cost,
        "model": text("model", record.model, VARCHAR["model"]),
        "provider": text("provider", record.provider, VARCHAR["provider"]),
        "error": text("error", record.error, cap),
        "error_type": text("error_type", record.error_type, VARCHAR["error_type"]),
        "error_stack": text("error_stack", record.error_stack, cap),
        "api_limits": js("api_limits", record.api_limits),
        "retry_count": integer("retry_count", record.retry_count, 0, 0) or 0,
        "timeout": integer("timeout", record.timeout, 0, None),
        "evaluation": js("evaluation", record.evaluation),
    }
    metadata = record.metadata
    if notes:
        metadata["sanitized"] = notes
    meta = _encode_metadata(metadata, cap)
    values["metadata"] = scrub_json_text(scrub, meta) if scrub is not None else meta
    return row_json(values), values["span_type"], bool(notes)


def row_json(values: dict[str, Any]) -> str:
    """A row object from column values, JSON columns given as JSON text (embedded as they are)."""
    return "{" + ",".join(
        f'"{c}":{values[c] if c in JSON_COLUMNS else json_scalar(values[c])}' for c in ROW_COLUMNS
    ) + "}"


def json_scalar(value: Any) -> str:
    """A non-JSON column value as JSON: strings escaped, numbers as they are, times in ISO 8601,
    UUIDs and decimals as strings."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return _dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return '"' + value.isoformat() + '"'
    return '"' + str(value) + '"'  # UUID, Decimal


def _encode_metadata(metadata: dict[str, Any], cap: int) -> str:
    text, note = encode_json(metadata, cap)
    if note is None or "truncated_from_chars" not in note:
        if note:
            metadata.setdefault("sanitized", {})["metadata"] = note
            text, _ = encode_json(metadata, cap)
        return text
    # Too big: shrink the bulky parts one by one so ids and notes survive.
    for key in ("attributes", "events", "resource", "links"):
        if key in metadata:
            part, _ = encode_json(metadata[key], cap // 4)
            metadata[key] = {"_truncated": True, "preview_json": part[: cap // 4]}
            text, note = encode_json(metadata, cap)
            if note is None or "truncated_from_chars" not in note:
                break
    return text


def _explicit_execution_id(value: str | None, own_hex: str) -> str | None:
    """Explicit ids must never look like another trace's hex id (they share one UNIQUE column)."""
    if not value:
        return None
    cleaned, _ = clean_text(value, VARCHAR["execution_id"])
    if not cleaned or (_TRACE_HEX.match(cleaned) and cleaned != own_hex):
        return None
    return cleaned


class Hinted(Protocol):
    """Anything that tells a trace something: an encoded span, or a log fragment's hints."""

    @property
    def hints(self) -> TraceHints: ...
    @property
    def started_at(self) -> datetime | None: ...


def trace_deltas(spans: Sequence[Hinted]) -> list[TraceDelta]:
    """One delta per trace in the batch, sorted by trace id; lower-ranked candidates win."""
    by_trace: dict[uuid.UUID, TraceDelta] = {}
    for span in sorted(spans, key=lambda s: s.hints.start_ns):
        h = span.hints
        started = span.started_at or EPOCH
        delta = by_trace.get(h.trace_id)
        if delta is None:
            delta = TraceDelta(
                trace_id=h.trace_id,
                trace_hex=h.trace_hex,
                started_at=started,
                workflow=h.workflow,
                user=None,
                user_uuid=None,
                query=None,
                execution_id=None,
                metadata={"otel_trace_id": h.trace_hex},
            )
            by_trace[h.trace_id] = delta
        delta.started_at = min(delta.started_at, started)
        if h.workflow[0] < delta.workflow[0]:
            delta.workflow = h.workflow
        if h.user is not None and (delta.user is None or h.user[0] < delta.user[0]):
            delta.user = h.user
        if h.query is not None and (delta.query is None or h.query[:2] < delta.query[:2]):
            delta.query = h.query
        if delta.execution_id is None:
            delta.execution_id = _explicit_execution_id(h.execution_id, h.trace_hex)
            if h.execution_id:
                delta.metadata["requested_execution_id"] = h.execution_id[:255]
        for key, value in h.metadata.items():
            if key == "resources":  # one per service: the first one seen of each
                merged = delta.metadata.setdefault("resources", {})
                for service, resource in value.items():
                    merged.setdefault(service, resource)
            elif key != "user":
                delta.metadata.setdefault(key, value)
    for delta in by_trace.values():
        wf_rank, wf_value, wf_source = delta.workflow
        delta.workflow = (wf_rank, clean_text(wf_value, VARCHAR["workflow_id"])[0] or "unknown", wf_source)
        if delta.user is not None:
            delta.user_uuid = _as_uuid(delta.user[1])
    return [by_trace[k] for k in sorted(by_trace, key=lambda u: u.int)]


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value.strip())
    except (ValueError, AttributeError):
        return None
