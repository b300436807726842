"""OTLP request bodies → the SDK's own span and log record objects. Pure: no I/O.

``decode_traces(body, content_type)`` reads an ``ExportTraceServiceRequest`` in protobuf
(``application/x-protobuf``) or in the OTLP/JSON mapping (``application/json``: hex trace and span
ids, 64-bit integers as strings, ``intValue``/``stringValue``/… values, lowerCamelCase or
snake_case field names) and returns ``ReadableSpan`` objects, the very type the SDK hands to an
in-process exporter, so a span received over OTLP goes through exactly the same mapping, pricing,
privacy and store as one exported in-process. ``decode_logs`` does the same for log records.

A body that cannot be parsed raises ``BadRequest`` with a short reason; a span without valid ids is
rejected (counted, with a reason) and the rest are kept.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
#: OTLP span flags: bit 8 says whether bit 9 (the parent is remote) is known.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
#: OTLP SpanKind (UNSPECIFIED = 0, INTERNAL = 1, …) → the SDK's (INTERNAL = 0, …).
_KINDS = {
    0: SpanKind.INTERNAL,
    1: SpanKind.INTERNAL,
    2: SpanKind.SERVER,
    3: SpanKind.CLIENT,
    4: SpanKind.PRODUCER,
    5: SpanKind.CONSUMER,
}
_STATUS = {0: StatusCode.UNSET, 1: StatusCode.OK, 2: StatusCode.ERROR}
#: OTLP/JSON fields that hold ids in hex (protobuf JSON would have them in base64).
_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


#: Deepest nesting an OTLP/JSON body may have (protobuf's own parser stops at 100 as well); the
#: envelope takes about 8 levels, so attribute values keep 90.
MAX_JSON_DEPTH = 100


def _too_deep(document: Any, limit: int) -> bool:
    """Does ``document`` nest deeper than ``limit`` (arrays and objects)? Iterative: a hostile body
    cannot exhaust the stack here."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class BadRequest(ValueError):
    """The body is not a valid OTLP request (HTTP 400); the message says why, briefly."""


