"""Coding agents' log events → GenAI spans. Pure: no I/O.

Claude Code, the OpenAI Codex CLI and Gemini CLI export a log event per model request, tool result,
user prompt and decision, and no spans. Each recognised record (``conventions.CODING_AGENT_EVENTS``)
becomes one SDK ``ReadableSpan`` carrying the OpenTelemetry GenAI attributes its fields mean
(``conventions.CODING_AGENTS``: where each agent puts them), so the mapping, pricing, privacy and
the writer treat it like a span of any instrumented application:

- one trace per prompt (Claude Code's ``prompt.id``, Gemini CLI's ``prompt_id``), or per
  conversation where there is none (Codex): its root is the prompt event (``workflow``; the prompt
  text only when the agent was told to export it), or a placeholder until that event arrives;
- an ``llm`` span per model request: model, provider, tokens by kind (normalised: input includes
  the cache, output the reasoning), the cost the agent reports (Claude Code's ``cost_usd``: a
  provided cost wins over our price), duration, and the error of a failed request (no usage: its
  cost stays unknown, not zero);
- a ``tool`` span per tool result (success, duration, error; arguments and output as content);
  a small span per tool decision.

Ids are derived from what the record says (agent, session, prompt, ``event.sequence`` or the
event's time and name), so a re-sent record is stored once. User and organisation go where the
exporter puts them for other conventions (``user.id``; ``metadata.attributes``); the session into
``traces.metadata.session_id``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from . import conventions as cv
from .keyplan import as_number

SCOPE = InstrumentationScope("otel_pg_exporter.coding_agents")
#: What each kind of event becomes: span name prefix, ``gen_ai.operation.name`` (None: none).
_OPERATIONS: dict[str, str | None] = {
    "prompt": "invoke_workflow",
    "model_call": "chat",
    "model_error": "chat",
    "request": "chat",
    "tool": "execute_tool",
    "decision": None,
    "turn": None,
}


@dataclass
class AgentBatch:
    """A batch of log records split: spans made from coding agents' events, and the rest."""

    spans: list[ReadableSpan] = field(default_factory=list)
    others: list[Any] = field(default_factory=list)
    #: records of theirs that make no row (a Codex SSE delta, a successful request attempt)
    skipped: int = 0


def event_of(record: Any) -> tuple[str, str, str] | None:
    """(full event name, agent, kind) of a coding agent's record, else None."""
    attrs = record.attributes or {}
    for candidate in (getattr(record, "event_name", None), attrs.get("event.name"), record.body):
        if isinstance(candidate, str) and candidate in cv.CODING_AGENT_EVENTS:
            agent, kind = cv.CODING_AGENT_EVENTS[candidate]
            return candidate, agent, kind
    return None


def split(batch: Iterable[Any]) -> AgentBatch:
    """The coding agents' records of a batch as spans; the other records as they were."""
    out = AgentBatch()
    for readable in batch:
        record = getattr(readable, "log_record", readable)
        found = event_of(record)
        if found is None:
            out.others.append(readable)
            continue
        span = _span(readable, record, *found)
        if span is None:
            out.skipped += 1
        else:
            out.spans.append(span)
    return out


