"""Log records → span content. Pure: no I/O.

Many instrumentations emit prompts, completions, evaluations and exceptions as OpenTelemetry log
records correlated to a span by trace and span id (reference §0.2, §0.3, §5.3). ``map_log_records``
groups a batch's records into one ``LogFragment`` per span; ``protect_fragment`` applies the privacy
settings; ``merge_fragment`` folds a fragment into what a span row already holds, without
overwriting what the span itself carried. The writer runs the merge under the trace's lock, whether
the span row is real or still a placeholder; the span upsert keeps what logs put in a placeholder.

Every item carries ``[timestamp_ns, key, value]``: the timestamp orders messages that arrive in
different batches, and the key (a digest of the record) makes a re-exported batch a no-op.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import conventions as cv
from .encoding import OMITTED, Limits
from .ids import span_hex, span_uuid, trace_hex, trace_uuid
from .mapping import SpanRecord, TraceHints
from .messages import last_user_text, parse_json_lenient
from .privacy import scrub_json_text
from .sanitize import clean_text, encode_json

#: ``[timestamp_ns, key, value]``
Item = list[Any]
LOG_SOURCE = "logs"


@dataclass(slots=True)
class LogFragment:
    """What the log records of one batch say about one span. JSON-ready (it may be spooled)."""

    span_id: uuid.UUID
    trace_id: uuid.UUID
    trace_hex: str
    span_hex: str
    service: str
    first_ns: int
    inputs: list[Item] = field(default_factory=list)
    outputs: list[Item] = field(default_factory=list)
    system: list[Item] = field(default_factory=list)
    evaluations: list[Item] = field(default_factory=list)
    #: ``[ts, key, {"type", "message", "stacktrace"}]``
    exceptions: list[Item] = field(default_factory=list)
    #: content was present but not kept (capture_content off)
    omitted: bool = False

    def is_empty(self) -> bool:
        return not (self.inputs or self.outputs or self.system or self.evaluations or self.exceptions)


@dataclass(frozen=True, slots=True)
class LogBatch:
    """``map_log_records`` result: fragments, and how many records were not for us (by reason)."""

    fragments: list[LogFragment]
    ignored: dict[str, int]


def _plain(value: Any) -> Any:
    """Log bodies and attributes as JSON data (Mappings → dicts, tuples → lists, bytes → text)."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _key(event: str, ts: int, payload: Any) -> str:
    blob = orjson.dumps(
        [event, ts, payload], default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    )
    return hashlib.blake2b(blob, digest_size=8).hexdigest()


def event_name_of(record: Any) -> str | None:
    name = getattr(record, "event_name", None)
    if name:
        return str(name)
    attrs = record.attributes or {}
    for attr in cv.LOG_EVENT_NAME_ATTRS:
        if attrs.get(attr):
            return str(attrs[attr])
    return None


def _message(body: Any, role: str | None) -> Any:
    """One message from a record body; the role comes from the event name when the body has none."""
    message = _plain(body)
    if isinstance(message, str):
        parsed, ok = parse_json_lenient(message)
        message = parsed if ok and isinstance(parsed, dict) else {"content": message}
    if message is None:
        message = {}
    if isinstance(message, dict) and role and "role" not in message:
        message = {"role": role, **message}
    return message


def _list_value(raw: Any) -> list[Any]:
    parsed, _ = parse_json_lenient(_plain(raw))
    return parsed if isinstance(parsed, list) else [parsed]


