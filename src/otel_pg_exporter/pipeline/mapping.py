"""ReadableSpan → ``SpanRecord``. Pure: no I/O, no clock, no globals; unit-testable without a database.

``map_span`` reads a finished span once: its attributes through a ``keyplan.KeyPlan``, each column
by ``derive`` (the precedence lists of ``conventions``), the trace's fields by ``trace_hints``, and
returns a ``model.SpanRecord`` (one ``spans`` row, values still Python objects, with its
``TraceHints``). ``encoding`` makes it fit the columns.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from . import conventions as cv
from .derive import (
    api_limits_of,
    content_of,
    evaluation_of,
    events_metadata,
    model_of,
    provided_cost_of,
    provider_of,
    span_type_of,
    status_and_errors,
    timeout_of,
    tokens_of,
)
from .ids import span_hex, span_uuid, trace_hex, trace_uuid
from .keyplan import first_number, first_str, key_plan
from .messages import jsonable
from .model import EPOCH, Attrs, SpanRecord, TraceHints, ns_to_datetime
from .trace_hints import resource_view, trace_hints_of

__all__ = ["EPOCH", "SpanRecord", "TraceHints", "fallback_record", "map_span", "ns_to_datetime"]


_KIND_NAMES = {kind: kind.name for kind in SpanKind}
_STATUS_NAMES = {code: code.name for code in StatusCode}


def _attributes_of(span: ReadableSpan) -> Attrs:
    """The span's attributes as a plain mapping, read-only. ``ReadableSpan.attributes`` wraps the
    SDK's ``BoundedAttributes`` (a Python-level ``Mapping`` around a dict) in a ``MappingProxyType``:
    every lookup goes through two Python layers. The dict inside is read directly when it is there
    (the same data; any other span type goes through the public property and is copied once)."""
    bounded = getattr(span, "_attributes", None)
    inner = getattr(bounded, "_dict", None)
    if isinstance(inner, dict):
        return inner
    attributes = span.attributes
    return dict(attributes) if attributes else {}


def _sequence_of(span: ReadableSpan, private: str, public: str) -> Sequence[Any]:
    """``span.events`` / ``span.links`` without the tuple copy the SDK's properties make on every
    access (the SDK's own list when it is there, read only)."""
    items = getattr(span, private, None)
    inner = getattr(items, "_dq", None)  # the SDK's BoundedList keeps its items in a deque
    if isinstance(inner, deque):
        return inner  # type: ignore[return-value]
    return items if isinstance(items, (list, tuple)) else getattr(span, public)


def _otel_metadata(
    span: ReadableSpan, ctx: Any, parent: Any, status: str, duration_ns: int
) -> dict[str, Any]:
    """``metadata.otel``: the span's OTel identity, kind, status and scope."""
    otel: dict[str, Any] = {
        "trace_id": trace_hex(ctx.trace_id),
        "span_id": span_hex(ctx.span_id),
        "parent_span_id": span_hex(parent.span_id) if parent is not None else None,
        "kind": _KIND_NAMES.get(span.kind) if span.kind is not None else None,
        "status_code": _STATUS_NAMES[span.status.status_code],
        "duration_ns": duration_ns,
    }
    if parent is not None and parent.is_remote:
        otel["parent_is_remote"] = True
    if span.status.description and status == "completed":
        otel["status_description"] = span.status.description
    scope = span.instrumentation_scope
    if scope is not None:
        otel["scope"] = {"name": scope.name, "version": scope.version}
    return otel


def _links_metadata(links: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "trace_id": trace_hex(link.context.trace_id),
            "span_id": span_hex(link.context.span_id),
            "span_uuid": str(span_uuid(link.context.trace_id, link.context.span_id)),
            "attributes": {k: jsonable(v) for k, v in (link.attributes or {}).items()},
        }
        for link in links
    ]


