"""ReadableSpan → row records. Pure: no I/O, no clock, no globals; unit-testable without a database.

``map_span`` reads a finished span with the precedence lists of ``conventions`` and returns a
``SpanRecord`` (one ``spans`` row, values still Python objects) plus ``TraceHints`` (what this span
says about its ``traces`` row). ``encode`` (in ``records``) makes both fit the columns.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from . import conventions as cv
from .ids import span_hex, span_uuid, trace_hex, trace_uuid
from .messages import jsonable, last_user_text, parse_json_lenient, unflatten, value_text

EPOCH = datetime(1970, 1, 1)

Attrs = Mapping[str, Any]


@dataclass(slots=True)
class TraceHints:
    """What one span contributes to its trace row; merged across spans by rank (lower wins)."""

    trace_id: UUID
    trace_hex: str
    is_root: bool
    start_ns: int
    #: (rank, value, source attribute)
    workflow: tuple[int, str, str]
    user: tuple[int, str, str] | None = None
    #: (rank, start_ns, value, source)
    query: tuple[int, int, str, str] | None = None
    execution_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SpanRecord:
    """One ``spans`` row before encoding (column names and order follow the seed)."""

    span_id: UUID
    trace_id: UUID
    parent_span_id: UUID | None
    span_type: str
    name: str
    status: str
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    tokens: dict[str, int]
    cost: Decimal | None
    model: str | None
    provider: str | None
    error: str | None
    error_type: str | None
    error_stack: str | None
    api_limits: dict[str, Any]
    retry_count: int
    timeout: int | None
    evaluation: dict[str, Any]
    metadata: dict[str, Any]
    hints: TraceHints


# --------------------------------------------------------------------------------------------------
# small readers
# --------------------------------------------------------------------------------------------------


def _first_str(attrs: Attrs, names: Sequence[str]) -> tuple[str | None, str | None]:
    for name in names:
        value = attrs.get(name)
        if value is None:
            continue
        if type(value) is str:
            if value.strip():
                return value, name
        elif type(value) in (tuple, list) and value and type(value[0]) is str and value[0].strip():
            return value[0], name
    return None, None


def _number(value: Any) -> float | int | None:
    kind = type(value)
    if kind is int or kind is float:
        return value
    if kind is str:
        try:
            return float(value) if any(c in value for c in ".eEn") else int(value)
        except ValueError:
            return None
    return None


def _first_number(attrs: Attrs, names: Sequence[str]) -> tuple[float | int | None, str | None]:
    for name in names:
        value = attrs.get(name)
        if value is None:
            continue
        number = _number(value)
        if number is not None:
            return number, name
    return None, None


def ns_to_datetime(ns: int | None) -> datetime | None:
    if ns is None:
        return None
    return EPOCH + timedelta(microseconds=ns // 1000)


def _has_key(attrs: Attrs, key: str) -> bool:
    if key.endswith("."):
        return any(k.startswith(key) for k in attrs)
    return key in attrs


class KeyPlan:
    """What one *set of attribute keys* decides, worked out once and reused for every span with the
    same keys (an instrumentation emits the same keys span after span): each precedence list of
    ``conventions`` reduced to the names present, in order, and the keys of the prefix families.

    Lookups stay exact: a reduced list only drops names that are absent from the key set."""

    __slots__ = (
        "_only",
        "eval_scalar_keys",
        "flat",
        "genai_hint",
        "infra_hint",
        "keys",
        "rate_limit_keys",
        "tokens",
        "trace_metadata",
    )

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = frozenset(keys)
        self._only: dict[int, tuple[Any, ...]] = {}
        self.flat = tuple(k for k in keys if k.startswith(cv.FLAT_PREFIXES))
        self.rate_limit_keys = tuple(k for k in keys if k.startswith(cv.RATE_LIMIT_HEADER_PREFIXES))
        self.eval_scalar_keys = tuple(k for k in keys if k.startswith(cv.EVALUATION_SCALAR_PREFIXES))
        self.tokens = tuple(
            (key, present) for key, names in cv.TOKEN_ATTRS.items() if (present := self.only(names))
        )
        self.trace_metadata = tuple(
            (key, present) for key, names in cv.TRACE_METADATA_ATTRS if (present := self.only(names))
        )
        self.genai_hint = next((kind for key, kind in cv.GENAI_TYPE_HINTS if _has_key(self.keys, key)), None)
        self.infra_hint = next((kind for key, kind in cv.INFRA_TYPE_HINTS if _has_key(self.keys, key)), None)

    def only(self, names: Sequence[Any]) -> tuple[Any, ...]:
        """``names`` (a conventions list; items may be ``(name, extra)`` pairs) reduced to those
        present, in order. Memoized per list object: pass module-level constants."""
        hit = self._only.get(id(names))
        if hit is None:
            keys = self.keys
            hit = tuple(n for n in names if (n[0] if type(n) is tuple else n) in keys)
            self._only[id(names)] = hit
        return hit


_PLANS: dict[tuple[str, ...], KeyPlan] = {}
#: How many distinct key sets are remembered (a process sees a few dozen; the bound is for safety).
KEY_PLANS_MAX = 4096


def key_plan(attrs: Attrs) -> KeyPlan:
    """The ``KeyPlan`` of ``attrs``' key set (cached by the keys in their order)."""
    keys = tuple(attrs)
    plan = _PLANS.get(keys)
    if plan is None:
        if len(_PLANS) >= KEY_PLANS_MAX:
            _PLANS.clear()
        plan = _PLANS[keys] = KeyPlan(keys)
    return plan