@dataclass
class Decoded:
    """What a request held: the objects to export and the items rejected, with the first reason."""

    items: list[Any] = field(default_factory=list)
    rejected: int = 0
    reason: str | None = None

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.reason = self.reason or reason


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` → ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON writes ids in hex; protobuf's JSON parser wants base64 for bytes fields."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                try:
                    out[key] = base64.b64encode(bytes.fromhex(value)).decode() if value else ""
                except ValueError:
                    raise BadRequest(f"{key} is not hex: {value[:40]!r}") from None
            else:
                out[key] = _hex_ids_to_base64(value)
        return out
    if isinstance(node, list):
        return [_hex_ids_to_base64(v) for v in node]
    return node


def _parse(body: bytes, content_type: str | None, message: Callable[[], Message]) -> Message:
    kind = media_type(content_type)
    request = message()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (DecodeError, RuntimeError, ValueError) as exc:  # RecursionError is a RuntimeError
            raise BadRequest(f"not a valid protobuf {request.DESCRIPTOR.name}: {exc}"[:200]) from None
        return request
    if kind == JSON:
        try:
            document = json.loads(body)
        except RecursionError:
            raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"not valid JSON: {exc}"[:200]) from None
        if _too_deep(document, MAX_JSON_DEPTH):
            raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            json_format.ParseDict(_hex_ids_to_base64(document), request, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
            raise BadRequest(f"not a valid OTLP/JSON {request.DESCRIPTOR.name}: {exc}"[:200]) from None
        return request
    raise BadRequest(f"unsupported content type {kind!r}: use {PROTOBUF} or {JSON}")


def _value(any_value: Any) -> Any:
    """An OTLP ``AnyValue`` as the SDK keeps attribute values (sequences as tuples)."""
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_value(v) for v in any_value.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(any_value.bytes_value).decode()
    return getattr(any_value, kind)


def _attributes(key_values: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in key_values}


def _id(raw: bytes, size: int) -> int:
    """A trace (16 bytes) or span (8 bytes) id; 0 when missing or malformed."""
    return int.from_bytes(raw, "big") if len(raw) == size else 0


class _Resources:
    """One SDK ``Resource`` per distinct resource of a request (the mapping caches per object)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[Any, ...], Resource] = {}

    def __call__(self, proto: Any) -> Resource:
        attributes = _attributes(proto.attributes)
        key = tuple(sorted((k, repr(v)) for k, v in attributes.items()))
        resource = self._seen.get(key)
        if resource is None:
            resource = self._seen[key] = Resource(attributes)
        return resource


def _scope(proto: Any) -> InstrumentationScope:
    return InstrumentationScope(
        proto.name,
        proto.version or None,  # protobuf cannot tell "" from absent; the SDK's default is None
        None,
        _attributes(proto.attributes) or None,
    )


def _scoped(groups: Iterable[Any], scopes: str, items: str) -> Iterator[tuple[Resource, Any, Any]]:
    """``(resource, scope, item)`` for every span or log record of a request's resource groups."""
    resources = _Resources()
    for group in groups:
        resource = resources(group.resource)
        for scoped in getattr(group, scopes):
            scope = _scope(scoped.scope)
            for item in getattr(scoped, items):
                yield resource, scope, item


def decode_traces(body: bytes, content_type: str | None) -> Decoded:
    """The spans of an ``ExportTraceServiceRequest``, as ``ReadableSpan``s."""
    request = _parse(body, content_type, ExportTraceServiceRequest)
    out = Decoded()
    for resource, scope, span in _scoped(request.resource_spans, "scope_spans", "spans"):  # type: ignore[attr-defined]
        trace_id, span_id = _id(span.trace_id, 16), _id(span.span_id, 8)
        if not trace_id or not span_id:
            out.reject("span with an invalid trace or span id")
            continue
        out.items.append(_span(span, trace_id, span_id, resource, scope))
    return out


def _span(proto: Any, trace_id: int, span_id: int, resource: Resource, scope: Any) -> ReadableSpan:
    flags = proto.flags
    trace_flags = TraceFlags(flags & 0xFF if flags else TraceFlags.SAMPLED)
    state = TraceState.from_header([proto.trace_state]) if proto.trace_state else None
    context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=trace_flags, trace_state=state)
    parent = None
    parent_id = _id(proto.parent_span_id, 8)
    if parent_id:
        remote = bool(flags & _HAS_IS_REMOTE and flags & _IS_REMOTE)
        parent = SpanContext(trace_id, parent_id, is_remote=remote, trace_flags=trace_flags)
    events = [
        Event(e.name, _attributes(e.attributes), timestamp=e.time_unix_nano or None) for e in proto.events
    ]
    links = [
        Link(
            SpanContext(_id(link.trace_id, 16), _id(link.span_id, 8), is_remote=True),
            _attributes(link.attributes),
        )
        for link in proto.links
        if _id(link.trace_id, 16) and _id(link.span_id, 8)
    ]
    status_code = _STATUS.get(proto.status.code, StatusCode.UNSET)
    status = Status(status_code, proto.status.message or None)
    return ReadableSpan(
        name=proto.name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=_attributes(proto.attributes),
        events=events,
        links=links,
        kind=_KINDS.get(proto.kind, SpanKind.INTERNAL),
        status=status,
        start_time=proto.start_time_unix_nano or None,
        end_time=proto.end_time_unix_nano or None,
        instrumentation_scope=scope,
    )


def _log_record_factory() -> Callable[..., Any]:
    """``ReadableLogRecord`` (SDK ≥ 1.39) or ``LogData`` (older SDKs), around the API's record."""
    try:
        from opentelemetry._logs import LogRecord
        from opentelemetry.sdk._logs import ReadableLogRecord

        def readable(resource: Resource, scope: Any, **fields: Any) -> Any:
            return ReadableLogRecord(LogRecord(**fields), resource=resource, instrumentation_scope=scope)

        return readable
    except ImportError:  # pragma: no cover - older SDKs
        from opentelemetry.sdk._logs import LogData  # type: ignore[attr-defined]
        from opentelemetry.sdk._logs import LogRecord as SdkLogRecord  # type: ignore[attr-defined]

        def legacy(resource: Resource, scope: Any, **fields: Any) -> Any:
            return LogData(SdkLogRecord(resource=resource, **fields), scope)

        return legacy


def decode_logs(body: bytes, content_type: str | None) -> Decoded:
    """The log records of an ``ExportLogsServiceRequest``, as the SDK's readable log records."""
    from opentelemetry._logs import SeverityNumber

    request = _parse(body, content_type, ExportLogsServiceRequest)
    out = Decoded()
    make = _log_record_factory()
    for resource, scope, record in _scoped(request.resource_logs, "scope_logs", "log_records"):  # type: ignore[attr-defined]
        try:
            severity = SeverityNumber(record.severity_number) if record.severity_number else None
        except ValueError:
            severity = None
        out.items.append(
            make(
                resource,
                scope,
                timestamp=record.time_unix_nano or None,
                observed_timestamp=record.observed_time_unix_nano or None,
                trace_id=_id(record.trace_id, 16) or None,
                span_id=_id(record.span_id, 8) or None,
                trace_flags=TraceFlags(record.flags & 0xFF),
                severity_text=record.severity_text or None,
                severity_number=severity,
                body=_value(record.body) if record.HasField("body") else None,
                attributes=_attributes(record.attributes),
                event_name=getattr(record, "event_name", "") or None,
            )
        )
    return out


def partial_success(
    kind: str, decoded: Decoded, dropped: int = 0, dropped_reason: str | None = None
) -> dict[str, Any]:
    """The OTLP/JSON response body: ``{}``, or ``partialSuccess`` with the rejected count (items
    rejected when decoding plus ``dropped``: refused by the database even alone)."""
    rejected = decoded.rejected + dropped
    if not rejected:
        return {}
    key = "rejectedSpans" if kind == "traces" else "rejectedLogRecords"
    reason = decoded.reason or dropped_reason or "rejected"
    return {"partialSuccess": {key: str(rejected), "errorMessage": reason}}


def response_body(
    kind: str, decoded: Decoded, content_type: str, dropped: int = 0, dropped_reason: str | None = None
) -> bytes:
    """The response in the request's encoding (protobuf or JSON), with ``partial_success``."""
    document = partial_success(kind, decoded, dropped, dropped_reason)
    if media_type(content_type) == JSON:
        return json.dumps(document).encode()
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    response: Message = ExportTraceServiceResponse() if kind == "traces" else ExportLogsServiceResponse()
    if document:
        json_format.ParseDict(document, response)
    return response.SerializeToString()