def _first(attrs: Mapping[str, Any], names: Iterable[str]) -> Any:
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _id(bits: int, *parts: Any) -> int:
    """A non-zero id of ``bits`` bits named by ``parts`` (SHA-256: stable across processes)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[: bits // 8], "big") or 1


def _time_ns(record: Any, attrs: Mapping[str, Any]) -> int:
    if record.timestamp:
        return int(record.timestamp)
    stamp = attrs.get("event.timestamp")
    if isinstance(stamp, str):
        try:
            return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1e9)
        except ValueError:
            pass
    return int(record.observed_timestamp or 0)


def _tokens(agent: cv.CodingAgent, attrs: Mapping[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for attribute, kind in agent.tokens.items():
        number = as_number(attrs.get(attribute))
        if number is not None and number >= 0:
            counts[kind] = int(number)
    if not counts:
        return {}
    for kind in agent.input_adds:
        counts["input"] = counts.get("input", 0) + counts.get(kind, 0)
    for kind in agent.output_adds:
        counts["output"] = counts.get("output", 0) + counts.get(kind, 0)
    return counts


#: Our token kinds → the GenAI attributes the mapping reads them from.
_TOKEN_ATTRIBUTES = {
    "input": "gen_ai.usage.input_tokens",
    "output": "gen_ai.usage.output_tokens",
    "cache_read": "gen_ai.usage.cache_read.input_tokens",
    "cache_write": "gen_ai.usage.cache_creation.input_tokens",
    "reasoning": "gen_ai.usage.reasoning.output_tokens",
}


def _is_failure(kind: str, agent: cv.CodingAgent, attrs: Mapping[str, Any]) -> bool:
    if kind == "model_error":
        return True
    success = _first(attrs, agent.success)
    if isinstance(success, str):
        success = success.strip().lower() not in ("false", "0", "no")
    if success is False:
        return True
    status = as_number(_first(attrs, agent.status_code))
    return (status is not None and status >= 400) or (
        kind == "request" and _first(attrs, agent.error) is not None
    )


def _span(readable: Any, record: Any, event: str, agent_name: str, kind: str) -> ReadableSpan | None:
    agent = cv.CODING_AGENTS[agent_name]
    attrs: Mapping[str, Any] = record.attributes or {}
    if (
        kind == "model_call"
        and agent.call_when is not None
        and attrs.get(agent.call_when[0]) != agent.call_when[1]
    ):
        return None  # a streaming event that carries no usage
    failed = _is_failure(kind, agent, attrs)
    if kind == "request" and not failed:
        return None  # the attempt succeeded: its usage comes with the model-call event
    session = _text(_first(attrs, agent.session)) or "(no session)"
    prompt = _text(_first(attrs, agent.prompt)) if agent.prompt else None
    trace_id = _id(128, agent_name, session, prompt or "")
    root_id = _id(64, agent_name, session, prompt or "", "root")
    end = _time_ns(record, attrs)
    duration = as_number(_first(attrs, agent.duration_ms))
    start = end - int(duration * 1_000_000) if duration is not None and duration >= 0 else end
    sequence = _first(attrs, agent.sequence)
    is_root = kind == "prompt"
    span_id = root_id if is_root else _id(64, agent_name, session, prompt or "", event, sequence or end)
    attributes = _attributes(agent, agent_name, kind, attrs, session, prompt)
    model = _text(_first(attrs, agent.model))
    tool = _text(_first(attrs, agent.tool_name))
    name = {
        "prompt": f"{agent.workflow} prompt",
        "model_call": f"chat {model or ''}".strip(),
        "model_error": f"chat {model or ''}".strip(),
        "request": f"chat {model or ''}".strip(),
        "tool": f"execute_tool {tool or ''}".strip(),
        "decision": f"tool_decision {tool or ''}".strip(),
        "turn": "user_prompt",
    }[kind]
    status = Status(StatusCode.UNSET)
    if failed:
        message = _text(_first(attrs, agent.error)) or "failed"
        status = Status(StatusCode.ERROR, message)
        code = _first(attrs, agent.status_code)
        attributes["error.type"] = _text(_first(attrs, agent.error_type)) or (
            f"http.{int(as_number(code) or 0)}" if code is not None else "error"
        )
    context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    parent = None if is_root else SpanContext(trace_id, root_id, is_remote=False)
    resource = getattr(readable, "resource", None) or Resource.get_empty()
    return ReadableSpan(
        name=name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=attributes,
        kind=SpanKind.CLIENT if _OPERATIONS[kind] == "chat" else SpanKind.INTERNAL,
        status=status,
        start_time=start,
        end_time=end,
        instrumentation_scope=SCOPE,
    )


def _attributes(
    agent: cv.CodingAgent,
    agent_name: str,
    kind: str,
    attrs: Mapping[str, Any],
    session: str,
    prompt: str | None,
) -> dict[str, Any]:
    """The span's attributes: the GenAI attributes the record's fields mean, then the record's own
    (what no column holds lands in ``metadata.attributes``), content only as content."""
    out: dict[str, Any] = {
        k: v for k, v in attrs.items() if k not in cv.CODING_AGENT_CONTENT_ATTRS and v is not None
    }
    out["otel_pg.coding_agent"] = agent_name
    out["gen_ai.workflow.name"] = agent.workflow
    out["session.id"] = session
    operation = _OPERATIONS[kind]
    if operation is not None:
        out["gen_ai.operation.name"] = operation
    user = _first(attrs, agent.user)
    if user is not None:
        out["user.id"] = str(user)
    if kind in ("model_call", "model_error", "request"):
        out["gen_ai.provider.name"] = agent.provider
        model = _first(attrs, agent.model)
        if model is not None:
            out["gen_ai.request.model"] = str(model)
        for token_kind, count in _tokens(agent, attrs).items():
            if token_kind in _TOKEN_ATTRIBUTES:
                out[_TOKEN_ATTRIBUTES[token_kind]] = count
        cost = as_number(_first(attrs, agent.cost))
        if cost is not None:
            out["gen_ai.usage.cost"] = cost
        response = _first(attrs, agent.response_text)
        if response is not None:
            out["output.value"] = str(response)
    elif kind == "tool":
        if _first(attrs, agent.tool_name) is not None:
            out["gen_ai.tool.name"] = str(_first(attrs, agent.tool_name))
        call_id = _first(attrs, agent.tool_call_id)
        if call_id is not None:
            out["gen_ai.tool.call.id"] = str(call_id)
        arguments = _first(attrs, agent.tool_input)
        if arguments is not None:
            out["gen_ai.tool.call.arguments"] = str(arguments)
        result = _first(attrs, agent.tool_output)
        if result is not None:
            out["gen_ai.tool.call.result"] = str(result)
    elif kind in ("prompt", "turn"):
        text = _first(attrs, agent.prompt_text)
        if text is not None:
            out["input.value"] = str(text)
    return out
