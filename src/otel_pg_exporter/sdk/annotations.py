"""Judging traces from code: ``annotate``, ``annotate_many`` and ``annotate_current_span``.

``annotate`` and ``annotate_many`` write ``otel_annotations`` rows now, on a connection of their own
(``dsn`` as for the exporter). ``annotate_current_span`` is for code and LLM judges running inside the
traced request: while the span is still open, the judgement is *deferred*: it becomes a
``gen_ai.evaluation.result`` event on the span (our extra fields as ``otel_pg.annotation.*``), so it
travels with the span, through the exporter's batch, retries and spool, and lands in the same
transaction as the span row: no connection, no wait in the request. On a span that has ended it is
written at once (the row names the span and waits for it if the span is not exported yet).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from enum import Enum
from typing import Any

import psycopg
from opentelemetry import trace as otel_trace

from ..config.dsn import resolve_dsn
from ..connection import connect, translate_error
from ..pipeline import conventions as cv
from ..pipeline.annotations import (
    Annotation,
    AnnotationError,
    AnnotatorKind,
    Target,
    TargetKind,
    rows_json,
    target_of,
)
from ..pipeline.ids import trace_uuid
from ..store.annotations import stored_target, upsert_annotations

#: Rows per statement in ``annotate_many``.
MANY_CHUNK = 1000


class Annotated(str, Enum):
    """What ``annotate_current_span`` did."""

    DEFERRED = "deferred"  # an event on the open span: stored with the span
    WRITTEN = "written"  # the span had ended: written now


def _resolved(cur: psycopg.Cursor[Any], target: Target | uuid.UUID) -> Target:
    if isinstance(target, Target):
        return target
    found = stored_target(cur, target)
    if found is None:
        raise AnnotationError(
            f"no span or trace {target} is stored (yet): for one that has not arrived, say which it is "
            "(Target.span(id, trace_id) or Target.trace(id))"
        )
    return found


def annotate(
    target: Any,
    name: str,
    *,
    score: float | None = None,
    label: str | None = None,
    explanation: str | None = None,
    correction: Any = None,
    kind: AnnotatorKind | str = AnnotatorKind.HUMAN,
    annotator: str | None = None,
    identifier: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    dsn: str | None = None,
    schema: str | None = None,
) -> Annotation:
    """Judge a span, a trace or a session; writing the same judgement again (same target, name,
    kind, annotator, identifier) updates it. ``target``: a span or span context, a ``Target``, a
    stored span or trace UUID, an OTel trace id (32 hex digits), or a session id. Returns what was
    written; ``AnnotationError`` for bad input, ``ConnectionFailed`` / ``SchemaError`` from the
    database (never with a password)."""
    where = target_of(target)
    # checked before any connection: bad input fails fast, and alike with or without a database
    probe = Annotation.checked(
        where if isinstance(where, Target) else Target.trace(where),
        name,
        score=score,
        label=label,
        explanation=explanation,
        correction=correction,
        kind=kind,
        annotator=annotator,
        identifier=identifier,
        metadata=metadata,
    )
    written = annotate_many(
        [probe] if isinstance(where, Target) else [(where, probe)], dsn=dsn, schema=schema
    )
    return written[0]


def annotate_many(
    annotations: Iterable[Annotation | tuple[uuid.UUID, Annotation]],
    *,
    dsn: str | None = None,
    schema: str | None = None,
) -> list[Annotation]:
    """Write many judgements (an LLM judge scoring thousands of spans): one connection, one
    statement per ``MANY_CHUNK`` rows, each chunk its own transaction. Items are ``Annotation``s
    (``Annotation.checked(target_of(span), "relevance", score=0.8, kind="llm")``), or (UUID,
    annotation) pairs whose UUID is looked up as a span, else a trace."""
    items = list(annotations)
    resolved_dsn, _ = resolve_dsn(dsn)
    out: list[Annotation] = []
    with connect(dsn, schema=schema) as conn:
        try:
            with conn.cursor() as cur:
                for start in range(0, len(items), MANY_CHUNK):
                    chunk: list[Annotation] = []
                    for item in items[start : start + MANY_CHUNK]:
                        if isinstance(item, tuple):
                            bare, annotation = item
                            chunk.append(replace(annotation, target=_resolved(cur, bare)))
                        else:
                            chunk.append(item)
                    with conn.transaction():
                        upsert_annotations(cur, rows_json(a.row() for a in chunk))
                    out += chunk
        except psycopg.Error as exc:
            raise translate_error(exc, "writing annotations", resolved_dsn) from None
    return out


#: ``annotate_current_span``'s fields → the event attributes that carry them (the inverse of
#: ``conventions.EVALUATION_EVENT_FIELDS``, which reads them back).
_EVENT_ATTRIBUTE_OF = {field: attribute for attribute, field in cv.EVALUATION_EVENT_FIELDS.items()}


def annotate_current_span(
    name: str,
    *,
    score: float | None = None,
    label: str | None = None,
    explanation: str | None = None,
    correction: Any = None,
    kind: AnnotatorKind | str = AnnotatorKind.CODE,
    annotator: str | None = None,
    identifier: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    of: TargetKind | str = TargetKind.SPAN,
    dsn: str | None = None,
) -> Annotated:
    """Judge the current span (``of="trace"``: its trace). Deferred while the span is open (an event
    on it, stored with it); written now when it has ended. ``AnnotationError`` without a span."""
    span = otel_trace.get_current_span()
    ctx = span.get_span_context()
    if not ctx.is_valid:
        raise AnnotationError("annotate_current_span: there is no current span")
    of = TargetKind(of)
    if of is TargetKind.SESSION:
        raise AnnotationError(
            "annotate_current_span judges the span or its trace: annotate() a session by its id"
        )
    span_target = target_of(ctx)
    assert isinstance(span_target, Target)
    target = span_target if of is TargetKind.SPAN else Target.trace(trace_uuid(ctx.trace_id))
    checked = Annotation.checked(
        target,
        name,
        score=score,
        label=label,
        explanation=explanation,
        correction=correction,
        kind=kind,
        annotator=annotator,
        identifier=identifier,
        metadata=metadata,
    )
    if not span.is_recording():
        annotate_many([checked], dsn=dsn)
        return Annotated.WRITTEN
    span.add_event(cv.EVALUATION_EVENT, _event_attributes(checked, of))
    return Annotated.DEFERRED


def _event_attributes(a: Annotation, of: TargetKind) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": a.name,
        "score": a.score,
        "label": a.label,
        "explanation": a.explanation,
        "annotator_kind": a.kind.value,
        "annotator": a.annotator or None,
        "identifier": a.identifier or None,
        "scope": of.value,
        "correction": json.dumps(a.correction, ensure_ascii=False) if a.correction is not None else None,
        "metadata": json.dumps(dict(a.metadata), ensure_ascii=False) if a.metadata else None,
    }
    return {_EVENT_ATTRIBUTE_OF[k]: v for k, v in fields.items() if v is not None}