# --------------------------------------------------------------------------------------------------
# column derivations
# --------------------------------------------------------------------------------------------------


def span_type_of(attrs: Attrs, is_root: bool, plan: KeyPlan | None = None) -> str:
    """The normalized span type (reference §4 precedence)."""
    plan = plan or key_plan(attrs)
    for attr, table in plan.only(cv.SPAN_KIND_SOURCES):
        value = attrs.get(attr)
        if isinstance(value, str):
            kind = table.get(value.lower())
            if kind == "*root":
                return "workflow" if is_root else "task"
            if kind:
                return kind
    if plan.genai_hint is not None:
        return plan.genai_hint
    if is_root:
        return "workflow"
    return plan.infra_hint or "other"


def _exception_events(events: Sequence[Event]) -> list[Attrs]:
    return [e.attributes or {} for e in events if e.name == "exception"]


def _is_cancellation(type_name: str | None) -> bool:
    if not type_name:
        return False
    return type_name in cv.CANCELLATION_TYPES or type_name.rsplit(".", 1)[-1] in cv.CANCELLATION_TYPES


def status_and_errors(
    span: ReadableSpan, attrs: Attrs, events: Sequence[Event], plan: KeyPlan | None = None
) -> tuple[str, str | None, str | None, str | None]:
    """``(status, error, error_type, error_stack)``; error fields only for failed/cancelled spans."""
    plan = plan or key_plan(attrs)
    exceptions = _exception_events(events) if events else ()
    last_exc = exceptions[-1] if exceptions else {}
    error_type, _ = _first_str(attrs, plan.only(cv.ERROR_TYPE_ATTRS))
    exc_type = last_exc.get("exception.type")
    failed = (
        span.status.status_code is StatusCode.ERROR
        or error_type is not None
        or (cv.LANGFUSE_LEVEL_ATTR in attrs and str(attrs[cv.LANGFUSE_LEVEL_ATTR]).upper() == "ERROR")
        or (cv.TASK_STATUS_ATTR in attrs and str(attrs[cv.TASK_STATUS_ATTR]).lower() == "failure")
    )
    if not failed:
        return "completed", None, None, None
    status = "cancelled" if _is_cancellation(error_type) or _is_cancellation(exc_type) else "failed"
    message, _ = _first_str(attrs, cv.ERROR_MESSAGE_ATTRS[:1])
    message = (
        message
        or span.status.description
        or last_exc.get("exception.message")
        or _first_str(attrs, cv.ERROR_MESSAGE_ATTRS[1:])[0]
    )
    return (
        status,
        str(message) if message else None,
        str(error_type or exc_type) if (error_type or exc_type) else None,
        last_exc.get("exception.stacktrace"),
    )


