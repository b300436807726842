"""Judgements in PostgreSQL: the API's upsert, judgements before their span, ingest from real SDK
spans and log records, deletion with the trace, the orphan sweep, end-user feedback under RLS
(the seed's ``authenticated`` role), and the read side (filters, badges, ``spans_annotated``)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from opentelemetry.trace import set_span_in_context

from otel_pg_exporter import (
    AnnotationError,
    PostgresLogExporter,
    PostgresSpanExporter,
    Target,
    TraceStore,
    annotate,
    annotate_many,
    install_schema,
    span_uuid,
    trace_uuid,
)
from otel_pg_exporter.pipeline.annotations import Annotation
from otel_pg_exporter.query.trace_store import TraceStoreError
from otel_pg_exporter.store.retention import sweep
from tests.helpers.scenarios import ALICE, BOB, agent_run, authenticated_role, database_with_users
from tests.helpers.support import Capture


def _rows(dsn: str, where: str = "true", params: tuple = ()) -> list[dict]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(f"SELECT * FROM otel_annotations WHERE {where} ORDER BY name", params)
        return cur.fetchall()


@pytest.fixture
def annotated_db(make_database) -> str:
    dsn = make_database()
    install_schema(dsn)
    return dsn


def _export(dsn: str, capture: Capture, spans: list | None = None) -> None:
    exporter = PostgresSpanExporter(dsn=dsn)
    try:
        exporter.export(capture.take() if spans is None else spans)
    finally:
        exporter.shutdown()


def test_writing_the_same_judgement_again_updates_it(annotated_db: str) -> None:
    capture = Capture()
    with capture.tracer.start_as_current_span("run") as span:
        pass
    _export(annotated_db, capture)
    tid = trace_uuid(span.get_span_context().trace_id)
    annotate(span, "thumbs", label="down", score=0, kind="user", annotator="u1", dsn=annotated_db)
    first = _rows(annotated_db)[0]
    annotate(span, "thumbs", label="down", score=0, kind="user", annotator="u1", dsn=annotated_db)
    assert _rows(annotated_db)[0]["updated_at"] == first["updated_at"]  # nothing changed: not rewritten
    annotate(span, "thumbs", label="up", score=1, kind="user", annotator="u1", dsn=annotated_db)
    annotate(span, "thumbs", label="up", score=1, kind="user", annotator="u2", dsn=annotated_db)
    annotate(
        span,
        "thumbs",
        label="down",
        score=0,
        kind="user",
        annotator="u2",
        identifier="run-2",
        dsn=annotated_db,
    )
    rows = _rows(annotated_db)
    assert len(rows) == 3
    assert {(r["annotator"], r["identifier"], r["label"]) for r in rows} == {
        ("u1", "", "up"),
        ("u2", "", "up"),
        ("u2", "run-2", "down"),
    }
    assert all(r["trace_id"] == tid and r["source"] == "api" for r in rows)
    # a bare stored UUID is looked up: this one is the trace
    annotate(tid, "correctness", score=0.25, dsn=annotated_db)
    assert _rows(annotated_db, "name = 'correctness'")[0]["target_kind"] == "trace"
    with pytest.raises(AnnotationError, match="no span or trace"):
        annotate(uuid.uuid4(), "correctness", score=1, dsn=annotated_db)


def test_a_judgement_written_before_its_span_waits_for_it(annotated_db: str) -> None:
    capture = Capture()
    with capture.tracer.start_as_current_span("judged later") as span:
        annotate(span, "early", label="seen", kind="code", dsn=annotated_db)  # span not exported yet
    ctx = span.get_span_context()
    assert _rows(annotated_db)[0]["span_id"] == span_uuid(ctx.trace_id, ctx.span_id)
    _export(annotated_db, capture)
    with TraceStore(annotated_db) as store:
        node = store.get_span(span_uuid(ctx.trace_id, ctx.span_id))
    assert node is not None
    assert [a["name"] for a in node.evaluation["annotations"]] == ["early"]
    with psycopg.connect(annotated_db) as conn:  # the seed's column itself is untouched
        stored = conn.execute("SELECT evaluation FROM spans WHERE span_id = %s", (node.span_id,)).fetchone()
    assert stored[0] == {}


def test_ingest_from_spans_and_log_records_is_idempotent(annotated_db: str) -> None:
    capture = Capture()
    t = capture.tracer
    with t.start_as_current_span("root", attributes={"session.id": "sess-9"}) as root:
        root.set_attribute("trace.annotations.0.annotation.name", "helpful")
        root.set_attribute("trace.annotations.0.annotation.label", "yes")
        root.set_attribute("session.evaluations.0.evaluation.name", "resolved")
        root.set_attribute("session.evaluations.0.evaluation.score", 1)
        with t.start_as_current_span("chat") as chat:
            chat.add_event(
                "gen_ai.evaluation.result",
                {"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.8},
            )
    spans = capture.take()
    exporter = PostgresSpanExporter(dsn=annotated_db)
    logs = PostgresLogExporter(dsn=annotated_db)
    try:
        exporter.export(spans)
        exporter.export(spans)  # a re-sent batch
        with t.start_as_current_span("late", context=set_span_in_context(chat)):
            capture.logger.emit(
                body=None,
                attributes={
                    "event.name": "gen_ai.evaluation.result",
                    "gen_ai.evaluation.name": "toxicity",
                    "gen_ai.evaluation.score.label": "none",
                },
            )
        logs.export(capture.take_logs())
    finally:
        exporter.shutdown()
        logs.shutdown()
    rows = {r["name"]: r for r in _rows(annotated_db)}
    assert set(rows) == {"helpful", "resolved", "relevance", "toxicity"}, rows
    assert rows["resolved"]["target_kind"] == "session" and rows["resolved"]["session_id"] == "sess-9"
    assert rows["helpful"]["target_kind"] == "trace"
    assert rows["relevance"]["span_id"] == span_uuid(
        chat.get_span_context().trace_id, chat.get_span_context().span_id
    )
    assert all(r["source"] == "ingest" for r in rows.values())


def test_judgements_go_with_their_trace_and_orphans_are_swept(annotated_db: str) -> None:
    capture = Capture()
    one = agent_run(capture, "q1", user=ALICE, session="s-1")
    two = agent_run(capture, "q2", user=ALICE, session="s-1")
    _export(annotated_db, capture)
    annotate(f"{one:032x}", "thumbs", label="down", dsn=annotated_db)
    annotate("s-1", "satisfaction", score=0.2, dsn=annotated_db)
    annotate(Target.trace(uuid.uuid4()), "lost", score=1, dsn=annotated_db)  # its trace never comes
    with psycopg.connect(annotated_db, autocommit=True) as conn:
        conn.execute("DELETE FROM traces WHERE trace_id = %s", (trace_uuid(one),))
        assert {r["name"] for r in _rows(annotated_db)} == {"satisfaction", "lost"}  # session lives on
        conn.execute("DELETE FROM traces WHERE trace_id = %s", (trace_uuid(two),))
        assert {r["name"] for r in _rows(annotated_db)} == {"lost"}  # the session's last trace went
        conn.execute("UPDATE otel_annotations SET created_at = now() - interval '30 days'")
    report = sweep(annotated_db)
    assert report.orphan_annotations == 1 and _rows(annotated_db) == []


def test_annotate_many_in_chunks(annotated_db: str) -> None:
    capture = Capture()
    with capture.tracer.start_as_current_span("root"):
        for i in range(30):
            with capture.tracer.start_as_current_span(f"step {i}"):
                pass
    spans = capture.take()
    _export(annotated_db, capture, spans)
    judged = [
        Annotation.checked(
            Target.span(span_uuid(s.context.trace_id, s.context.span_id)),
            "relevance",
            score=i / 100,
            kind="llm",
            annotator="judge",
            identifier=f"exp-{i % 100}",
        )
        for i in range(2500)
        for s in (spans[i % len(spans)],)
    ]
    written = annotate_many(judged, dsn=annotated_db)
    assert len(written) == 2500
    with psycopg.connect(annotated_db) as conn:
        count, with_trace = conn.execute("SELECT count(*), count(trace_id) FROM otel_annotations").fetchone()
    assert count == len({(s.context.span_id, i % 100) for i in range(2500) for s in (spans[i % len(spans)],)})
    assert with_trace == count  # each span's trace was looked up


def test_list_filters_badges_and_trace_annotations(annotated_db: str) -> None:
    capture = Capture()
    bad = agent_run(capture, "refund?", user=ALICE, session="s-a", fail=True)
    good = agent_run(capture, "hours?", user=ALICE, session="s-a")
    _export(annotated_db, capture)
    annotate(f"{bad:032x}", "thumbs", label="down", score=0, kind="user", dsn=annotated_db)
    annotate(f"{good:032x}", "thumbs", label="up", score=1, kind="user", dsn=annotated_db)
    annotate(f"{good:032x}", "correctness", score=0.9, kind="llm", dsn=annotated_db)
    with TraceStore(annotated_db) as store:
        down = store.list_traces(annotation="thumbs", label="down").traces
        assert [t.trace_id for t in down] == [trace_uuid(bad)]
        assert down[0].annotations[0]["label"] == "down"
        assert [t.trace_id for t in store.list_traces(min_score=0.5, max_score=0.95).traces] == [
            trace_uuid(good)
        ]
        assert store.list_traces(annotation="thumbs", min_score=2).traces == []
        detail = store.get_trace(trace_uuid(good))
        assert {a["name"] for a in detail.trace["annotations"]} == {"thumbs", "correctness"}
        assert len(store.annotations(trace_id=trace_uuid(good))) == 2
        assert len(store.annotations(kind="user")) == 2
        assert store.annotations(name="thumbs", label="down")[0]["trace_id"] == trace_uuid(bad)


def test_end_user_feedback_under_rls(make_database) -> None:
    dsn = database_with_users(make_database)
    capture = Capture()
    mine = agent_run(capture, "mine", user=ALICE, session="a")
    theirs = agent_run(capture, "theirs", user=BOB, session="b")
    _export(dsn, capture)
    annotate(f"{theirs:032x}", "thumbs", label="up", kind="user", annotator=str(BOB), dsn=dsn)
    annotate(f"{mine:032x}", "review", label="ok", kind="human", annotator="ann", dsn=dsn)
    with authenticated_role(dsn), TraceStore(dsn, as_user=ALICE) as alice:
        alice.annotate(Annotation.checked(Target.trace(trace_uuid(mine)), "thumbs", label="down", score=0))
        stored = _rows(dsn, "annotator = %s", (str(ALICE),))
        assert [(r["annotator_kind"], r["label"]) for r in stored] == [("user", "down")]
        # only her own feedback is visible: not bob's, not the reviewer's
        assert [(a["name"], a["annotator"]) for a in alice.annotations()] == [("thumbs", str(ALICE))]
        with pytest.raises(TraceStoreError):
            alice.annotate(Annotation.checked(Target.trace(trace_uuid(theirs)), "thumbs", label="down"))
        # plain SQL as the API role: a 'human' row, and feedback on bob's span named with her trace
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET ROLE authenticated")
            conn.execute("SELECT set_config('request.jwt.claim.sub', %s, false)", (str(ALICE),))
            for sql, params in (
                (
                    "INSERT INTO otel_annotations (target_kind, trace_id, name, label, annotator_kind, annotator)"
                    " VALUES ('trace', %s, 'review', 'bad', 'human', %s)",
                    (trace_uuid(mine), str(ALICE)),
                ),
                (
                    "INSERT INTO otel_annotations (target_kind, trace_id, name, label, annotator_kind, annotator)"
                    " VALUES ('trace', %s, 'thumbs', 'down', 'user', %s)",
                    (trace_uuid(mine), str(BOB)),
                ),
                ("DELETE FROM otel_annotations", ()),
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(sql, params)
            with psycopg.connect(dsn) as admin:  # bob's span, named with alice's trace: refused too
                bob_span = admin.execute(
                    "SELECT span_id FROM spans WHERE trace_id = %s LIMIT 1", (trace_uuid(theirs),)
                ).fetchone()[0]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(
                    "INSERT INTO otel_annotations (target_kind, trace_id, span_id, name, label,"
                    " annotator_kind, annotator) VALUES ('span', %s, %s, 'thumbs', 'down', 'user', %s)",
                    (trace_uuid(mine), bob_span, str(ALICE)),
                )
            # the README's recipe: one thumbs, twice, is one row
            recipe = (
                "INSERT INTO otel_annotations (target_kind, trace_id, name, label, score, annotator_kind,"
                " annotator) VALUES ('trace', %s, 'thumbs', %s, %s, 'user', auth.uid()::text)"
                " ON CONFLICT (target_kind, target_key, name, annotator_kind, annotator, identifier)"
                " DO UPDATE SET label = excluded.label, score = excluded.score, updated_at = now()"
            )
            conn.execute(recipe, (trace_uuid(mine), "up", 1))
            conn.execute(recipe, (trace_uuid(mine), "up", 1))
    assert [(r["label"], r["score"]) for r in _rows(dsn, "annotator = %s", (str(ALICE),))] == [("up", 1.0)]
    assert len(_rows(dsn)) == 3  # bob's, the reviewer's, alice's one


def test_spans_are_stored_when_the_annotations_table_is_missing(make_database) -> None:
    dsn = make_database()
    install_schema(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE otel_annotations CASCADE")
    capture = Capture()
    with capture.tracer.start_as_current_span("judged") as span:
        span.add_event(
            "gen_ai.evaluation.result", {"gen_ai.evaluation.name": "q", "gen_ai.evaluation.score.value": 1}
        )
    _export(dsn, capture)
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT evaluation FROM spans WHERE name = 'judged'").fetchone()
    assert row[0]["results"][0]["name"] == "q"
    with TraceStore(dsn) as store:  # the read side works without 009 too
        trace = store.get_trace(trace_uuid(span.get_span_context().trace_id))
        assert trace is not None and trace.trace["annotations"] == []
        assert store.annotations() == []
        since = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=1)
        assert len(store.list_traces(since=since).traces) == 1