def _usage(
    span_type: str, tokens: dict[str, int], cost: Any, cost_source: str | None, metadata: dict[str, Any]
) -> tuple[dict[str, int], Any]:
    """The usage a row sums: an agent's or workflow's repeats its children's, so it is kept in
    ``metadata.rollup_*`` instead (visible, never summed); a provided cost is noted."""
    if span_type in cv.ROLLUP_TYPES:
        if tokens:
            metadata["rollup_tokens"] = tokens
            tokens = {}
        if cost is not None:
            metadata["rollup_cost"] = {"value": cost, "source": cost_source}
            cost, cost_source = None, None
    if cost_source:
        metadata["cost"] = {"status": "provided", "source": cost_source, "provided": cost}
    return tokens, cost


def _span_metadata(
    span: ReadableSpan,
    attrs: Attrs,
    events: Sequence[Any],
    resource: Any,
    *,
    otel: dict[str, Any],
    consumed: set[str],
    **notes: Any,
) -> dict[str, Any]:
    """``spans.metadata``: the OTel identity, what no column holds (attributes, events, links, the
    resource's service) and the mapping's notes; empty entries left out."""
    metadata: dict[str, Any] = {"otel": otel}
    remaining = {k: (jsonable(v) if type(v) is tuple else v) for k, v in attrs.items() if k not in consumed}
    if remaining:  # the attributes no column holds as they were
        metadata["attributes"] = remaining
    if resource.attributes:  # kept even when it names no service: the span had a resource
        metadata["resource"] = resource.on_span
    event_list = events_metadata(events)
    if event_list:
        metadata["events"] = event_list
    links = _sequence_of(span, "_links", "links")
    if links:
        metadata["links"] = _links_metadata(links)
    for key, value in notes.items():
        if value:
            metadata[key] = value
    return metadata


def _ids(ctx: Any, parent: Any) -> dict[str, Any]:
    """The row's ``span_id``, ``trace_id`` and ``parent_span_id`` (UUIDs derived from the OTel ids)."""
    return {
        "span_id": span_uuid(ctx.trace_id, ctx.span_id),
        "trace_id": trace_uuid(ctx.trace_id),
        "parent_span_id": span_uuid(ctx.trace_id, parent.span_id) if parent is not None else None,
    }


def _retry_count(attrs: Attrs, plan: Any) -> int:
    retry, _ = first_number(attrs, plan.only(cv.RETRY_COUNT_ATTRS))
    return int(retry) if retry is not None and math.isfinite(retry) else 0


def _held_as_is(
    attrs: Attrs, sources: tuple[str | None, ...], provider_source: str | None, provider: str | None
) -> list[str]:
    """The attributes a column holds as they were (so ``metadata.attributes`` need not repeat
    them): a scalar model or cost, not a JSON breakdown (Langfuse cost details); the provider only
    when no alias rewrote it."""
    held = [s for s in sources if s is not None and s != cv.LANGFUSE_COST_ATTR and s in attrs]
    if provider_source is not None and attrs.get(provider_source) == provider:
        held.append(provider_source)
    return held