def _normalize_provider(value: str) -> str:
    key = value.strip().lower()
    return cv.PROVIDER_ALIASES.get(key, key)


def provider_of(attrs: Attrs, span_type: str, plan: KeyPlan | None = None) -> tuple[str | None, str | None]:
    """``(provider, source attribute)``; framework names only count on model-call spans' fallbacks."""
    for name in (plan or key_plan(attrs)).only(cv.PROVIDER_ATTRS):
        value = attrs.get(name)
        if not isinstance(value, str) or not value.strip():
            continue
        lowered = value.strip().lower()
        if lowered in cv.NON_VENDOR_PROVIDERS:
            continue
        if name == "llm.provider":
            family = str(attrs.get("llm.system", "")).lower()
            combo = cv.OI_PROVIDER_COMBOS.get((lowered, family)) or cv.OI_PROVIDER_COMBOS.get((lowered, "*"))
            return combo or _normalize_provider(value), name
        return _normalize_provider(value), name
    return None, None


def model_of(attrs: Attrs, plan: KeyPlan | None = None) -> tuple[str | None, str | None]:
    plan = plan or key_plan(attrs)
    model, source = _first_str(attrs, plan.only(cv.MODEL_ATTRS))
    if model:
        return model, source
    for name in plan.only(cv.MODEL_IN_JSON_ATTRS):
        params, ok = parse_json_lenient(attrs.get(name))
        if ok and isinstance(params, Mapping) and isinstance(params.get("model"), str):
            return params["model"], f"{name}.model"
    return None, None


def tokens_of(
    attrs: Attrs, plan: KeyPlan | None = None, sources: set[str] | None = None
) -> tuple[dict[str, int], dict[str, Any]]:
    """Normalized token counts (reference §2.7) and notes on how they were read. ``sources``, when
    given, receives the attributes whose values became counts."""
    tokens: dict[str, int] = {}
    notes: dict[str, Any] = {}
    for key, names in (plan or key_plan(attrs)).tokens:
        number, name = _first_number(attrs, names)
        if number is not None and math.isfinite(number) and number >= 0:
            tokens[key] = int(number)
            if sources is not None and name is not None:
                sources.add(name)
    if cv.LANGFUSE_USAGE_ATTR in attrs:
        usage, ok = parse_json_lenient(attrs[cv.LANGFUSE_USAGE_ATTR])
    else:
        usage, ok = None, False
    if ok and isinstance(usage, Mapping):
        for key, value in usage.items():
            number = _number(value)
            if number is not None and math.isfinite(number) and number >= 0:
                tokens.setdefault(str(key), int(number))
    if not tokens:
        return tokens, notes
    cached = tokens.get("cache_read", 0) + tokens.get("cache_write", 0)
    if "input" in tokens and cached > tokens["input"]:
        # Provider-style exclusive counts (raw Anthropic usage): input must include the cache.
        notes["input_excluded_cache"] = tokens["input"]
        tokens["input"] += cached
    if "total" not in tokens and ("input" in tokens or "output" in tokens):
        tokens["total"] = tokens.get("input", 0) + tokens.get("output", 0)
    return tokens, notes


