"""Judgements as data, with no database: what the API accepts, how judgements on real SDK spans
(OpenInference attributes, the OTel evaluation event, annotate_current_span's event) become rows."""

from __future__ import annotations

import json
import math
import uuid

import pytest
from opentelemetry import trace as otel_trace

from otel_pg_exporter import Annotated, AnnotationError, Target, annotate_current_span, target_of
from otel_pg_exporter.pipeline.annotations import (
    Annotation,
    AnnotatorKind,
    TargetKind,
    from_evaluation,
    rows_json,
)
from otel_pg_exporter.pipeline.encoding import encode_span
from otel_pg_exporter.pipeline.ids import span_uuid, trace_uuid
from otel_pg_exporter.pipeline.mapping import map_span
from otel_pg_exporter.pipeline.model import Limits
from otel_pg_exporter.pipeline.privacy import build_scrubber
from tests.helpers.support import Capture, by_name

TRACE = uuid.UUID(int=1)


def _rows(span, limits: Limits | None = None) -> list[dict]:
    encoded = encode_span(map_span(span), limits or Limits())
    return json.loads(encoded.annotations) if encoded.annotations else []


def test_checked_refuses_what_the_table_would() -> None:
    target = Target.trace(TRACE)
    for bad, kwargs in (
        ("needs a name", {"name": " ", "score": 1}),
        ("needs a score, a label", {"name": "thumbs"}),
        ("finite", {"name": "q", "score": math.nan}),
        ("finite", {"name": "q", "score": True}),
        ("kind must be one of", {"name": "q", "score": 1, "kind": "robot"}),
        ("at most 255", {"name": "q", "label": "x" * 256}),
        ("larger than", {"name": "q", "correction": "x" * 300_000}),
    ):
        with pytest.raises(AnnotationError, match=bad):
            Annotation.checked(target, **kwargs)
    ok = Annotation.checked(target, " thumbs ", label="down", kind="user", annotator="u1")
    assert ok.name == "thumbs" and ok.kind is AnnotatorKind.USER
    assert ok.row()["annotator_kind"] == "user" and ok.row()["trace_id"] == str(TRACE)


def test_target_of_what_callers_hold() -> None:
    capture = Capture()
    with capture.tracer.start_as_current_span("s") as span:
        ctx = span.get_span_context()
    assert target_of(span) == Target.span(span_uuid(ctx.trace_id, ctx.span_id), trace_uuid(ctx.trace_id))
    assert target_of(f"{ctx.trace_id:032x}") == Target.trace(trace_uuid(ctx.trace_id))
    assert target_of("conversation-42") == Target.session("conversation-42")
    assert target_of(str(TRACE)) == TRACE  # a stored UUID: span or trace, the database knows
    with pytest.raises(AnnotationError, match="unique only within its trace"):
        target_of(f"{ctx.span_id:016x}")
    with pytest.raises(AnnotationError):
        target_of(3.5)


def test_openinference_annotations_become_rows_of_their_scope() -> None:
    capture = Capture()
    with capture.tracer.start_as_current_span(
        "root",
        attributes={
            "session.id": "s-1",
            "annotations.0.annotation.name": "correctness",
            "annotations.0.annotation.score": 0.9,
            "annotations.0.annotation.annotator_kind": "HUMAN",
            "annotations.0.annotation.metadata": '{"reviewer": "ann"}',
            "evaluations.0.evaluation.name": "hallucination",
            "evaluations.0.evaluation.label": "factual",
            "trace.evaluations.0.evaluation.name": "helpful",
            "trace.evaluations.0.evaluation.score": 1,
            "trace.evaluations.0.evaluation.annotator_kind": "LLM",
            "session.annotations.0.annotation.name": "frustration",
            "session.annotations.0.annotation.label": "low",
            "annotations.1.annotation.score": 0.5,  # no name: not a judgement
        },
    ):
        pass
    rows = {r["name"]: r for r in _rows(capture.take()[0])}
    assert set(rows) == {"correctness", "hallucination", "helpful", "frustration"}
    assert rows["correctness"]["target_kind"] == "span" and rows["correctness"]["annotator_kind"] == "human"
    assert rows["correctness"]["metadata"] == {"reviewer": "ann"}
    assert rows["hallucination"]["annotator_kind"] == "code"  # OpenInference without a kind
    assert rows["helpful"]["target_kind"] == "trace" and rows["helpful"]["annotator_kind"] == "llm"
    assert rows["helpful"]["span_id"] is None
    assert rows["frustration"] == {**rows["frustration"], "target_kind": "session", "session_id": "s-1"}
    assert all(r["source"] == "ingest" for r in rows.values())


