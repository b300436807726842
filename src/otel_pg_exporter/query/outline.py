"""Traces as an agent (or a terminal) reads them: compact, bounded, never the whole JSON. Pure.

``trace_row`` is one line of a list; ``outline`` is a trace's span tree as indented lines (type,
name, status, duration, model, tokens, cost, error) with message content cut per span and the whole
outline cut at a character bound, saying where to go on; ``span_view`` is one span whole (content
still bounded unless asked in full). Times are UTC ISO 8601, durations in milliseconds, costs in USD.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from .trace_store import TraceStoreError
from .trace_tree import SpanNode, TraceDetail

#: Characters of message content shown per span in an outline, by default.
CONTENT_CHARS = 200
#: Characters of a whole outline at most; past it the outline says how to read on.
OUTLINE_CHARS = 24_000
#: Characters of one field of ``span_view`` unless ``full``.
FIELD_CHARS = 4_000

#: Plain-word windows an agent may pass for ``since``.
WINDOWS: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "today": timedelta(hours=24),
    "yesterday": timedelta(hours=48),
    "7d": timedelta(days=7),
    "week": timedelta(days=7),
    "30d": timedelta(days=30),
    "month": timedelta(days=30),
    "all": timedelta(days=365 * 100),
}


def since_of(text: str | None, now: datetime | None = None) -> datetime:
    """A window's start (UTC, naive like the stored times): ``24h``, ``7d``, ``90m``, ``2w``, a word
    of ``WINDOWS``, or an ISO date/time."""
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    value = (text or "24h").strip().lower()
    if value in WINDOWS:
        return now - WINDOWS[value]
    units = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    if value[:-1].isdigit() and value[-1:] in units:
        return now - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        parsed = datetime.fromisoformat(value.replace("z", "+00:00"))
    except ValueError:
        raise TraceStoreError(
            f"since: {text!r} is not a window (24h, 7d, 90m, 2w, today, week, month, all) nor an ISO date"
        ) from None
    return parsed.astimezone(timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed


def plain(value: Any) -> Any:
    """JSON-ready: UUIDs, decimals and times as strings, tuples as lists."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def cut(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"…[{len(text) - limit} more chars]"


def _text_of(body: Any) -> str:
    """The readable text of a message body: strings, OTel parts (``content``/``text``), tool calls."""
    if isinstance(body, str):
        return body
    if isinstance(body, list):
        return " ".join(_text_of(part) for part in body)
    if isinstance(body, dict):
        for key in ("content", "text", "result", "response", "arguments", "name"):
            if key in body:
                return _text_of(body[key])
    return json.dumps(body, default=str, ensure_ascii=False)


def content_text(value: Any, limit: int) -> str:
    """Message content as one short line: the last messages' text where there are messages."""
    if not value:
        return ""
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        parts = []
        for message in value["messages"][-3:]:
            if isinstance(message, dict):
                role = message.get("role", "?")
                body = message.get("content") if "content" in message else message.get("parts")
                parts.append(f"{role}: {_text_of(body)}")
        text = " | ".join(parts)
    elif isinstance(value, dict) and "value" in value:
        text = str(value["value"])
    else:
        text = json.dumps(value, default=str, ensure_ascii=False)
    return cut(" ".join(text.split()), limit) or ""


def trace_row(summary: Any) -> dict[str, Any]:
    """One trace of a list, compact: id, workflow, status, start, duration, tokens, cost, models,
    a one-line preview, the error."""
    return {
        "trace_id": str(summary.trace_id),
        "workflow": summary.workflow_id,
        "status": summary.status,
        "started_at": plain(summary.started_at),
        "duration_ms": summary.duration_ms,
        "tokens": summary.tokens.get("total") if isinstance(summary.tokens, dict) else None,
        "cost_usd": float(summary.cost or 0),
        "models": list(summary.models),
        "spans": summary.span_count,
        "failed_spans": summary.failed_spans,
        "preview": cut(" ".join((summary.query_preview or "").split()), 120),
        "error": cut(summary.error, 200),
        "session_id": summary.session_id,
    }