def provided_cost_of(attrs: Attrs, plan: KeyPlan | None = None) -> tuple[Any, str | None, dict[str, Any]]:
    """A cost the span reports itself: ``(amount, source, notes)`` (amount unvalidated)."""
    notes: dict[str, Any] = {}
    plan = plan or key_plan(attrs)
    if not (cv.LANGFUSE_COST_ATTR in attrs or plan.only(cv.COST_ATTRS) or cv.PROPOSED_COST_ATTR in attrs):
        return None, None, notes
    details, ok = parse_json_lenient(attrs.get(cv.LANGFUSE_COST_ATTR))
    if ok and isinstance(details, Mapping) and details:
        total = _number(details.get("total"))
        if total is None:
            numbers = [n for n in (_number(v) for v in details.values()) if n is not None]
            total = sum(numbers) if numbers else None
        if total is not None:
            return total, cv.LANGFUSE_COST_ATTR, notes
    number, source = _first_number(attrs, plan.only(cv.COST_ATTRS))
    if number is not None:
        return number, source, notes
    amount = _number(attrs.get(cv.PROPOSED_COST_ATTR))
    if amount is not None:
        currency = str(attrs.get(cv.PROPOSED_COST_CURRENCY_ATTR, "USD")).upper()
        if currency == "USD":
            return amount, cv.PROPOSED_COST_ATTR, notes
        notes["cost_not_usd"] = {"amount": amount, "currency": currency}
    return None, None, notes


def _content_value(raw: Any, mime: Any) -> Any:
    if isinstance(raw, str) and (mime is None or "json" in str(mime) or raw[:1] in "[{"):
        parsed, ok = parse_json_lenient(raw)
        return parsed if ok else raw
    return jsonable(raw)


def _events_content(events: Sequence[Event], side: str) -> tuple[list[Any], str | None]:
    messages: list[Any] = []
    source = None
    for event in events:
        spec = cv.CONTENT_EVENTS.get(event.name)
        if not spec or spec[0] != side:
            continue
        attrs = event.attributes or {}
        for name in spec[1]:
            if name in attrs:
                parsed, _ = parse_json_lenient(attrs[name])
                if isinstance(parsed, list):
                    messages.extend(parsed)
                else:
                    if (
                        isinstance(parsed, Mapping)
                        and "role" not in parsed
                        and event.name.endswith(".message")
                    ):
                        parsed = {"role": event.name.split(".")[1], **parsed}
                    messages.append(parsed)
                source = source or f"event:{event.name}"
                break
    return messages, source


def flat_attributes(attrs: Attrs) -> Attrs:
    """Only the attributes of flattened families (``llm.input_messages.0.…``); usually none."""
    return {k: v for k, v in attrs.items() if k.startswith(cv.FLAT_PREFIXES)}


def _first_flat(attrs: Attrs, prefixes: Sequence[str], key: str, used: set[str]) -> dict[str, Any]:
    """``{key: [...], "source": ...}`` from the first flattened ``<prefix>N.…`` family present."""
    if not attrs:
        return {}
    for prefix in prefixes:
        items, keys = unflatten(attrs, prefix)
        if items:
            used.update(keys)
            return {key: items, "source": prefix + "*"}
    return {}


