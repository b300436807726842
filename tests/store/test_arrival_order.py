"""Arrival order, duplicates and concurrency: placeholders, idempotence, exact totals, no deadlock."""

from __future__ import annotations

import random
import threading
from decimal import Decimal

import psycopg

from otel_pg_exporter import PostgresSpanExporter, span_uuid, trace_uuid
from tests.helpers.scenarios import agent_trace
from tests.helpers.support import Capture, by_name, fetch_spans, fetch_trace


def test_children_before_parents_across_batches(db_dsn, exporter, capture) -> None:
    tid = agent_trace(capture)
    spans = by_name(capture.take())
    # 1st batch: only the LLM calls (their parent and the root are not there yet)
    assert exporter.export([spans["chat 0"], spans["chat 1"]]).name == "SUCCESS"
    rows = fetch_spans(db_dsn, tid)
    agent_id = span_uuid(tid, spans["invoke_agent helper"].context.span_id)
    placeholder = rows[str(agent_id)]
    assert placeholder["status"] == "pending" and placeholder["name"] == "(pending)"
    assert sorted(placeholder["child_spans"]) == sorted(str(rows[n]["span_id"]) for n in ("chat 0", "chat 1"))
    trace = fetch_trace(db_dsn, tid)
    assert trace["status"] == "running"
    assert trace["total_cost"] == Decimal("0.003") and trace["total_tokens"]["input"] == 30
    assert trace["workflow_id"] == "test-svc"  # service.name until a better candidate arrives
    # 2nd batch: the agent (fills its placeholder, creates the root's)
    exporter.export([spans["invoke_agent helper"]])
    agent = fetch_spans(db_dsn, tid)["invoke_agent helper"]
    assert agent["status"] == "completed" and agent["span_type"] == "agent"
    assert len(agent["child_spans"]) == 2  # kept from the placeholder
    assert fetch_trace(db_dsn, tid)["status"] == "running"
    # 3rd batch: the root
    exporter.export([spans["run"]])
    trace = fetch_trace(db_dsn, tid)
    assert trace["status"] == "completed" and trace["workflow_id"] == "wf-run"
    rows = fetch_spans(db_dsn, tid)
    root = spans["run"]
    assert trace["completed_at"] == rows["run"]["completed_at"] and trace["started_at"] == rows["run"]["started_at"]
    assert trace["total_duration_ms"] == rows["run"]["duration_ms"] == round((root.end_time - root.start_time) / 1_000_000)
    assert all(r["status"] != "pending" for r in rows.values())
    assert len(rows) == 4
    assert trace["total_tokens"] == {"input": 30, "output": 3, "total": 33}


def test_workflow_id_falls_back_to_service_name_until_root_arrives(db_dsn, exporter) -> None:
    capture = Capture(service="billing-svc")
    t = capture.tracer
    with t.start_as_current_span("handle order") as root, t.start_as_current_span("child"):
        pass
    tid = root.get_span_context().trace_id
    spans = by_name(capture.take())
    exporter.export([spans["child"]])
    assert fetch_trace(db_dsn, tid)["workflow_id"] == "billing-svc"
    exporter.export([spans["handle order"]])
    assert fetch_trace(db_dsn, tid)["workflow_id"] == "handle order"
    # a re-export of the child does not bring back the weaker candidate
    exporter.export([spans["child"]])
    assert fetch_trace(db_dsn, tid)["workflow_id"] == "handle order"


def test_one_trace_split_across_two_exporters(db_dsn, capture) -> None:
    tid = agent_trace(capture, calls=3)
    spans = capture.take()
    a, b = PostgresSpanExporter(db_dsn), PostgresSpanExporter(db_dsn)
    try:
        assert a.export(spans[::2]).name == "SUCCESS"
        assert b.export(spans[1::2]).name == "SUCCESS"
    finally:
        a.shutdown()
        b.shutdown()
    trace = fetch_trace(db_dsn, tid)
    assert trace["status"] == "completed"
    assert trace["total_cost"] == Decimal("0.006")
    assert trace["total_tokens"] == {"input": 60, "output": 6, "total": 66}
    assert len(fetch_spans(db_dsn, tid)) == 5


