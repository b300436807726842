"""Judgements (annotations) as data: what one ``otel_annotations`` row holds, checked, and how the
judgements that arrive on spans become rows. Pure: no I/O.

Two ways in. ``Annotation.checked`` is for the API (``annotate()``, the explorer, MCP): bad input is
an ``AnnotationError`` naming the field. ``from_evaluation`` is for ingest (the ``evaluation.results``
the mapping read from ``gen_ai.evaluation.result`` events, log records and OpenInference's
``evaluations.*`` / ``annotations.*`` attributes): lenient, it never raises; an item with no name or
nothing to say is skipped, over-long text is cut to the column's width.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from uuid import UUID

import orjson
from opentelemetry import trace as otel_trace

from ..errors import OtelPgError
from ..schema.tables import (
    ANNOTATION_CORRECTION_MAX_BYTES,
    ANNOTATION_TARGET_KINDS,
    ANNOTATION_WIDTHS,
    ANNOTATOR_KINDS,
)
from . import conventions as cv
from .ids import span_uuid, trace_uuid
from .sanitize import clean_text

#: The thumbs: the judgement's name, and each thumb's label → score (an end user's 👍/👎).
THUMBS_NAME = "thumbs"
THUMBS: dict[str, float] = {"up": 1.0, "down": 0.0}

_OTEL_TRACE_HEX = re.compile(r"[0-9a-f]{32}")
_OTEL_SPAN_HEX = re.compile(r"[0-9a-f]{16}")


class AnnotationError(OtelPgError, ValueError):
    """An annotation the table would refuse (no name, nothing said, unknown kind, a bad score)."""


class AnnotatorKind(str, Enum):
    HUMAN = "human"
    USER = "user"
    LLM = "llm"
    CODE = "code"


class TargetKind(str, Enum):
    SPAN = "span"
    TRACE = "trace"
    SESSION = "session"


assert {k.value for k in AnnotatorKind} == set(ANNOTATOR_KINDS)
assert tuple(k.value for k in TargetKind) == ANNOTATION_TARGET_KINDS


@dataclass(frozen=True, slots=True)
class Target:
    """What is judged. A span's trace id may be unknown (None) until its row is looked up."""

    kind: TargetKind
    trace_id: UUID | None = None
    span_id: UUID | None = None
    session_id: str | None = None

    @classmethod
    def span(cls, span_id: UUID, trace_id: UUID | None = None) -> Target:
        return cls(TargetKind.SPAN, trace_id=trace_id, span_id=span_id)

    @classmethod
    def trace(cls, trace_id: UUID) -> Target:
        return cls(TargetKind.TRACE, trace_id=trace_id)

    @classmethod
    def session(cls, session_id: str) -> Target:
        if not session_id:
            raise AnnotationError("a session target needs a session id")
        return cls(TargetKind.SESSION, session_id=session_id)


@dataclass(frozen=True, slots=True)
class Annotation:
    """One judgement, as its ``otel_annotations`` row holds it."""

    target: Target
    name: str
    score: float | None = None
    label: str | None = None
    explanation: str | None = None
    correction: Any = None
    kind: AnnotatorKind = AnnotatorKind.HUMAN
    annotator: str = ""
    identifier: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source: str = "api"

    @classmethod
    def checked(
        cls,
        target: Target,
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
        source: str = "api",
    ) -> Annotation:
        """The annotation, or ``AnnotationError`` saying what the table would refuse."""
        try:
            kind = AnnotatorKind(kind)
        except ValueError:
            raise AnnotationError(f"kind must be one of {', '.join(ANNOTATOR_KINDS)}, not {kind!r}") from None
        if not isinstance(name, str) or not name.strip():
            raise AnnotationError("an annotation needs a name (e.g. 'thumbs', 'correctness')")
        if score is not None:
            if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
                raise AnnotationError("score must be a finite number")
            score = float(score)
        if score is None and label in (None, "") and explanation in (None, "") and correction is None:
            raise AnnotationError("an annotation needs a score, a label, an explanation or a correction")
        for what, value in (
            ("name", name),
            ("label", label),
            ("annotator", annotator),
            ("identifier", identifier),
            ("explanation", explanation),
        ):
            if value is not None and (not isinstance(value, str) or len(value) > ANNOTATION_WIDTHS[what]):
                raise AnnotationError(f"{what} must be text of at most {ANNOTATION_WIDTHS[what]} characters")
        if correction is not None and len(_json(correction).encode()) > ANNOTATION_CORRECTION_MAX_BYTES:
            raise AnnotationError(f"correction is larger than {ANNOTATION_CORRECTION_MAX_BYTES} bytes")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise AnnotationError("metadata must be a mapping")
        return cls(
            target=target,
            name=name.strip(),
            score=score,
            label=label or None,
            explanation=explanation or None,
            correction=correction,
            kind=kind,
            annotator=annotator or "",
            identifier=identifier or "",
            metadata=dict(metadata or {}),
            source=source,
        )

    def row(self) -> dict[str, Any]:
        """The row for the store's ``jsonb_to_recordset`` (JSON-ready values)."""
        t = self.target
        return {
            "target_kind": t.kind.value,
            "trace_id": str(t.trace_id) if t.trace_id else None,
            "span_id": str(t.span_id) if t.span_id else None,
            "session_id": t.session_id,
            "name": self.name,
            "score": self.score,
            "label": self.label,
            "explanation": self.explanation,
            "correction": self.correction,
            "annotator_kind": self.kind.value,
            "annotator": self.annotator,
            "identifier": self.identifier,
            "source": self.source,
            "metadata": dict(self.metadata),
        }