def content_of(
    events: Sequence[Event], attrs: Attrs, side: str, flat: Attrs | None = None, plan: KeyPlan | None = None
) -> tuple[dict[str, Any], set[str]]:
    """``inputs`` or ``outputs``: ``{"messages": [...]}`` or ``{"value": ...}``, plus ``source``.

    ``flat`` holds just the attributes of flattened families (``flat_attributes``), when known.
    Returns the JSON object and the attribute keys it consumed (left out of ``metadata``).
    """
    if flat is None:
        flat = flat_attributes(attrs)
    plan = plan or key_plan(attrs)
    is_input = side == "input"
    json_attrs = plan.only(cv.INPUT_JSON_ATTRS if is_input else cv.OUTPUT_JSON_ATTRS)
    flat_prefixes = cv.INPUT_FLAT_PREFIXES if is_input else cv.OUTPUT_FLAT_PREFIXES
    values = plan.only(cv.INPUT_VALUE_ATTRS if is_input else cv.OUTPUT_VALUE_ATTRS)
    used: set[str] = set()
    result: dict[str, Any] = {}

    for name in json_attrs:
        if name in attrs:
            parsed, _ = parse_json_lenient(attrs[name])
            result = {"messages": parsed} if isinstance(parsed, list) else {"value": parsed}
            result["source"] = name
            used.add(name)
            break
    if not result and events:
        details = next((e for e in events if e.name == cv.OPERATION_DETAILS_EVENT), None)
        key = "gen_ai.input.messages" if is_input else "gen_ai.output.messages"
        if details is not None and details.attributes and key in details.attributes:
            parsed, _ = parse_json_lenient(details.attributes[key])
            result = {"messages": parsed, "source": f"event:{cv.OPERATION_DETAILS_EVENT}"}
    if not result and flat:
        result = _first_flat(flat, flat_prefixes, "messages", used)
    if not result:
        for name, mime_attr in values:
            if name in attrs:
                result = {"value": _content_value(attrs[name], attrs.get(mime_attr)), "source": name}
                used.add(name)
                if mime_attr and mime_attr in attrs:
                    used.add(mime_attr)
                break
    if not result and not is_input and flat:
        result = _first_flat(flat, cv.OUTPUT_DOCUMENT_PREFIXES, "documents", used)
    if not result and events:
        messages, source = _events_content(events, side)
        if messages:
            result = {"messages": messages, "source": source}
    if is_input:
        if cv.SYSTEM_INSTRUCTIONS_ATTR in attrs:
            result["system"], _ = parse_json_lenient(attrs[cv.SYSTEM_INSTRUCTIONS_ATTR])
            used.add(cv.SYSTEM_INSTRUCTIONS_ATTR)
        for name in plan.only(cv.TOOL_DEFINITION_ATTRS):
            result["tools"], _ = parse_json_lenient(attrs[name])
            used.add(name)
            break
        else:
            tools = _first_flat(flat, cv.TOOL_DEFINITION_PREFIXES, "tools", used) if flat else {}
            if tools:
                result["tools"] = tools["tools"]
    return result, used


def api_limits_of(attrs: Attrs, error_type: str | None, plan: KeyPlan | None = None) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    plan = plan or key_plan(attrs)
    for key in plan.rate_limit_keys:
        value = attrs[key]
        header = key.removeprefix("http.response.header.")
        limits[header] = value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value
    for name in plan.only(cv.API_LIMIT_ATTRS):
        limits[name.rsplit(".", 2)[-2] + "." + name.rsplit(".", 1)[-1]] = jsonable(attrs[name])
    if not error_type and "http.response.status_code" not in attrs and "http.status_code" not in attrs:
        return limits
    status_code = _number(attrs.get("http.response.status_code", attrs.get("http.status_code")))
    lowered = (error_type or "").lower()
    if status_code == 429 or lowered in cv.RATE_LIMIT_ERROR_TYPES or lowered.endswith("ratelimiterror"):
        limits["rate_limited"] = True
        if status_code is not None:
            limits["status_code"] = int(status_code)
    return limits


def timeout_of(attrs: Attrs, plan: KeyPlan | None = None) -> int | None:
    """Request timeout in milliseconds when the call parameters carry one (seconds, as SDKs take it)."""
    plan = plan or key_plan(attrs)
    number, _ = _first_number(attrs, plan.only(cv.TIMEOUT_ATTRS))
    if number is None:
        for name in plan.only(cv.TIMEOUT_JSON_ATTRS):
            params, ok = parse_json_lenient(attrs.get(name))
            if ok and isinstance(params, Mapping):
                number = _number(params.get("timeout"))
                if number is not None:
                    break
    if number is None or not math.isfinite(number) or number < 0:
        return None
    return round(number * 1000)