def _dump(dsn: str, tid: int) -> tuple[list, list]:
    with psycopg.connect(dsn) as conn:
        trace = conn.execute("SELECT * FROM traces WHERE trace_id = %s", (trace_uuid(tid),)).fetchall()
        spans = conn.execute(
            "SELECT * FROM spans WHERE trace_id = %s ORDER BY span_id", (trace_uuid(tid),)
        ).fetchall()
    return trace, spans


def test_duplicate_export_leaves_identical_rows(db_dsn, exporter, capture) -> None:
    tid = agent_trace(capture)
    spans = capture.take()
    exporter.export(spans[:2])
    exporter.export(spans[2:])
    before = _dump(db_dsn, tid)
    # a retry after a lost commit acknowledgement: the same batches again, in another order
    exporter.export(spans[2:])
    exporter.export(spans)
    exporter.export(spans[:2])
    assert _dump(db_dsn, tid) == before
    assert fetch_trace(db_dsn, tid)["total_cost"] == Decimal("0.003")


def test_agent_rollup_over_two_llm_calls_stores_the_sum(db_dsn, exporter, capture) -> None:
    t = capture.tracer
    with t.start_as_current_span(
        "invoke_agent a",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.usage.input_tokens": 30,
            "gen_ai.usage.output_tokens": 3,
            "gen_ai.usage.cost": 0.5,
        },
    ) as root:
        for i in (1, 2):
            with t.start_as_current_span(
                f"chat {i}",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.usage.input_tokens": 10 * i,
                    "gen_ai.usage.output_tokens": i,
                    "gen_ai.usage.cost": 0.1 * i,
                },
            ):
                pass
    tid = root.get_span_context().trace_id
    exporter.export(capture.take())
    trace = fetch_trace(db_dsn, tid)
    assert trace["total_tokens"] == {"input": 30, "output": 3, "total": 33}
    assert trace["total_cost"] == Decimal("0.3")
    assert trace["metadata"]["model_calls"] == 2


def test_nested_llm_spans_count_only_the_leaf(db_dsn, exporter, capture) -> None:
    """Framework LLM span around a client-library LLM span (double instrumentation)."""
    t = capture.tracer
    usage = {"llm.token_count.prompt": 5, "llm.token_count.completion": 2, "llm.cost.total": 0.01}
    with (
        t.start_as_current_span(
            "ChatOpenAI", attributes={"openinference.span.kind": "LLM", **usage}
        ) as outer,
        t.start_as_current_span("ChatCompletion", attributes={"openinference.span.kind": "LLM", **usage}),
    ):
        pass
    tid = outer.get_span_context().trace_id
    spans = by_name(capture.take())
    exporter.export([spans["ChatCompletion"]])
    exporter.export([spans["ChatOpenAI"]])
    trace = fetch_trace(db_dsn, tid)
    assert trace["total_tokens"] == {"input": 5, "output": 2, "total": 7}
    assert trace["total_cost"] == Decimal("0.01")


def test_concurrent_exporters_on_overlapping_traces(db_dsn) -> None:
    capture = Capture()
    expected: dict[int, tuple[Decimal, int]] = {}
    for n in range(20):
        tid = agent_trace(capture, calls=3, name=f"c{n}")
        expected[tid] = (Decimal("0.006"), 60)
    spans = capture.take()
    workers = 4
    exporters = [PostgresSpanExporter(db_dsn, timeout_s=60) for _ in range(workers)]
    results: list[str] = []
    rng = random.Random(7)
    plans = []
    for _ in range(workers):
        mine = spans[:]  # every exporter sends every span: maximal overlap and duplication
        rng.shuffle(mine)
        plans.append([mine[i : i + 7] for i in range(0, len(mine), 7)])
    barrier = threading.Barrier(workers)

    def run(exp: PostgresSpanExporter, batches: list) -> None:
        barrier.wait()
        for batch in batches:
            results.append(exp.export(batch).name)

    threads = [threading.Thread(target=run, args=(e, p)) for e, p in zip(exporters, plans, strict=True)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    for e in exporters:
        e.shutdown()
    assert not any(th.is_alive() for th in threads)
    assert set(results) == {"SUCCESS"}
    assert all(e.stats()["retried"] == 0 and e.stats()["spooled"] == 0 for e in exporters)
    for tid, (cost, tokens) in expected.items():
        trace = fetch_trace(db_dsn, tid)
        assert trace["status"] == "completed"
        assert trace["total_cost"] == cost
        assert trace["total_tokens"]["input"] == tokens
        assert len(fetch_spans(db_dsn, tid)) == 5
