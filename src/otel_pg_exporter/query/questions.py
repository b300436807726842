"""The questions an agent or a shell asks of the trace store, answered as JSON-ready dicts: the one
implementation behind the MCP tools (``web.mcp.server``) and ``otel-pg`` (``commands.read``). Each
caller bounds the sizes it allows; "not found" is a ``TraceStoreError`` with a one-line reason."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from . import outline as view
from .trace_store import TraceStore, TraceStoreError


def search(
    store: TraceStore,
    *,
    since: str = "24h",
    workflow: str | None = None,
    user: str | None = None,
    status: str | None = None,
    model: str | None = None,
    text: str | None = None,
    sort: str = "started_at",
    cursor: str | None = None,
    limit: int = 20,
    min_cost: float | Decimal | None = None,
    min_duration_ms: int | None = None,
) -> dict[str, Any]:
    """Traces newest first (or by ``sort``), compact rows, and the cursor of the older page."""
    page = store.list_traces(
        since=view.since_of(since),
        workflow=workflow,
        user_id=user,
        status=status,
        model=model,
        query=text,
        sort=sort,
        cursor=cursor,
        limit=limit,
        min_cost=min_cost,
        min_duration_ms=min_duration_ms,
    )
    return {"traces": [view.trace_row(t) for t in page.traces], "next_cursor": page.older}


def trace(
    store: TraceStore, trace_id: str, *, offset: int = 0, content_chars: int = view.CONTENT_CHARS
) -> dict[str, Any]:
    """One trace as a bounded outline of its spans, from ``offset``."""
    detail = store.get_trace(trace_id, offset=max(0, offset), limit=1000)
    if detail is None:
        raise TraceStoreError("no such trace (or not visible to this reader)")
    cut = view.outline(detail, content_chars=max(0, content_chars))
    return {
        "outline": cut.text,
        "spans_shown": cut.shown,
        "spans_total": cut.total,
        "next_offset": cut.next_offset,
    }


def span(store: TraceStore, span_id: str, *, full: bool = False) -> dict[str, Any]:
    """One span whole (fields cut unless ``full``)."""
    node = store.get_span(span_id)
    if node is None:
        raise TraceStoreError("no such span (or not visible to this reader)")
    return view.span_view(node, full=full)


def failures(store: TraceStore, *, since: str = "24h", limit: int = 10) -> dict[str, Any]:
    """The most frequent error types of failed spans over the window."""
    return {"failures": [view.plain(r) for r in store.failures(since=view.since_of(since), limit=limit)]}