def evaluation_of(
    events: Sequence[Event], attrs: Attrs, flat: Attrs | None = None, plan: KeyPlan | None = None
) -> tuple[dict[str, Any], set[str]]:
    results: list[Any] = []
    used: set[str] = set()
    plan = plan or key_plan(attrs)
    for event in events:
        if event.name == cv.EVALUATION_EVENT:
            ev = event.attributes or {}
            results.append(
                {out: jsonable(ev[src]) for src, out in cv.EVALUATION_EVENT_FIELDS.items() if src in ev}
            )
    source = flat if flat is not None else attrs
    for prefix in cv.EVALUATION_FLAT_PREFIXES if source else ():
        items, keys = unflatten(source, prefix)
        if items:
            results.extend(items)
            used.update(keys)
    scalars = {k: jsonable(attrs[k]) for k in plan.eval_scalar_keys}
    if scalars:
        results.append({"source": "openlit", **scalars})
        used.update(scalars)
    return ({"results": results} if results else {}), used


#: Events read into columns (content, evaluations) and so not repeated in ``metadata.events``.
_EVENTS_IN_COLUMNS = frozenset({cv.EVALUATION_EVENT, *cv.CONTENT_EVENTS}) - {"exception"}


def _events_metadata(events: Sequence[Event]) -> list[dict[str, Any]]:
    if not events:
        return []
    return [
        {
            "name": e.name,
            "time": ns_to_datetime(e.timestamp).isoformat() if e.timestamp else None,
            "attributes": {k: jsonable(v) for k, v in (e.attributes or {}).items()},
        }
        for e in events
        if e.name not in _EVENTS_IN_COLUMNS
    ]


# --------------------------------------------------------------------------------------------------
# the span → record mapping
# --------------------------------------------------------------------------------------------------


def _trace_hints(
    span: ReadableSpan,
    attrs: Attrs,
    resource: _ResourceView,
    is_root: bool,
    span_type: str,
    inputs: dict[str, Any],
    plan: KeyPlan | None = None,
) -> TraceHints:
    plan = plan or key_plan(attrs)
    ctx = span.context
    service = resource.service
    n = len(cv.WORKFLOW_ATTRS)
    workflow: tuple[int, str, str] = (n + 1, service, "service.name")
    for name, root_only in plan.only(cv.WORKFLOW_ATTRS):
        value = attrs.get(name)
        if isinstance(value, str) and value.strip() and (is_root or not root_only):
            workflow = (cv.WORKFLOW_ATTRS.index((name, root_only)), value, name)
            break
    else:
        if is_root:
            workflow = (n, span.name, "root span name")
    user_value, user_source = _first_str(attrs, plan.only(cv.USER_ATTRS))
    user = None
    if user_value is not None and user_source is not None:
        user = (cv.USER_ATTRS.index(user_source), user_value, user_source)

    query = None
    start_ns = span.start_time or 0
    if "langfuse.trace.input" in attrs:
        parsed, _ = parse_json_lenient(attrs["langfuse.trace.input"])
        text = value_text(parsed)
        if text:
            query = (0, start_ns, text, "langfuse.trace.input")
    # only a root's input, or a model call's messages, can name the trace's query
    if query is None and inputs and (is_root or (span_type in cv.MODEL_CALL_TYPES and "messages" in inputs)):
        source = str(inputs.get("source", ""))
        text = (
            last_user_text(inputs.get("messages"))
            if "messages" in inputs
            else value_text(inputs.get("value"))
        )
        if text:
            if is_root:
                rank = {"input.value": 1, "traceloop.entity.input": 2}.get(source, 3)
                query = (rank, start_ns, text, f"root {source}")
            else:
                query = (4, start_ns, text, f"first llm {source}")

    execution_id, _ = _first_str(attrs, plan.only(cv.EXECUTION_ID_ATTRS))
    meta: dict[str, Any] = {}
    for key, names in plan.trace_metadata:
        value = _first_str(attrs, names)[0]
        if value is not None:
            meta[key] = value
    for name in plan.only(cv.TAG_ATTRS):
        if name in attrs:
            tags, _ = parse_json_lenient(attrs[name])
            meta["tags"] = tags if isinstance(tags, list) else [tags]
            break
    if user is not None:
        meta["user"] = user[1]
    # most spans add nothing to what their resource says: share its (read-only) dict
    meta = {**resource.hints, **meta} if meta else resource.hints
    return TraceHints(
        trace_id=trace_uuid(ctx.trace_id),
        trace_hex=trace_hex(ctx.trace_id),
        is_root=is_root,
        start_ns=start_ns,
        workflow=workflow,
        user=user,
        query=query,
        execution_id=execution_id,
        metadata=meta or NO_HINTS,
    )


