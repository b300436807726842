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


def trace_hints_of(
    span: ReadableSpan,
    attrs: Attrs,
    resource: ResourceView,
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
    user_value, user_source = first_str(attrs, plan.only(cv.USER_ATTRS))
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

    execution_id, _ = first_str(attrs, plan.only(cv.EXECUTION_ID_ATTRS))
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
