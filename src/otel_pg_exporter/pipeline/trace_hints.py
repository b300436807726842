"""What a span says about its trace row (``TraceHints``): workflow, user, query, execution id and the
trace metadata, each with a rank; and ``ResourceView``, what the mapping reads from a Resource,
worked out once per Resource object. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from . import conventions as cv
from .ids import trace_hex, trace_uuid
from .keyplan import KeyPlan, first_str, key_plan
from .messages import jsonable, last_user_text, parse_json_lenient, value_text
from .model import Attrs, TraceHints


def _workflow_of(
    span: ReadableSpan, attrs: Attrs, resource: ResourceView, is_root: bool, plan: KeyPlan
) -> tuple[int, str, str]:
    """(rank, workflow, source): a workflow attribute, else the root span's name, else the service."""
    n = len(cv.WORKFLOW_ATTRS)
    for name, root_only in plan.only(cv.WORKFLOW_ATTRS):
        value = attrs.get(name)
        if isinstance(value, str) and value.strip() and (is_root or not root_only):
            return (cv.WORKFLOW_ATTRS.index((name, root_only)), value, name)
    if is_root:
        return (n, span.name, "root span name")
    return (n + 1, resource.service, "service.name")


def _query_of(
    attrs: Attrs, is_root: bool, span_type: str, inputs: dict[str, Any], start_ns: int
) -> tuple[int, int, str, str] | None:
    """(rank, start, text, source) of the trace's query: Langfuse's trace input, else a root's
    input, else the last user message of a model call."""
    if "langfuse.trace.input" in attrs:
        parsed, _ = parse_json_lenient(attrs["langfuse.trace.input"])
        text = value_text(parsed)
        if text:
            return (0, start_ns, text, "langfuse.trace.input")
    # only a root's input, or a model call's messages, can name the trace's query
    if not inputs or not (is_root or (span_type in cv.MODEL_CALL_TYPES and "messages" in inputs)):
        return None
    source = str(inputs.get("source", ""))
    text = last_user_text(inputs.get("messages")) if "messages" in inputs else value_text(inputs.get("value"))
    if not text:
        return None
    if is_root:
        return (
            {"input.value": 1, "traceloop.entity.input": 2}.get(source, 3),
            start_ns,
            text,
            f"root {source}",
        )
    return (4, start_ns, text, f"first llm {source}")


def _trace_metadata(attrs: Attrs, plan: KeyPlan, user: tuple[int, str, str] | None) -> dict[str, Any]:
    """What the span names for ``traces.metadata``: session, environment, release, tags, user."""
    meta: dict[str, Any] = {}
    for key, names in plan.trace_metadata:
        value = first_str(attrs, names)[0]
        if value is not None:
            meta[key] = value
    for name in plan.only(cv.TAG_ATTRS):
        if name in attrs:
            tags, _ = parse_json_lenient(attrs[name])
            meta["tags"] = tags if isinstance(tags, list) else [tags]
            break
    if user is not None:
        meta["user"] = user[1]
    return meta


def trace_hints_of(
    span: ReadableSpan,
    attrs: Attrs,
    resource: ResourceView,
    is_root: bool,
    span_type: str,
    inputs: dict[str, Any],
    plan: KeyPlan | None = None,
) -> TraceHints:
    """What this span says about its trace row, each field ranked (lower wins when merged)."""
    plan = plan or key_plan(attrs)
    ctx = span.context
    user_value, user_source = first_str(attrs, plan.only(cv.USER_ATTRS))
    user = None
    if user_value is not None and user_source is not None:
        user = (cv.USER_ATTRS.index(user_source), user_value, user_source)
    start_ns = span.start_time or 0
    meta = (
        _trace_metadata(attrs, plan, user) if plan.trace_metadata or user or plan.only(cv.TAG_ATTRS) else {}
    )
    # most spans add nothing to what their resource says: share its (read-only) dict
    meta = {**resource.hints, **meta} if meta else resource.hints
    return TraceHints(
        trace_id=trace_uuid(ctx.trace_id),
        trace_hex=trace_hex(ctx.trace_id),
        is_root=is_root,
        start_ns=start_ns,
        workflow=_workflow_of(span, attrs, resource, is_root, plan),
        user=user,
        query=_query_of(attrs, is_root, span_type, inputs, start_ns)
        if inputs or "langfuse.trace.input" in attrs
        else None,
        execution_id=first_str(attrs, plan.only(cv.EXECUTION_ID_ATTRS))[0],
        metadata=meta or NO_HINTS,
    )


#: The hints metadata of most spans: one shared empty dict (read only, never mutated), so a batch
#: keeps fewer objects alive for the garbage collector to walk.
NO_HINTS: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class ResourceView:
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


_NO_RESOURCE = ResourceView({}, {}, {})
_RESOURCES: dict[int, tuple[Any, ResourceView]] = {}


def resource_view(span: ReadableSpan) -> ResourceView:
    """The span's ``ResourceView``, cached per Resource object (a process has a few)."""
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
        value = first_str(attributes, names)[0]
        if value is not None:
            hints[key] = value
    on_span = {k: attributes[k] for k in cv.SPAN_RESOURCE_KEYS if k in attributes}
    view = ResourceView(attributes, on_span, hints)
    if len(_RESOURCES) > 64:
        _RESOURCES.clear()
    _RESOURCES[id(resource)] = (resource, view)
    return view