#: The hints metadata of most spans: one shared empty dict (read only, never mutated), so a batch
#: keeps fewer objects alive for the garbage collector to walk.
NO_HINTS: dict[str, Any] = {}

@dataclass(frozen=True, slots=True)
class _ResourceView:
    """What the mapping reads from one ``Resource``, worked out once per Resource object."""

    #: the resource attributes, JSON-ready
    attributes: dict[str, Any]
    #: the part every span row keeps in ``metadata.resource`` (``conventions.SPAN_RESOURCE_KEYS``)
    on_span: dict[str, Any]
    #: what it tells the trace (read only, shared): session, environment and release (a span's own
    #: attributes win), and the whole resource under ``resources`` by service name
    hints: dict[str, Any]

    @property
    def service(self) -> str:
        return str(self.attributes.get("service.name") or "unknown_service")


_NO_RESOURCE = _ResourceView({}, {}, {})
_RESOURCES: dict[int, tuple[Any, _ResourceView]] = {}


def _resource_view(span: ReadableSpan) -> _ResourceView:
    """The span's ``_ResourceView``, cached per Resource object (a process has a few)."""
    resource = span.resource
    if resource is None:
        return _NO_RESOURCE
    hit = _RESOURCES.get(id(resource))
    if hit is not None and hit[0] is resource:
        return hit[1]
    attributes = {k: jsonable(v) for k, v in resource.attributes.items()}
    hints: dict[str, Any] = {}
    if attributes:
        hints["resources"] = {str(attributes.get("service.name") or "unknown_service"): attributes}
    for key, names in cv.TRACE_METADATA_ATTRS:
        value = _first_str(attributes, names)[0]
        if value is not None:
            hints[key] = value
    on_span = {k: attributes[k] for k in cv.SPAN_RESOURCE_KEYS if k in attributes}
    view = _ResourceView(attributes, on_span, hints)
    if len(_RESOURCES) > 64:
        _RESOURCES.clear()
    _RESOURCES[id(resource)] = (resource, view)
    return view


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