def test_evaluation_event_and_annotate_current_span() -> None:
    capture = Capture()
    with capture.tracer.start_as_current_span("chat") as span:
        span.add_event(
            "gen_ai.evaluation.result",
            {"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.7},
        )
        assert (
            annotate_current_span(
                "rubric", score=2, kind="llm", annotator="judge-model", correction={"answer": "42"}
            )
            is Annotated.DEFERRED
        )
        assert annotate_current_span("verdict", label="ok", of="trace") is Annotated.DEFERRED
    rows = {r["name"]: r for r in _rows(capture.take()[0])}
    assert rows["relevance"]["annotator_kind"] == "llm" and rows["relevance"]["score"] == 0.7
    assert rows["rubric"]["annotator"] == "judge-model" and rows["rubric"]["correction"] == {"answer": "42"}
    assert rows["rubric"]["target_kind"] == "span"
    assert rows["verdict"]["target_kind"] == "trace" and rows["verdict"]["annotator_kind"] == "code"


def test_annotate_current_span_without_a_span() -> None:
    with pytest.raises(AnnotationError, match="no current span"):
        annotate_current_span("q", score=1)
    capture = Capture()
    with capture.tracer.start_as_current_span("s"), pytest.raises(AnnotationError, match="a session"):
        annotate_current_span("q", score=1, of="session")
    assert otel_trace.get_current_span().get_span_context().is_valid is False


def test_ingest_is_lenient_scrubbed_and_respects_content_capture() -> None:
    key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
    results = [
        {"name": "n" * 400, "score": "0.25", "explanation": f"leaked {key}"},
        {"name": "nothing"},  # says nothing
        "not a judgement",
        {"name": "nan", "score": float("nan"), "label": "x"},
        {"name": "huge", "correction": {"n": 10**30}, "metadata": {1: "int key"}},
    ]
    rows = from_evaluation(results, span_id=TRACE, trace_id=TRACE, scrub=build_scrubber())
    assert len(rows) == 3
    assert len(rows[0]["name"]) == 255 and rows[0]["score"] == 0.25
    assert rows[2]["correction"] == {"n": 10**30} and json.loads(rows_json(rows))[2]["metadata"] == {
        "1": "int key"
    }
    assert key not in rows[0]["explanation"]
    assert rows[1]["score"] is None and rows[1]["label"] == "x"
    quiet = from_evaluation(results[:1], span_id=TRACE, trace_id=TRACE, capture_content=False)
    assert quiet[0]["explanation"] is None and quiet[0]["score"] == 0.25


def test_spans_without_judgements_carry_none() -> None:
    capture = Capture()
    with capture.tracer.start_as_current_span("plain", attributes={"gen_ai.eval.groundedness": 0.4}):
        pass
    spans = by_name(capture.take())
    assert encode_span(map_span(spans["plain"]), Limits()).annotations is None  # OpenLIT scalars: no name
    assert TargetKind("session") is TargetKind.SESSION


def test_judgements_survive_the_spool_and_older_records_still_read() -> None:
    import zlib

    from otel_pg_exporter.delivery.spool_codec import HEADER, decode_record, encode_batch

    capture = Capture()
    with capture.tracer.start_as_current_span("judged") as span:
        span.add_event(
            "gen_ai.evaluation.result", {"gen_ai.evaluation.name": "q", "gen_ai.evaluation.score.label": "ok"}
        )
    encoded = encode_span(map_span(capture.take()[0]), Limits())
    assert encoded.annotations is not None and json.loads(encoded.annotations)[0]["label"] == "ok"
    payload = encode_batch([encoded])[HEADER.size :]
    (item,), _ = decode_record(payload)
    assert item.annotations == encoded.annotations
    # a record spooled before judgements existed has no such field: it reads as none
    doc = json.loads(zlib.decompress(payload))
    del doc["spans"][0]["annotations"]
    (old,), _ = decode_record(zlib.compress(json.dumps(doc).encode()))
    assert old.annotations is None and old.row == encoded.row
