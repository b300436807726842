"""A batch's trace rows: ``trace_deltas`` merges the ``TraceHints`` of a batch's spans into one
``TraceDelta`` per trace (best-ranked workflow, user, query; earliest start; execution id), sorted
by trace id, the writer's lock order. Pure."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from ..schema.tables import VARCHAR_WIDTHS as VARCHAR
from .model import EPOCH, TraceDelta, TraceHints
from .sanitize import clean_text

_TRACE_HEX = re.compile(r"^[0-9a-f]{32}$")


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