def map_span(span: ReadableSpan) -> SpanRecord:
    """Map one finished span. Raises only on a span without a context (not a real SDK span)."""
    ctx = span.context
    if ctx is None:
        raise ValueError("span has no context")
    attrs = _attributes_of(span)
    plan = key_plan(attrs)
    resource = _resource_view(span)
    parent = span.parent
    is_root = parent is None
    events = _sequence_of(span, "_events", "events")
    flat = {k: attrs[k] for k in plan.flat} if plan.flat else {}
    span_type = span_type_of(attrs, is_root, plan)
    status, error, error_type, error_stack = status_and_errors(span, attrs, events, plan)
    inputs, used_in = content_of(events, attrs, "input", flat, plan)
    outputs, used_out = content_of(events, attrs, "output", flat, plan)
    evaluation, used_eval = evaluation_of(events, attrs, flat, plan)
    in_columns: set[str] = set()  # attributes a column holds as they were: not repeated in metadata
    tokens, token_notes = tokens_of(attrs, plan, in_columns)
    cost_value, cost_source, cost_notes = provided_cost_of(attrs, plan)
    model, model_source = model_of(attrs, plan)
    provider, provider_source = provider_of(attrs, span_type, plan)
    retry, _ = _first_number(attrs, plan.only(cv.RETRY_COUNT_ATTRS))

    start_ns, end_ns = span.start_time, span.end_time
    duration_ns = (end_ns - start_ns) if (start_ns is not None and end_ns is not None) else 0

    metadata: dict[str, Any] = {
        "otel": {
            "trace_id": trace_hex(ctx.trace_id),
            "span_id": span_hex(ctx.span_id),
            "parent_span_id": span_hex(parent.span_id) if parent is not None else None,
            "kind": _KIND_NAMES.get(span.kind) if span.kind is not None else None,
            "status_code": _STATUS_NAMES[span.status.status_code],
            "duration_ns": duration_ns,
        },
    }
    if parent is not None and parent.is_remote:
        metadata["otel"]["parent_is_remote"] = True
    if span.status.description and status == "completed":
        metadata["otel"]["status_description"] = span.status.description
    scope = span.instrumentation_scope
    if scope is not None:
        metadata["otel"]["scope"] = {"name": scope.name, "version": scope.version}
    request_model, request_model_source = _first_str(attrs, plan.only(cv.REQUEST_MODEL_ATTRS))
    # a scalar read into a column as it was; a JSON breakdown (Langfuse cost details) stays
    scalar_cost = cost_source if cost_source != cv.LANGFUSE_COST_ATTR else None
    for source in (model_source, request_model_source, scalar_cost):
        if source is not None and source in attrs:
            in_columns.add(source)
    if provider_source is not None and attrs.get(provider_source) == provider:
        in_columns.add(provider_source)
    consumed = used_in | used_out | used_eval | in_columns
    remaining = {
        k: (jsonable(v) if type(v) is tuple else v) for k, v in attrs.items() if k not in consumed
    }
    if remaining:
        metadata["attributes"] = remaining
    if resource.attributes:
        metadata["resource"] = resource.on_span
    event_list = _events_metadata(events)
    if event_list:
        metadata["events"] = event_list
    links = _sequence_of(span, "_links", "links")
    if links:
        metadata["links"] = [
            {
                "trace_id": trace_hex(link.context.trace_id),
                "span_id": span_hex(link.context.span_id),
                "span_uuid": str(span_uuid(link.context.trace_id, link.context.span_id)),
                "attributes": {k: jsonable(v) for k, v in (link.attributes or {}).items()},
            }
            for link in links
        ]
    if provider_source:
        metadata["provider_source"] = provider_source
    if request_model and request_model != model:
        metadata["request_model"] = request_model
    if token_notes:
        metadata["token_notes"] = token_notes
    metadata.update(cost_notes)

    if span_type in cv.ROLLUP_TYPES:
        # Agent/workflow usage repeats the children's: keep it visible, never in the summed columns.
        if tokens:
            metadata["rollup_tokens"] = tokens
            tokens = {}
        if cost_value is not None:
            metadata["rollup_cost"] = {"value": cost_value, "source": cost_source}
            cost_value, cost_source = None, None
    if cost_source:
        metadata["cost"] = {"status": "provided", "source": cost_source, "provided": cost_value}

    hints = _trace_hints(span, attrs, resource, is_root, span_type, inputs, plan)
    return SpanRecord(
        span_id=span_uuid(ctx.trace_id, ctx.span_id),
        trace_id=hints.trace_id,
        parent_span_id=span_uuid(ctx.trace_id, parent.span_id) if parent is not None else None,
        span_type=span_type,
        name=span.name or "(unnamed)",
        status=status,
        started_at=ns_to_datetime(start_ns),
        completed_at=ns_to_datetime(end_ns),
        duration_ms=round(duration_ns / 1_000_000) if duration_ns else 0,
        inputs=inputs,
        outputs=outputs,
        tokens=tokens,
        cost=cost_value,  # type: ignore[arg-type]  # validated by records.encode
        model=model,
        provider=provider,
        error=error,
        error_type=error_type,
        error_stack=error_stack,
        api_limits=api_limits_of(attrs, error_type, plan),
        retry_count=int(retry) if retry is not None and math.isfinite(retry) else 0,
        timeout=timeout_of(attrs, plan),
        evaluation=evaluation,
        metadata=metadata,
        hints=hints,
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
