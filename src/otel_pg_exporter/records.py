"""Mapped records → column-ready values. Pure: sanitizing, JSON encoding, per-trace merging.

``encode_span`` makes a ``SpanRecord`` fit the seed columns (``sanitize``) and records every change in
``metadata.sanitized``. ``trace_deltas`` merges the ``TraceHints`` of a batch into one ``TraceDelta``
per trace, sorted by trace id (the lock order of the writer).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from .conventions import CONTENT_ATTRIBUTES, FLAT_PREFIXES, OPERATION_DETAILS_EVENT
from .mapping import EPOCH, SpanRecord, TraceHints
from .privacy import scrub_json_text
from .sanitize import INT_MAX, clamp_int, clean_text, column_cost, encode_json

#: Columns that may carry free text from the application, and so secrets.
SCRUBBED = frozenset({"name", "inputs", "outputs", "evaluation", "error", "error_stack", "api_limits"})
#: VARCHAR widths of the seed schema.
VARCHAR = {
    "span_type": 50,
    "name": 255,
    "model": 255,
    "provider": 100,
    "error_type": 100,
    "workflow_id": 255,
    "execution_id": 255,
}
_TRACE_HEX = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True, slots=True)
class Limits:
    """What encoding enforces: size caps (``max_payload_chars`` per JSON column and long TEXT
    column), the secret scrubber, and whether message content is stored at all."""

    max_payload_chars: int = 262_144
    scrub: Callable[[str], str] | None = None
    capture_content: bool = True


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


@dataclass(slots=True)
class EncodedSpan:
    """A ``spans`` row ready for the writer (JSON columns as text)."""

    span_id: uuid.UUID
    trace_id: uuid.UUID
    parent_span_id: uuid.UUID | None
    span_type: str
    name: str
    status: str
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int
    inputs: str
    outputs: str
    tokens: str
    cost: Decimal
    model: str | None
    provider: str | None
    error: str | None
    error_type: str | None
    error_stack: str | None
    api_limits: str
    retry_count: int
    timeout: int | None
    evaluation: str
    metadata: str
    # not columns
    hints: TraceHints
    parent_hex: str | None
    api_limits_obj: dict[str, Any] = field(default_factory=dict)
    #: True when ``encode_span`` had to change a value (see ``metadata.sanitized``)
    sanitized: bool = False


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


def encode_span(record: SpanRecord, limits: Limits) -> EncodedSpan:
    """Sanitize and JSON-encode one record. Never raises for bad values; notes what it changed."""
    notes: dict[str, Any] = {}
    cap = limits.max_payload_chars
    scrub = limits.scrub
    if not limits.capture_content:
        _without_content(record)

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

    metadata = record.metadata
    cost, cost_value, cost_note = column_cost(record.cost)
    if cost_note:
        notes["cost"] = cost_note
    if cost_value is not None:
        metadata.setdefault("cost", {})["exact"] = str(cost_value)
    elif "cost" in metadata and cost_note:
        metadata["cost"]["status"] = "invalid"

    encoded = EncodedSpan(
        span_id=record.span_id,
        trace_id=record.trace_id,
        parent_span_id=record.parent_span_id,
        span_type=text("span_type", record.span_type, VARCHAR["span_type"]) or "other",
        name=text("name", record.name, VARCHAR["name"]) or "(unnamed)",
        status=record.status,
        started_at=record.started_at,
        completed_at=record.completed_at,
        duration_ms=integer("duration_ms", record.duration_ms, 0, 0) or 0,
        inputs=js("inputs", record.inputs),
        outputs=js("outputs", record.outputs),
        tokens=js("tokens", record.tokens),
        cost=cost,
        model=text("model", record.model, VARCHAR["model"]),
        provider=text("provider", record.provider, VARCHAR["provider"]),
        error=text("error", record.error, cap),
        error_type=text("error_type", record.error_type, VARCHAR["error_type"]),
        error_stack=text("error_stack", record.error_stack, cap),
        api_limits=js("api_limits", record.api_limits),
        retry_count=integer("retry_count", record.retry_count, 0, 0) or 0,
        timeout=integer("timeout", record.timeout, 0, None),
        evaluation=js("evaluation", record.evaluation),
        metadata="",
        hints=record.hints,
        parent_hex=(metadata.get("otel") or {}).get("parent_span_id"),
        api_limits_obj=record.api_limits,
    )
    if notes:
        metadata["sanitized"] = notes
        encoded.sanitized = True
    encoded.metadata = _encode_metadata(metadata, cap)
    if scrub is not None:
        encoded.metadata = scrub_json_text(scrub, encoded.metadata)
    return encoded


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
            if key != "user":
                delta.metadata.setdefault(key, value)
    for delta in by_trace.values():
        wf_rank, wf_value, wf_source = delta.workflow
        delta.workflow = (wf_rank, clean_text(wf_value, VARCHAR["workflow_id"])[0] or "unknown", wf_source)
        if delta.user is not None:
            delta.user_uuid = _as_uuid(delta.user[1])
    return [by_trace[k] for k in sorted(by_trace)]


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value.strip())
    except (ValueError, AttributeError):
        return None
