"""TraceStore: reading back what the exporter stored, made by the real SDK; lists, keyset paging,
trees with placeholders, sessions, cost summaries, and what a user may see under the seed's RLS."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from otel_pg_exporter import PostgresSpanExporter, span_uuid, trace_uuid
from otel_pg_exporter.query.trace_store import TraceStore, TraceStoreError
from tests.helpers.scenarios import ALICE, BOB, agent_run, authenticated_role, database_with_users
from tests.helpers.support import Capture, chat_attributes


@pytest.fixture
def stored(make_database) -> dict:
    dsn = database_with_users(make_database)
    capture = Capture()
    now = datetime.now(timezone.utc)
    ids = []
    for i in range(7):  # oldest first, one minute apart
        ids.append(
            agent_run(
                capture,
                f"question {i}",
                user=ALICE if i % 2 == 0 else BOB,
                session=f"s-{i % 2}",
                model="gpt-4o" if i == 3 else "gpt-4o-mini",
                fail=i == 5,
                start=now - timedelta(minutes=10 - i),
            )
        )
    exporter = PostgresSpanExporter(dsn, spool_dir="off")
    assert exporter.export(capture.take()).name == "SUCCESS"
    # a trace whose root has not arrived: a running trace with a placeholder parent
    with capture.tracer.start_as_current_span("root never sent") as orphan_root:
        with capture.tracer.start_as_current_span("inner", attributes=chat_attributes(5, 1)):
            pass
    spans = [s for s in capture.take() if s.name != "root never sent"]
    assert exporter.export(spans).name == "SUCCESS"
    exporter.shutdown()
    return {"dsn": dsn, "ids": ids, "orphan": orphan_root.get_span_context()}


def test_list_newest_first_with_filters(stored) -> None:
    dsn, ids = stored["dsn"], stored["ids"]
    with TraceStore(dsn) as store:
        page = store.list_traces(workflow="support")
        assert [t.trace_id for t in page.traces] == [trace_uuid(i) for i in reversed(ids)]
        first = page.traces[0]
        assert first.query_preview == "question 6" and first.models == ("gpt-4o-mini",)
        assert first.tokens["total"] == 120 and first.cost > 0 and first.span_count == 3
        assert [t.trace_id for t in store.list_traces(status="failed").traces] == [trace_uuid(ids[5])]
        assert [t.trace_id for t in store.list_traces(model="gpt-4o").traces] == [trace_uuid(ids[3])]
        assert {t.trace_id for t in store.list_traces(user_id=BOB).traces} == {
            trace_uuid(i) for i in ids[1::2]
        }
        assert [t.query_preview for t in store.list_traces(query="TION 4").traces] == ["question 4"]
        assert store.list_traces(query="100%_").traces == []  # LIKE characters are literal
        running = store.list_traces(status="running").traces
        assert [t.trace_id for t in running] == [trace_uuid(stored["orphan"].trace_id)]
        later = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=5, seconds=30)
        assert len(store.list_traces(since=later, workflow="support").traces) == 2  # runs 5 and 6


def test_keyset_paging_both_ways_and_other_sorts(stored) -> None:
    dsn, ids = stored["dsn"], stored["ids"]
    want = [trace_uuid(i) for i in reversed(ids)]
    with TraceStore(dsn) as store:
        seen = []
        page = store.list_traces(workflow="support", limit=3)
        pages = [page]
        while page.older:
            page = store.list_traces(workflow="support", limit=3, cursor=page.older)
            pages.append(page)
        seen = [t.trace_id for p in pages for t in p.traces]
        assert seen == want and [len(p.traces) for p in pages] == [3, 3, 1]
        assert pages[0].newer is None and pages[-1].older is None
        back = store.list_traces(workflow="support", limit=3, cursor=pages[-1].newer)
        assert [t.trace_id for t in back.traces] == [t.trace_id for t in pages[1].traces]
        by_cost = store.list_traces(workflow="support", sort="cost", limit=50).traces
        assert [t.cost for t in by_cost] == sorted((t.cost for t in by_cost), reverse=True)
        assert by_cost[0].trace_id == trace_uuid(ids[3])  # gpt-4o is the dearest
        with pytest.raises(TraceStoreError, match="invalid cursor"):
            store.list_traces(cursor="o.not-a-cursor")
        with pytest.raises(TraceStoreError, match="sort must be one of"):
            store.list_traces(sort="name; DROP TABLE traces")


def test_trace_tree_span_and_placeholders(stored) -> None:
    dsn, ids = stored["dsn"], stored["ids"]
    with TraceStore(dsn) as store:
        detail = store.get_trace(trace_uuid(ids[5]))
        assert detail is not None and detail.trace["status"] == "failed"
        (root,) = detail.roots
        assert root.name == "support run" and [c.name for c in root.children] == [
            "chat",
            "execute_tool lookup",
        ]
        chat = root.children[0]
        assert chat.depth == 1 and chat.status == "failed" and chat.error_type == "RateLimitError"
        assert chat.cost_status == "computed" and chat.tokens["input"] == 100
        assert chat.inputs["messages"][1]["parts"][0]["content"] == "question 5"
        assert store.get_span(chat.span_id).name == "chat"
        assert detail.span(chat.span_id) is not None
        orphan = store.get_trace(trace_uuid(stored["orphan"].trace_id))
        (placeholder,) = orphan.roots
        assert placeholder.placeholder and placeholder.span_id == span_uuid(
            stored["orphan"].trace_id, stored["orphan"].span_id
        )
        assert [c.name for c in placeholder.children] == ["inner"]
        assert store.get_trace(uuid.uuid4()) is None
        with pytest.raises(TraceStoreError, match="not a UUID"):
            store.get_trace("42")


def test_sessions_and_a_conversation_replay(stored) -> None:
    with TraceStore(stored["dsn"]) as store:
        since = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=1)
        sessions = {s.session_id: s for s in store.sessions(since=since)}
        assert set(sessions) == {"s-0", "s-1"}
        assert sessions["s-0"].traces == 4 and sessions["s-1"].traces == 3 and sessions["s-1"].failed == 1
        assert sessions["s-0"].users == (ALICE,)
        turns = store.session("s-1")
        assert [t.query for t in turns] == ["question 1", "question 3", "question 5"]
        assert turns[0].answer["value"] == "answer to question 1"


def test_cost_summary_reuses_the_report(stored) -> None:
    with TraceStore(stored["dsn"]) as store:
        report = store.cost_report(days=2, horizon=3)
    assert len(report["forecast"]) == 3 and len(report["history"]) == 2
    models = {r["name"] for r in report["top_models"]}
    assert {"gpt-4o", "gpt-4o-mini"} <= models


def test_as_user_sees_only_what_rls_lets_them(stored) -> None:
    dsn, ids = stored["dsn"], stored["ids"]
    with authenticated_role(dsn), TraceStore(dsn, as_user=BOB) as bob:
        visible = {t.trace_id for t in bob.list_traces().traces}
        # his own, and (the seed's policy) every trace with no user: here the orphan trace
        assert visible == {trace_uuid(i) for i in ids[1::2]} | {trace_uuid(stored["orphan"].trace_id)}
        assert bob.get_trace(trace_uuid(ids[0])) is None  # alice's
        assert bob.get_trace(trace_uuid(ids[1])) is not None
        with pytest.raises(TraceStoreError):
            bob.cost_report()


def test_reads_are_read_only_and_bounded(stored) -> None:
    with TraceStore(stored["dsn"], statement_timeout_ms=1234) as store, store._read() as cur:
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone()["statement_timeout"] == "1234ms"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            cur.execute("DELETE FROM spans")