def _items_of(record: Any, event: str) -> list[tuple[str, Any]]:
    """What one log record contributes, as ``(side, value)``: messages (input, output, system), an
    evaluation, an exception. Empty: not ours."""
    attrs = record.attributes or {}
    items: list[tuple[str, Any]] = []
    if event in cv.LOG_MESSAGE_EVENTS:
        side, role = cv.LOG_MESSAGE_EVENTS[event]
        items.append((side, _message(record.body, role)))
    elif event in cv.LOG_LIST_EVENTS:
        body = _plain(record.body) if isinstance(record.body, Mapping) else {}
        done: set[str] = set()
        for side, attr in cv.LOG_LIST_EVENTS[event]:
            raw = attrs.get(attr, body.get(attr))
            if raw is None or side in done:  # first attribute of a side wins (legacy aliases)
                continue
            done.add(side)
            items.extend((side, v) for v in ([_plain(raw)] if side == "system" else _list_value(raw)))
    elif event == cv.EVALUATION_EVENT:
        result = {out: _plain(attrs[src]) for src, out in cv.EVALUATION_EVENT_FIELDS.items() if src in attrs}
        items.append(("evaluation", {**result, "source": LOG_SOURCE}))
    if any(a in attrs for a in cv.LOG_EXCEPTION_ATTRS):
        exception = {
            "type": attrs.get("exception.type"),
            "message": attrs.get("exception.message"),
            "stacktrace": attrs.get("exception.stacktrace"),
        }
        items.append(("exception", exception))
    return items


def _new_fragment(readable: Any, tid: int, sid: int, ts: int) -> LogFragment:
    resource = getattr(readable, "resource", None)
    service = (resource.attributes.get("service.name") if resource is not None else None) or ""
    return LogFragment(
        span_id=span_uuid(tid, sid),
        trace_id=trace_uuid(tid),
        trace_hex=trace_hex(tid),
        span_hex=span_hex(sid),
        service=str(service) or "unknown_service",
        first_ns=ts,
    )


def _skip_reason(record: Any) -> str | None:
    """Why a record cannot belong to a stored span (None: it can)."""
    if not (record.trace_id or 0) or not (record.span_id or 0):
        return "no_span_context"
    flags = record.trace_flags
    if flags is not None and not int(flags) & 0x01:
        return "span_not_sampled"  # its span is never exported: a placeholder would stay forever
    return None


def map_log_records(batch: Iterable[Any]) -> LogBatch:
    """Group ``ReadableLogRecord``s (or SDK ``LogData``) by span. Records without a sampled span
    context, and records that carry neither GenAI content, an evaluation nor an exception, are
    ignored and counted (application logs may share the pipeline)."""
    fragments: dict[uuid.UUID, LogFragment] = {}
    ignored: dict[str, int] = {}
    for readable in batch:
        record = getattr(readable, "log_record", readable)
        event = event_name_of(record) or ""
        reason = _skip_reason(record)
        items = _items_of(record, event) if reason is None else []
        if reason is None and not items:
            reason = "not_genai"
        if reason is not None:
            ignored[reason] = ignored.get(reason, 0) + 1
            continue
        tid, sid = record.trace_id, record.span_id
        ts = record.timestamp or record.observed_timestamp or 0
        span = span_uuid(tid, sid)
        frag = fragments.get(span)
        if frag is None:
            frag = fragments[span] = _new_fragment(readable, tid, sid, ts)
        frag.first_ns = min(frag.first_ns, ts) if ts else frag.first_ns
        target = {
            "input": frag.inputs,
            "output": frag.outputs,
            "system": frag.system,
            "evaluation": frag.evaluations,
            "exception": frag.exceptions,
        }
        for n, (side, value) in enumerate(items):
            target[side].append([ts, _key(f"{event}#{side}#{n}", ts, value), value])
    return LogBatch([fragments[k] for k in sorted(fragments)], ignored)


# -- privacy ----------------------------------------------------------------------------------------


def _as_record(frag: LogFragment) -> SpanRecord:
    """The fragment as a (partial) span row, for the user's ``redact`` callback."""
    last_exc = frag.exceptions[-1][2] if frag.exceptions else {}
    inputs: dict[str, Any] = (
        {"messages": [i[2] for i in frag.inputs], "source": LOG_SOURCE} if frag.inputs else {}
    )
    if frag.system:
        inputs["system"] = frag.system[-1][2]
    return SpanRecord(
        span_id=frag.span_id,
        trace_id=frag.trace_id,
        parent_span_id=None,
        span_type="other",
        name="(log records)",
        status="pending",
        started_at=None,
        completed_at=None,
        duration_ms=0,
        inputs=inputs,
        outputs={"messages": [i[2] for i in frag.outputs], "source": LOG_SOURCE} if frag.outputs else {},
        tokens={},
        cost=None,
        model=None,
        provider=None,
        error=last_exc.get("message"),
        error_type=last_exc.get("type"),
        error_stack=last_exc.get("stacktrace"),
        api_limits={},
        retry_count=0,
        timeout=None,
        evaluation={"results": [i[2] for i in frag.evaluations]} if frag.evaluations else {},
        metadata={"source": LOG_SOURCE, "otel": {"trace_id": frag.trace_hex, "span_id": frag.span_hex}},
        hints=TraceHints(frag.trace_id, frag.trace_hex, False, frag.first_ns, (0, "", "")),
    )