def _span_line(node: SpanNode, content_chars: int) -> str:
    bits = [f"{node.span_type} {node.name!r} [{node.status}]"]
    if node.duration_ms is not None:
        bits.append(f"{node.duration_ms} ms")
    if node.model:
        bits.append(node.model)
    if isinstance(node.tokens, dict) and node.tokens.get("total"):
        bits.append(f"{node.tokens['total']} tok")
    if node.cost:
        bits.append(f"${float(node.cost):.6f}")
    line = "  " * node.depth + " · ".join(bits) + f"  (span {node.span_id})"
    if node.error or node.error_type:
        line += f"\n{'  ' * node.depth}  error: {node.error_type or ''} {cut(node.error, 300) or ''}".rstrip()
    for side, value in (("in", node.inputs), ("out", node.outputs)):
        text = content_text(value, content_chars) if content_chars > 0 else ""
        if text:
            line += f"\n{'  ' * node.depth}  {side}: {text}"
    return line


@dataclass(frozen=True)
class Outline:
    text: str
    shown: int  # spans in the text
    total: int  # spans in the trace
    next_offset: int | None  # where to ask again (None: nothing more)


def outline(
    detail: TraceDetail, *, content_chars: int = CONTENT_CHARS, max_chars: int = OUTLINE_CHARS
) -> Outline:
    """The span tree (this window of it) as indented lines, cut at ``max_chars``."""
    t = detail.trace
    head = (
        f"trace {t['trace_id']} · {t['workflow_id']} · {t['status']} · started {plain(t['started_at'])} · "
        f"{t.get('total_duration_ms') or 0} ms · ${float(t.get('total_cost') or 0):.6f} · "
        f"{detail.total_spans} spans"
    )
    lines = [head]
    if t.get("error"):
        lines.append(f"error: {cut(t['error'], 300)}")
    size = sum(len(x) + 1 for x in lines)
    shown = 0
    for node in detail.spans:
        line = _span_line(node, content_chars)
        if size + len(line) + 1 > max_chars and shown:
            break
        lines.append(line)
        size += len(line) + 1
        shown += 1
    after = detail.offset + shown
    next_offset = after if after < detail.total_spans else None
    if next_offset is not None:
        lines.append(
            f"… {detail.total_spans - after} more spans: call again with offset={after} "
            "(or read one span whole with get_span)"
        )
    return Outline("\n".join(lines), shown, detail.total_spans, next_offset)


def span_view(node: SpanNode, *, full: bool = False) -> dict[str, Any]:
    """One span whole: identity, timing, model and usage, content, error and stack, evaluation;
    each large field cut at ``FIELD_CHARS`` unless ``full``."""

    def bounded(value: Any) -> Any:
        if full or value is None:
            return plain(value)
        text = json.dumps(plain(value), ensure_ascii=False)
        return plain(value) if len(text) <= FIELD_CHARS else cut(text, FIELD_CHARS)

    return {
        "span_id": str(node.span_id),
        "trace_id": str(node.trace_id),
        "parent_span_id": str(node.parent_span_id) if node.parent_span_id else None,
        "type": node.span_type,
        "name": node.name,
        "status": node.status,
        "started_at": plain(node.started_at),
        "duration_ms": node.duration_ms,
        "model": node.model,
        "provider": node.provider,
        "tokens": plain(node.tokens),
        "cost_usd": float(node.cost) if node.cost is not None else None,
        "cost_status": node.cost_status,
        "inputs": bounded(node.inputs),
        "outputs": bounded(node.outputs),
        "error_type": node.error_type,
        "error": bounded(node.error),
        "error_stack": bounded(node.error_stack),
        "evaluation": bounded(node.evaluation),
        "children": len(node.child_spans),
        "metadata": bounded(node.metadata) if full else None,
    }
