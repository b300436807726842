"""Pure helpers for message content: lenient JSON parsing, flattened-attribute reassembly, user text.

No I/O. Shapes are kept as the instrumentation wrote them (OTel parts, OpenInference, Traceloop);
only the flattened forms are rebuilt into lists so that every convention ends up as JSON arrays.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

#: Above this size a Python-repr string is not run through ``ast.literal_eval`` (cost, recursion).
LITERAL_EVAL_LIMIT = 200_000
#: Wrapper keys OpenInference and others put around each list item; unwrapped when alone.
ITEM_WRAPPERS = frozenset(
    {
        "message",
        "message_content",
        "tool_call",
        "document",
        "evaluation",
        "annotation",
        "tool",
        "prompt",
        "completion",
    }
)


def jsonable(value: Any) -> Any:
    """OTel attribute values as JSON-friendly values (tuples → lists)."""
    kind = type(value)
    if kind is tuple or kind is list:
        return [jsonable(v) for v in value]
    return value


def parse_json_lenient(value: Any) -> tuple[Any, bool]:
    """Parse a JSON string, else a Python repr (some OpenLIT integrations), else keep the string.

    Returns ``(value, parsed)``; non-strings come back unchanged with ``parsed`` True.
    """
    if not isinstance(value, str):
        return jsonable(value), True
    text = value.strip()
    if not text or text[0] not in "[{(\"'-0123456789tfn":
        return value, False
    try:
        return orjson.loads(text), True
    except (ValueError, RecursionError):
        pass
    try:  # what orjson refuses but Python's json wrote: NaN, Infinity, huge integers
        return json.loads(text), True
    except (ValueError, RecursionError):
        pass
    if text[:1] in "[{(" and len(text) <= LITERAL_EVAL_LIMIT:
        try:
            return jsonable(ast.literal_eval(text)), True
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return value, False


def _set_path(root: dict[Any, Any], path: list[str], value: Any) -> None:
    node = root
    for segment in path[:-1]:
        key: Any = int(segment) if segment.isdigit() else segment
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    last = path[-1]
    node[int(last) if last.isdigit() else last] = value


def _listify(node: Any) -> Any:
    """Dicts keyed by ints become lists (by index); single wrapper keys are unwrapped."""
    if not isinstance(node, dict):
        return node
    if node and all(isinstance(k, int) for k in node):
        return [_listify(node[k]) for k in sorted(node)]
    out = {k: _listify(v) for k, v in node.items()}
    if len(out) == 1:
        ((only_key, only_value),) = out.items()
        if only_key in ITEM_WRAPPERS and isinstance(only_value, dict):
            return only_value
    return out


def unflatten(attrs: Mapping[str, Any], prefix: str) -> tuple[list[Any] | None, list[str]]:
    """Rebuild ``prefix.<i>.a.b = v`` attributes into ``[{"a": {"b": v}}, ...]``.

    Returns the list (None when there is no indexed key) and the attribute keys it used.
    """
    items: dict[Any, Any] = {}
    used: list[str] = []
    plen = len(prefix)
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        rest = key[plen:]
        head, _, tail = rest.partition(".")
        if not head.isdigit():
            continue
        used.append(key)
        _set_path(items, [head, *tail.split(".")] if tail else [head], jsonable(value))
    if not items:
        return None, used
    result = _listify(items)
    return (result if isinstance(result, list) else [result]), used


def _text_of_parts(parts: Iterable[Any]) -> str | None:
    texts: list[str] = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Mapping):
            kind = part.get("type", "text")
            content = part.get("content", part.get("text"))
            if kind == "text" and isinstance(content, str):
                texts.append(content)
    return "\n".join(texts) if texts else None


def message_text(message: Any) -> str | None:
    """The text of one message in any of the shapes (OTel parts, OI contents, plain content)."""
    if isinstance(message, str):
        return message
    if not isinstance(message, Mapping):
        return None
    content = message.get("content")
    if isinstance(content, str):
        parsed, ok = parse_json_lenient(content) if content[:1] in "[{" else (content, False)
        if ok and isinstance(parsed, list):
            return _text_of_parts(parsed) or content
        return content
    for key in ("parts", "contents", "content"):
        value = message.get(key)
        if isinstance(value, list):
            text = _text_of_parts(value)
            if text:
                return text
    text = message.get("text")
    return text if isinstance(text, str) else None


def last_user_text(messages: Any) -> str | None:
    """Text of the last ``role == "user"`` message of a message list (None when there is none)."""
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, Mapping) and str(message.get("role", "")).lower() in ("user", "human"):
            text = message_text(message)
            if text:
                return text
    return None


def value_text(value: Any) -> str | None:
    """A short human query from a single input value (OI ``input.value``, TL ``entity.input``)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        for key in ("messages", "all_messages"):
            text = last_user_text(value.get(key))
            if text:
                return text
        args, kwargs = value.get("args"), value.get("kwargs")
        if isinstance(args, list) or isinstance(kwargs, Mapping):
            for arg in [*(args or []), *((kwargs or {}).values())]:
                if isinstance(arg, str) and arg:
                    return arg
        for key in ("query", "question", "input", "prompt", "text"):
            if isinstance(value.get(key), str):
                return value[key]
    if isinstance(value, list):
        text = last_user_text(value)
        if text:
            return text
    return json.dumps(value, ensure_ascii=False, default=str)