def _rekeyed(items: list[Item], values: Any, ts: int, tag: str) -> list[Item]:
    """Items after ``redact``: same keys when the list kept its length, new ones otherwise."""
    values = values if isinstance(values, list) else []
    if len(values) == len(items):
        return [[i[0], i[1], v] for i, v in zip(items, values, strict=True)]
    return [[ts, _key(tag, ts, v), v] for v in values]


def _apply_redact(frag: LogFragment, redact: Callable[[SpanRecord], SpanRecord]) -> None:
    row = redact(_as_record(frag))
    frag.inputs = _rekeyed(frag.inputs, (row.inputs or {}).get("messages"), frag.first_ns, "redacted-in")
    frag.outputs = _rekeyed(frag.outputs, (row.outputs or {}).get("messages"), frag.first_ns, "redacted-out")
    if frag.system:
        system = (row.inputs or {}).get("system")
        frag.system = [[frag.system[-1][0], frag.system[-1][1], system]] if system is not None else []
    frag.evaluations = _rekeyed(
        frag.evaluations, (row.evaluation or {}).get("results"), frag.first_ns, "redacted-eval"
    )
    if frag.exceptions:
        ts, key, exc = frag.exceptions[-1]
        frag.exceptions[-1] = [ts, key, {**exc, "message": row.error, "stacktrace": row.error_stack}]


def protect_fragment(
    frag: LogFragment, limits: Limits, redact: Callable[[SpanRecord], SpanRecord] | None = None
) -> LogFragment:
    """Capture switch, then the user's ``redact``, then secret scrubbing and size caps, in place."""
    if not limits.capture_content:
        frag.omitted = bool(frag.inputs or frag.outputs or frag.system)
        frag.inputs, frag.outputs, frag.system = [], [], []
        for item in frag.evaluations:  # scores stay; the evaluator's prose may quote the content
            item[2] = {k: v for k, v in item[2].items() if k != "explanation"}
    if redact is not None:
        _apply_redact(frag, redact)
    cap = limits.max_payload_chars
    scrub = limits.scrub

    def fit(value: Any) -> Any:
        text, _ = encode_json(value, cap)
        if scrub is not None:
            text = scrub_json_text(scrub, text)
        return orjson.loads(text)

    for items in (frag.inputs, frag.outputs, frag.system, frag.evaluations):
        for item in items:
            item[2] = fit(item[2])
    for item in frag.exceptions:
        exc = item[2]
        for name, width in (("type", 100), ("message", cap), ("stacktrace", cap)):
            text, _ = clean_text(exc.get(name), width)
            exc[name] = scrub(text) if scrub is not None and text else text
    return frag


def fragment_query(frag: LogFragment) -> tuple[int, int, str, str] | None:
    """A trace query candidate: the last user message this span's records carried (lowest rank)."""
    text = last_user_text([i[2] for i in frag.inputs])
    if not text:
        return None
    return (cv.LOG_QUERY_RANK, frag.first_ns, text, "log gen_ai.user.message")


def fragment_hints(frag: LogFragment) -> TraceHints:
    """What a fragment tells the trace row: a service-name workflow and maybe a query."""
    return TraceHints(
        trace_id=frag.trace_id,
        trace_hex=frag.trace_hex,
        is_root=False,
        start_ns=frag.first_ns,
        workflow=(len(cv.WORKFLOW_ATTRS) + 1, frag.service, "service.name"),
        query=fragment_query(frag),
    )


# -- merge ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class StoredContent:
    """The columns of a span row that log records may add to, as stored."""

    status: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    evaluation: dict[str, Any]
    error: str | None
    error_stack: str | None
    #: ``metadata.logs``: keys and timestamps of what logs contributed
    logs: dict[str, Any]


