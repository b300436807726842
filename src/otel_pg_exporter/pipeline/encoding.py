"""Mapped records → column-ready values. Pure: sanitizing, JSON encoding, per-trace merging.

``encode_span`` makes a ``SpanRecord`` fit the seed columns (``sanitize``) and records every change in
``metadata.sanitized``. ``trace_deltas`` merges the ``TraceHints`` of a batch into one ``TraceDelta``
per trace, sorted by trace id (the lock order of the writer).
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from ..schema.tables import SEED_COLUMNS, SPAN_JSON_COLUMNS, SPAN_SCRUBBED_COLUMNS, VARCHAR_WIDTHS
from .annotations import from_evaluation, rows_json
from .conventions import CONTENT_ATTRIBUTES, FLAT_PREFIXES, OPERATION_DETAILS_EVENT
from .model import EncodedSpan, Limits, SpanRecord
from .privacy import scrub_json_text
from .sanitize import INT_MAX, clamp_int, clean_text, column_cost, encode_json

#: Columns that may carry free text from the application, and so secrets (``schema.tables``).
SCRUBBED = SPAN_SCRUBBED_COLUMNS
#: VARCHAR widths of the seed schema (``schema.tables``).
VARCHAR = VARCHAR_WIDTHS
_dumps = json.JSONEncoder(ensure_ascii=False).encode


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
        annotations=_annotations(record, limits) if record.evaluation else None,
    )


def _annotations(record: SpanRecord, limits: Limits) -> str | None:
    """The span's judgements as ``otel_annotations`` rows (JSON), or None when it carries none."""
    results = record.evaluation.get("results")
    if not isinstance(results, list) or not results:
        return None
    rows = from_evaluation(
        results,
        span_id=record.span_id,
        trace_id=record.trace_id,
        session_id=record.hints.metadata.get("session_id"),
        scrub=limits.scrub,
        capture_content=limits.capture_content,
    )
    return rows_json(rows) if rows else None


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
    return (
        "{"
        + ",".join(f'"{c}":{values[c] if c in JSON_COLUMNS else json_scalar(values[c])}' for c in ROW_COLUMNS)
        + "}"
    )


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
