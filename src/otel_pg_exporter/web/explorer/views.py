"""Pure helpers of the explorer: stored values → what a page shows (no I/O, no HTML).

Messages come in the shapes the exporter stores (``inputs.messages`` / ``outputs.messages``): OTel
GenAI JSON messages (``role`` + ``parts``), OpenAI-style dicts (``content``, ``tool_calls``), and
log-record bodies. They are normalised into ``ChatMessage``s; the templates escape every string.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ...query.trace_store import SpanNode, TraceDetail

#: Longer messages are folded (a ``<details>`` shows the rest).
FOLD_CHARS = 1200
#: The time windows of the trace list: query value → (label, timedelta or None for all time).
WINDOWS: dict[str, tuple[str, timedelta | None]] = {
    "1h": ("last hour", timedelta(hours=1)),
    "24h": ("last 24 hours", timedelta(hours=24)),
    "7d": ("last 7 days", timedelta(days=7)),
    "30d": ("last 30 days", timedelta(days=30)),
    "all": ("all time", None),
}
DEFAULT_WINDOW = "7d"


@dataclass
class ToolCall:
    name: str
    arguments: str
    call_id: str = ""


@dataclass
class ChatMessage:
    role: str
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_result: str | None = None
    finish_reason: str | None = None

    @property
    def folded(self) -> bool:
        return len(self.text) > FOLD_CHARS

    @property
    def head(self) -> str:
        return self.text[:FOLD_CHARS]

    @property
    def rest(self) -> str:
        return self.text[FOLD_CHARS:]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


def _message(raw: Any, default_role: str) -> ChatMessage:
    if not isinstance(raw, dict):
        return ChatMessage(default_role, _text(raw))
    if "message" in raw and isinstance(raw["message"], dict):  # gen_ai.choice bodies
        inner = _message(raw["message"], "assistant")
        inner.finish_reason = raw.get("finish_reason") or inner.finish_reason
        return inner
    msg = ChatMessage(str(raw.get("role") or default_role), finish_reason=raw.get("finish_reason"))
    texts: list[str] = []
    parts = raw.get("parts")
    if isinstance(parts, list):
        for part in parts:
            if not isinstance(part, dict):
                texts.append(_text(part))
                continue
            kind = part.get("type")
            if kind == "tool_call":
                msg.tool_calls.append(
                    ToolCall(
                        str(part.get("name") or "?"), _text(part.get("arguments")), str(part.get("id") or "")
                    )
                )
            elif kind == "tool_call_response":
                msg.tool_result = _text(part.get("response", part.get("result")))
            else:
                texts.append(_text(part.get("content", part.get("text", part))))
    content = raw.get("content")
    if content is not None:
        if isinstance(content, list):  # OpenAI content parts
            texts += [_text(c.get("text", c) if isinstance(c, dict) else c) for c in content]
        else:
            texts.append(_text(content))
    for call in raw.get("tool_calls") or []:
        if isinstance(call, dict):
            fn = call.get("function") if isinstance(call.get("function"), dict) else call
            msg.tool_calls.append(
                ToolCall(str(fn.get("name") or "?"), _text(fn.get("arguments")), str(call.get("id") or ""))
            )
    if msg.role == "tool" and msg.tool_result is None and texts:
        msg.tool_result, texts = "\n".join(texts), []
    msg.text = "\n".join(t for t in texts if t)
    return msg


def conversation(value: Any, default_role: str) -> list[ChatMessage]:
    """``inputs`` / ``outputs`` → chat messages (empty when the value holds none)."""
    if not isinstance(value, dict):
        return []
    messages = value.get("messages")
    if isinstance(messages, list):
        return [_message(m, default_role) for m in messages]
    return []


def system_prompt(inputs: Any) -> str | None:
    if isinstance(inputs, dict) and inputs.get("system") is not None:
        system = inputs["system"]
        if isinstance(system, list):
            return "\n".join(_text(p.get("content", p) if isinstance(p, dict) else p) for p in system)
        return _text(system)
    return None


def plain_value(value: Any) -> str | None:
    """``{"value": ...}`` content (not a message list)."""
    if isinstance(value, dict) and "value" in value and "messages" not in value:
        return _text(value["value"])
    return None


def pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, default=str, sort_keys=True)


@dataclass(frozen=True)
class Bar:
    """A span's place on the trace's time axis, in percent of the trace's span."""

    left: float
    width: float


def waterfall(detail: TraceDetail) -> dict[str, Bar]:
    """span_id → its bar: start offset and duration as shares of first start → last end (of the
    trace, when its row says; a window of a large trace shows only some of its spans)."""
    spans = [s for s in detail.spans if s.started_at is not None]
    if not spans:
        return {}
    start = min(s.started_at for s in spans if s.started_at is not None)

    def end_of(s: SpanNode) -> datetime:
        assert s.started_at is not None
        return s.completed_at or s.started_at + timedelta(milliseconds=s.duration_ms or 0)

    end = max(end_of(s) for s in spans)
    # a window of a large trace keeps the whole trace's time axis
    trace_start, trace_end = detail.trace.get("started_at"), detail.trace.get("completed_at")
    if isinstance(trace_start, datetime) and trace_start < start:
        start = trace_start
    if isinstance(trace_end, datetime) and trace_end > end:
        end = trace_end
    total = max((end - start).total_seconds(), 1e-6)
    bars: dict[str, Bar] = {}
    for s in spans:
        assert s.started_at is not None
        left = (s.started_at - start).total_seconds() / total * 100
        width = max((end_of(s) - s.started_at).total_seconds() / total * 100, 0.4)
        bars[str(s.span_id)] = Bar(round(min(left, 99.6), 2), round(min(width, 100 - min(left, 99.6)), 2))
    return bars


def tokens_line(tokens: dict[str, Any] | None) -> str:
    if not tokens:
        return ""
    main = f"{tokens.get('input', 0)} in / {tokens.get('output', 0)} out"
    extra = [f"{k.replace('_', ' ')} {v}" for k, v in tokens.items() if k not in ("input", "output", "total")]
    return main + (f" ({', '.join(extra)})" if extra else "")


#: The order token kinds are listed in; other kinds follow, by name.
TOKEN_ORDER = ("input", "cache_read", "cache_write", "output", "reasoning", "total")


def token_rows(tokens: dict[str, Any] | None) -> list[tuple[str, Any]]:
    tokens = tokens or {}
    known = [(k, tokens[k]) for k in TOKEN_ORDER if k in tokens]
    return known + sorted((k, v) for k, v in tokens.items() if k not in TOKEN_ORDER)


def duration(ms: int | None) -> str:
    if ms is None:
        return ""
    return f"{ms} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def money(value: Any) -> str:
    if value is None:
        return ""
    return f"${float(value):.6f}"


def selected_span(selected: Any) -> dict[str, Any]:
    """What the trace page shows of its selected span: the conversation both ways, the system
    prompt, plain input/output values and the token rows (empty when nothing is selected)."""
    if selected is None:
        return {
            "inputs": [],
            "outputs": [],
            "system": None,
            "input_value": None,
            "output_value": None,
            "token_rows": [],
        }
    return {
        "inputs": conversation(selected.inputs, "user"),
        "outputs": conversation(selected.outputs, "assistant"),
        "system": system_prompt(selected.inputs),
        "input_value": plain_value(selected.inputs),
        "output_value": plain_value(selected.outputs),
        "token_rows": token_rows(selected.tokens),
    }