def map_span(span: ReadableSpan) -> SpanRecord:
    """Map one finished span. Raises only on a span without a context (not a real SDK span)."""
    ctx = span.context
    if ctx is None:
        raise ValueError("span has no context")
    attrs = _attributes_of(span)
    plan = key_plan(attrs)
    resource = resource_view(span)
    parent = span.parent
    events = _sequence_of(span, "_events", "events")
    flat = {k: attrs[k] for k in plan.flat} if plan.flat else {}
    span_type = span_type_of(attrs, parent is None, plan)
    status, error, error_type, error_stack = status_and_errors(span, attrs, events, plan)
    inputs, used_in = content_of(events, attrs, "input", flat, plan)
    outputs, used_out = content_of(events, attrs, "output", flat, plan)
    evaluation, used_eval = evaluation_of(events, attrs, flat, plan)
    in_columns: set[str] = set()  # attributes a column holds as they were: not repeated in metadata
    tokens, token_notes = tokens_of(attrs, plan, in_columns)
    cost_value, cost_source, cost_notes = provided_cost_of(attrs, plan)
    model, model_source = model_of(attrs, plan)
    provider, provider_source = provider_of(attrs, span_type, plan)
    request_model, request_model_source = first_str(attrs, plan.only(cv.REQUEST_MODEL_ATTRS))
    start_ns, end_ns = span.start_time, span.end_time
    duration_ns = (end_ns - start_ns) if (start_ns is not None and end_ns is not None) else 0
    in_columns.update(
        _held_as_is(attrs, (model_source, request_model_source, cost_source), provider_source, provider)
    )
    metadata = _span_metadata(
        span,
        attrs,
        events,
        resource,
        otel=_otel_metadata(span, ctx, parent, status, duration_ns),
        consumed=used_in | used_out | used_eval | in_columns,
        provider_source=provider_source,
        request_model=request_model if request_model != model else None,
        token_notes=token_notes,
    )
    metadata.update(cost_notes)
    if cost_source or span_type in cv.ROLLUP_TYPES:  # most spans: nothing to move or note
        tokens, cost_value = _usage(span_type, tokens, cost_value, cost_source, metadata)

    return SpanRecord(
        **_ids(ctx, parent),
        span_type=span_type,
        name=span.name or "(unnamed)",
        status=status,
        started_at=ns_to_datetime(start_ns),
        completed_at=ns_to_datetime(end_ns),
        duration_ms=round(duration_ns / 1_000_000) if duration_ns else 0,
        inputs=inputs,
        outputs=outputs,
        tokens=tokens,
        cost=cost_value,  # validated by encoding
        model=model,
        provider=provider,
        error=error,
        error_type=error_type,
        error_stack=error_stack,
        api_limits=api_limits_of(attrs, error_type, plan),
        retry_count=_retry_count(attrs, plan),
        timeout=timeout_of(attrs, plan),
        evaluation=evaluation,
        metadata=metadata,
        hints=trace_hints_of(span, attrs, resource, parent is None, span_type, inputs, plan),
    )


def fallback_record(span: ReadableSpan, exc: BaseException) -> SpanRecord | None:
    """A minimal row for a span whose attributes broke the mapping: the span is never lost."""
    ctx = span.context
    if ctx is None:
        return None
    parent = span.parent
    tid = trace_uuid(ctx.trace_id)
    meta = {
        "otel": {"trace_id": trace_hex(ctx.trace_id), "span_id": span_hex(ctx.span_id)},
        "mapping_error": f"{type(exc).__name__}: {exc}"[:500],
        "attributes_raw": json.dumps({k: str(v)[:1000] for k, v in (span.attributes or {}).items()}),
    }
    return SpanRecord(
        span_id=span_uuid(ctx.trace_id, ctx.span_id),
        trace_id=tid,
        parent_span_id=span_uuid(ctx.trace_id, parent.span_id) if parent is not None else None,
        span_type="other",
        name=str(span.name or "(unnamed)"),
        status="failed" if span.status.status_code is StatusCode.ERROR else "completed",
        started_at=ns_to_datetime(span.start_time),
        completed_at=ns_to_datetime(span.end_time),
        duration_ms=0,
        inputs={},
        outputs={},
        tokens={},
        cost=None,
        model=None,
        provider=None,
        error=None,
        error_type=None,
        error_stack=None,
        api_limits={},
        retry_count=0,
        timeout=None,
        evaluation={},
        metadata=meta,
        hints=TraceHints(
            trace_id=tid,
            trace_hex=trace_hex(ctx.trace_id),
            is_root=parent is None,
            start_ns=span.start_time or 0,
            workflow=(len(cv.WORKFLOW_ATTRS) + 1, "unknown_service", "fallback"),
        ),
    )