def _merge_messages(
    column: dict[str, Any], logs: dict[str, Any], side: str, items: Sequence[Item]
) -> tuple[dict[str, Any], int]:
    """Add logged messages in timestamp order; a span's own messages are never replaced."""
    if not items:
        return column, 0
    order = logs.get(side)
    messages = column.get("messages")
    if messages is None:
        order, messages = [], []
    elif not isinstance(order, list) or not isinstance(messages, list) or len(messages) != len(order):
        # the span carried its own messages (or they were truncated): never replaced by logs
        logs["superseded"] = True
        return column, 0
    merged: list[tuple[int, str, Any]] = [(o[0], o[1], m) for o, m in zip(order, messages, strict=True)]
    seen = {k for _, k, _ in merged}
    added = 0
    for ts, key, value in items:
        if key not in seen:
            seen.add(key)
            merged.append((ts, key, value))
            added += 1
    if not added:
        return column, 0
    merged.sort(key=lambda e: e[0])  # stable: records of one timestamp keep their arrival order
    column = {k: v for k, v in column.items() if k != "_omitted"}
    column["messages"] = [m for _, _, m in merged]
    column.setdefault("source", LOG_SOURCE)
    logs[side] = [[ts, key] for ts, key, _ in merged]
    return column, added


def merge_fragment(stored: StoredContent, frag: LogFragment) -> tuple[StoredContent, bool]:
    """``stored`` with ``frag`` folded in, and whether anything changed. Idempotent per record."""
    logs = dict(stored.logs)
    inputs, n_in = _merge_messages(dict(stored.inputs), logs, "inputs", frag.inputs)
    outputs, n_out = _merge_messages(dict(stored.outputs), logs, "outputs", frag.outputs)
    changed = bool(n_in or n_out)
    if frag.system and "system" not in inputs:
        inputs["system"] = frag.system[-1][2]
        changed = True
    if frag.omitted:
        for column in (inputs, outputs):
            if "messages" not in column and "_omitted" not in column:
                column.update(OMITTED)
                changed = True
    evaluation = dict(stored.evaluation)
    eval_keys = list(logs.get("evaluation") or [])
    results = list(evaluation.get("results") or [])
    for _, key, value in frag.evaluations:
        if key not in eval_keys:
            eval_keys.append(key)
            results.append(value)
            changed = True
    if eval_keys:
        logs["evaluation"] = eval_keys
        evaluation["results"] = results
    error, error_stack = stored.error, stored.error_stack
    exc_log = list(logs.get("exceptions") or [])
    known = {e.get("key") for e in exc_log}
    for ts, key, exc in frag.exceptions:
        if key in known:
            continue
        known.add(key)
        changed = True
        exc_log.append({"key": key, "at_ns": ts, "type": exc.get("type"), "message": exc.get("message")})
        # The column is for the failure of the span: a completed span keeps the record in metadata.
        if stored.status in ("pending", "failed", "cancelled"):
            if error_stack is None or stored.status == "pending":
                error_stack = exc.get("stacktrace") or error_stack
            if error is None:
                error = exc.get("message")
    if exc_log:
        logs["exceptions"] = exc_log
    return (
        StoredContent(stored.status, inputs, outputs, evaluation, error, error_stack, logs),
        changed or logs != stored.logs,
    )


def stored_from_row(row: Sequence[Any]) -> StoredContent:
    """``(status, inputs, outputs, evaluation, error, error_stack, metadata->'logs')`` → content."""
    status, inputs, outputs, evaluation, error, error_stack, logs = row
    return StoredContent(
        status=status,
        inputs=inputs if isinstance(inputs, dict) else {},
        outputs=outputs if isinstance(outputs, dict) else {},
        evaluation=evaluation if isinstance(evaluation, dict) else {},
        error=error,
        error_stack=error_stack,
        logs=logs if isinstance(logs, dict) else {},
    )


__all__ = [
    "LogBatch",
    "LogFragment",
    "StoredContent",
    "fragment_hints",
    "map_log_records",
    "merge_fragment",
    "protect_fragment",
    "stored_from_row",
]