def target_of(target: Any) -> Target | uuid.UUID:
    """A ``Target`` for what the caller holds: a ``Target``; an OTel span or span context (its
    span); 32 hex digits (an OTel trace id); any other text (a session id). A UUID (or its text) is
    returned as is: whether it names a span or a trace is known only to the database."""
    if isinstance(target, Target):
        return target
    if isinstance(target, otel_trace.Span):
        target = target.get_span_context()
    if isinstance(target, otel_trace.SpanContext):
        if not target.is_valid:
            raise AnnotationError("the span context is not valid (no trace or span id)")
        return Target.span(span_uuid(target.trace_id, target.span_id), trace_uuid(target.trace_id))
    if isinstance(target, uuid.UUID):
        return target
    if isinstance(target, str):
        text = target.strip()
        if _OTEL_TRACE_HEX.fullmatch(text.lower()):
            return Target.trace(trace_uuid(int(text, 16)))
        if _OTEL_SPAN_HEX.fullmatch(text.lower()):
            raise AnnotationError(
                "an OTel span id alone names no span (it is unique only within its trace): pass the "
                "span, its context, or the stored span UUID (span_uuid(trace_id, span_id))"
            )
        try:
            return uuid.UUID(text) if len(text) == 36 else Target.session(text)
        except ValueError:
            return Target.session(text)
    raise AnnotationError(f"cannot annotate a {type(target).__name__}: pass a span, a trace or a session id")


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, a nesting too deep: the slow way
        return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def _cut(value: Any, what: str, scrub: Callable[[str], str] | None) -> str | None:
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else _json(value)
    if scrub is not None:
        text = scrub(text)
    cleaned, _ = clean_text(text, ANNOTATION_WIDTHS[what])
    return cleaned or None


def _score(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _mapping(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {"value": value}
    return dict(value) if isinstance(value, Mapping) else {}


def _fields(item: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """The judgement's fields and the convention that sent them (for the default annotator kind):
    the mapping gives OpenInference's items their ``scope``; log records' items say ``source``."""
    for key in cv.ANNOTATION_ITEM_KEYS:  # an item with more than its wrapper key stays wrapped
        nested = item.get(key)
        if isinstance(nested, Mapping):
            return {**item, **nested}, "openinference"
    if "scope" in item and "annotator_kind" not in item:
        return item, "openinference"
    return item, "logs" if item.get("source") == "logs" else "event"


_KINDS: dict[str, AnnotatorKind] = {k.value: k for k in AnnotatorKind}


def _kind(value: Any, convention: str) -> AnnotatorKind:
    named = _KINDS.get(value.lower()) if isinstance(value, str) else None
    return named or _KINDS[cv.ANNOTATOR_KIND_DEFAULTS[convention]]


def from_evaluation(
    results: Iterable[Any],
    *,
    span_id: UUID,
    trace_id: UUID,
    session_id: str | None = None,
    scrub: Callable[[str], str] | None = None,
    capture_content: bool = True,
) -> list[dict[str, Any]]:
    """Rows for the judgements among a span's ``evaluation.results`` (ingest: never raises).

    Scoped items (``"scope": "trace"`` / ``"session"``) judge the span's trace or session; a session
    item without a known session id is left to the store, which reads the trace's. Free text goes
    through ``scrub``; without ``capture_content`` explanations and corrections are not kept (they
    may quote the content), scores and labels are."""
    rows: list[dict[str, Any]] = []
    for item in results:
        if not isinstance(item, Mapping):
            continue
        fields, convention = _fields(item)
        name = _cut(fields.get("name"), "name", None)
        if name is None:
            continue
        score = _score(fields.get("score"))
        label = _cut(fields.get("label"), "label", scrub)
        explanation = _cut(fields.get("explanation"), "explanation", scrub) if capture_content else None
        correction = _correction(fields.get("correction"), scrub) if capture_content else None
        if score is None and label is None and explanation is None and correction is None:
            continue
        scope = str(item.get("scope") or fields.get("scope") or "span").lower()
        target = (
            Target.trace(trace_id)
            if scope == "trace"
            else Target(TargetKind.SESSION, trace_id=trace_id, session_id=session_id)
            if scope == "session"
            else Target.span(span_id, trace_id)
        )
        metadata = _mapping(fields.get("metadata"))
        for extra in ("response_id", "error_type"):
            if fields.get(extra) is not None:
                metadata[extra] = fields[extra]
        annotation = Annotation(
            target=target,
            name=name,
            score=score,
            label=label,
            explanation=explanation,
            correction=correction,
            kind=_kind(fields.get("annotator_kind"), convention),
            annotator=_cut(fields.get("annotator"), "annotator", None) or "",
            identifier=_cut(fields.get("identifier"), "identifier", None) or "",
            metadata=metadata,
            source="ingest",
        )
        rows.append(annotation.row())
    return rows


def _correction(value: Any, scrub: Callable[[str], str] | None) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    text = _json(value)
    if scrub is not None:
        scrubbed = scrub(text)
        if scrubbed != text:
            try:
                value = json.loads(scrubbed)
            except ValueError:
                value = scrubbed
            text = _json(value)
    return value if len(text.encode()) <= ANNOTATION_CORRECTION_MAX_BYTES else None


def rows_json(rows: Iterable[dict[str, Any]]) -> str:
    """Rows as the store's one JSON parameter."""
    return _json(list(rows))
