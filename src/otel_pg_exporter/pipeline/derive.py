"""Column derivations: one function per column (or family of columns) of a ``spans`` row, each
reading the precedence lists of ``conventions`` through a ``KeyPlan``. Pure."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import StatusCode

from . import conventions as cv
from .keyplan import KeyPlan, as_number, first_number, first_str, key_plan
from .messages import jsonable, parse_json_lenient, unflatten
from .model import Attrs, ns_to_datetime


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
    error_type, _ = first_str(attrs, plan.only(cv.ERROR_TYPE_ATTRS))
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
    message, _ = first_str(attrs, cv.ERROR_MESSAGE_ATTRS[:1])
    message = (
        message
        or span.status.description
        or last_exc.get("exception.message")
        or first_str(attrs, cv.ERROR_MESSAGE_ATTRS[1:])[0]
    )
    stack = last_exc.get("exception.stacktrace")
    return (
        status,
        str(message) if message else None,
        error_type_name(error_type or exc_type, stack) if (error_type or exc_type) else None,
        stack,
    )


_CLASS_REPR = re.compile(r"^<class '([^']+)'>$")
#: The last line of a Python traceback: ``package.module.Name: message`` (builtins print bare).
_TRACEBACK_TAIL = re.compile(r"^([A-Za-z_][\w.]*\.([A-Za-z_]\w*))(?::|$)")


def error_type_name(value: Any, stacktrace: Any = None) -> str:
    """One spelling per error: the qualified class name. Senders spell one error three ways (see
    ``conventions.ERROR_TYPE_ATTRS``): ``openai.RateLimitError`` (OTel ``error.type`` set from
    ``module.qualname``), ``<class 'openai.RateLimitError'>`` (``str(type(exc))``, the openai-v2
    instrumentation) and ``RateLimitError`` (the SDK's ``record_exception``: ``__qualname__``). A
    bare name is qualified from the traceback's last line when it names the same class; anything
    else (``timeout``, ``429``) is kept as sent. The raw value stays in ``metadata.attributes``."""
    text = str(value).strip()
    match = _CLASS_REPR.match(text)
    if match:
        text = match.group(1)
    if "." not in text and isinstance(stacktrace, str) and stacktrace:
        tail = stacktrace.rstrip().rsplit("\n", 1)[-1]
        found = _TRACEBACK_TAIL.match(tail)
        if found and found.group(2) == text:
            return found.group(1)
    return text


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
    model, source = first_str(attrs, plan.only(cv.MODEL_ATTRS))
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
        number, name = first_number(attrs, names)
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
            number = as_number(value)
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
        total = as_number(details.get("total"))
        if total is None:
            numbers = [n for n in (as_number(v) for v in details.values()) if n is not None]
            total = sum(numbers) if numbers else None
        if total is not None:
            return total, cv.LANGFUSE_COST_ATTR, notes
    number, source = first_number(attrs, plan.only(cv.COST_ATTRS))
    if number is not None:
        return number, source, notes
    amount = as_number(attrs.get(cv.PROPOSED_COST_ATTR))
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
    status_code = as_number(attrs.get("http.response.status_code", attrs.get("http.status_code")))
    lowered = (error_type or "").lower()
    if status_code == 429 or lowered in cv.RATE_LIMIT_ERROR_TYPES or lowered.endswith("ratelimiterror"):
        limits["rate_limited"] = True
        if status_code is not None:
            limits["status_code"] = int(status_code)
    return limits


def timeout_of(attrs: Attrs, plan: KeyPlan | None = None) -> int | None:
    """Request timeout in milliseconds when the call parameters carry one (seconds, as SDKs take it)."""
    plan = plan or key_plan(attrs)
    number, _ = first_number(attrs, plan.only(cv.TIMEOUT_ATTRS))
    if number is None:
        for name in plan.only(cv.TIMEOUT_JSON_ATTRS):
            params, ok = parse_json_lenient(attrs.get(name))
            if ok and isinstance(params, Mapping):
                number = as_number(params.get("timeout"))
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
    for prefix, scope in cv.ANNOTATION_FLAT_PREFIXES.items() if source else ():
        items, keys = unflatten(source, prefix)
        if items:
            results.extend({"scope": scope, **i} if isinstance(i, dict) else i for i in items)
            used.update(keys)
    scalars = {k: jsonable(attrs[k]) for k in plan.eval_scalar_keys}
    if scalars:
        results.append({"source": "openlit", **scalars})
        used.update(scalars)
    return ({"results": results} if results else {}), used


#: Events read into columns (content, evaluations) and so not repeated in ``metadata.events``.
_EVENTS_IN_COLUMNS = frozenset({cv.EVALUATION_EVENT, *cv.CONTENT_EVENTS}) - {"exception"}


def events_metadata(events: Sequence[Event]) -> list[dict[str, Any]]:
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
