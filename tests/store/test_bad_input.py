"""Bad input: sanitized with the original kept in metadata; one bad span never costs the others."""

from __future__ import annotations

import math
import uuid
from decimal import Decimal

import psycopg
import pytest

from otel_pg_exporter import PostgresSpanExporter, install_schema
from tests.helpers.support import Capture, by_name, fetch_spans, fetch_trace, messages


def _one(capture: Capture, name: str = "span", **attrs) -> tuple[int, object]:
    with capture.tracer.start_as_current_span(name, attributes=attrs) as span:
        pass
    return span.get_span_context().trace_id, span


def test_nul_characters_are_removed(db_dsn, exporter, capture) -> None:
    tid, _ = _one(
        capture,
        "na\x00me",
        **{
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt\x00-4o",
            "gen_ai.input.messages": messages(("user", "hello\x00world")),
            "custom.attr": "a\x00b",
            "literal.backslash": "keep \\u0000 as text",
        },
    )
    assert exporter.export(capture.take()).name == "SUCCESS"
    row = fetch_spans(db_dsn, tid)["name"]
    assert row["model"] == "gpt-4o"
    assert row["inputs"]["messages"][0]["parts"][0]["content"] == "helloworld"
    assert row["metadata"]["attributes"]["custom.attr"] == "ab"
    assert row["metadata"]["attributes"]["literal.backslash"] == "keep \\u0000 as text"
    assert row["metadata"]["sanitized"]["name"]["removed"] == "NUL characters"
    assert fetch_trace(db_dsn, tid)["query"] == "helloworld"


@pytest.mark.parametrize("huge", [False, True], ids=["fast-path", "slow-path-int-beyond-64-bits"])
def test_nan_and_infinity_inside_json_become_null(db_dsn, exporter, capture, huge) -> None:
    """JSON text with NaN / Infinity (Python's json accepts them) is stored with null there, on
    the fast path and on the slow one that integers beyond 64 bits take."""
    big = ', "big": 1180591620717411303424' if huge else ""  # 2**70
    raw = (
        '[{"role": "user", "parts": [{"type": "text", "content": "hi"}], '
        f'"score": NaN, "limits": [Infinity, -Infinity, 1.5]{big}}}]'
    )
    tid, _ = _one(capture, "chat", **{"gen_ai.operation.name": "chat", "gen_ai.input.messages": raw})
    assert exporter.export(capture.take()).name == "SUCCESS"
    message = fetch_spans(db_dsn, tid)["chat"]["inputs"]["messages"][0]
    assert message["score"] is None and message["limits"] == [None, None, 1.5]
    if huge:
        assert message["big"] == 2**70


def test_lone_surrogates_are_replaced(db_dsn, exporter, capture) -> None:
    tid, _ = _one(capture, "surrogate \ud800 name", **{"note": "bad \udc00 text"})
    assert exporter.export(capture.take()).name == "SUCCESS"
    row = fetch_spans(db_dsn, tid)["surrogate ? name"]
    assert row["metadata"]["attributes"]["note"] == "bad ? text"


def test_overlong_varchar_values_are_truncated_with_original_kept(db_dsn, exporter, capture) -> None:
    long_name = "n" * 300
    tid, _ = _one(
        capture,
        long_name,
        **{
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "m" * 400,
            "gen_ai.provider.name": "p" * 150,
            "error.type": "E" * 120,
            "gen_ai.workflow.name": "w" * 300,
        },
    )
    exporter.export(capture.take())
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute(
            "SELECT name, model, provider, error_type, metadata FROM spans WHERE trace_id = %s",
            (uuid.UUID(int=tid),),
        ).fetchone()
    name, model, provider, error_type, metadata = row
    assert len(name) == 255 and name.endswith("…[truncated]")
    assert len(model) == 255 and len(provider) == 100 and len(error_type) == 100
    assert metadata["sanitized"]["name"]["original"] == long_name
    assert metadata["sanitized"]["model"]["truncated_from_chars"] == 400
    assert len(fetch_trace(db_dsn, tid)["workflow_id"]) == 255


@pytest.mark.parametrize(
    ("reported", "stored", "reason"),
    [
        (1e9, Decimal("9999.999999"), "beyond DECIMAL(10,6)"),
        (math.nan, Decimal(0), "not finite"),
        (math.inf, Decimal(0), "not finite"),
        (-1.5, Decimal(0), "negative"),
        ("12,5 USD", Decimal(0), None),
        (0.0000004, Decimal("0.000000"), None),
    ],
)
def test_costs_out_of_range(db_dsn, exporter, capture, reported, stored, reason) -> None:
    tid, _ = _one(
        capture,
        "chat",
        **{"gen_ai.operation.name": "chat", "gen_ai.usage.cost": reported, "gen_ai.usage.input_tokens": 1},
    )
    assert exporter.export(capture.take()).name == "SUCCESS"
    row = fetch_spans(db_dsn, tid)["chat"]
    assert row["cost"] == stored
    if reason:
        assert row["metadata"]["sanitized"]["cost"]["reason"] == reason
    if reported == 0.0000004:
        assert row["metadata"]["cost"]["exact"] == "4E-7"  # the unrounded value is kept
    assert fetch_trace(db_dsn, tid)["total_cost"] == stored


def test_trace_total_cost_is_clamped_not_failed(db_dsn, exporter, capture) -> None:
    t = capture.tracer
    with t.start_as_current_span("root") as root:
        for i in range(3):
            with t.start_as_current_span(
                f"chat {i}", attributes={"gen_ai.operation.name": "chat", "gen_ai.usage.cost": 9000.0}
            ):
                pass
    exporter.export(capture.take())
    assert fetch_trace(db_dsn, root.get_span_context().trace_id)["total_cost"] == Decimal("9999.999999")


def test_python_repr_and_invalid_json_attributes(db_dsn, exporter, capture) -> None:
    tid, _ = _one(
        capture,
        "chat",
        **{
            "gen_ai.operation.name": "chat",
            "gen_ai.input.messages": "[{'role': 'user', 'content': 'repr works', 'extra': None}]",
            "gen_ai.output.messages": "{not json at all",
            "llm.invocation_parameters": "{broken",
        },
    )
    exporter.export(capture.take())
    row = fetch_spans(db_dsn, tid)["chat"]
    assert row["inputs"]["messages"] == [{"role": "user", "content": "repr works", "extra": None}]
    assert row["outputs"]["value"] == "{not json at all"  # kept as a string, still valid JSONB
    assert row["metadata"]["attributes"]["llm.invocation_parameters"] == "{broken"


def test_multi_megabyte_payload_is_capped(db_dsn, capture) -> None:
    exporter = PostgresSpanExporter(db_dsn, max_payload_chars=100_000)
    try:
        big = "x" * 5_000_000
        tid, _ = _one(
            capture,
            "chat",
            **{
                "gen_ai.operation.name": "chat",
                "gen_ai.input.messages": messages(("user", big)),
                "huge.attr": big,
                "gen_ai.usage.input_tokens": 7,
            },
        )
        assert exporter.export(capture.take()).name == "SUCCESS"
    finally:
        exporter.shutdown()
    row = fetch_spans(db_dsn, tid)["chat"]
    assert row["inputs"]["_truncated"] is True
    assert row["inputs"]["original_chars"] > 5_000_000
    assert len(row["inputs"]["preview"]) < 100_000
    assert row["metadata"]["sanitized"]["inputs"]["truncated_from_chars"] > 5_000_000
    assert row["metadata"]["attributes"]["_truncated"] is True  # bulky metadata part shrunk…
    assert row["metadata"]["otel"]["trace_id"] == f"{tid:032x}"  # …ids kept
    assert row["tokens"] == {"input": 7, "total": 7}
    with psycopg.connect(db_dsn) as conn:
        size = conn.execute(
            "SELECT pg_column_size(inputs) + pg_column_size(metadata) FROM spans WHERE span_id = %s",
            (row["span_id"],),
        ).fetchone()[0]
    assert size < 250_000


def test_negative_and_huge_durations(db_dsn, exporter, capture) -> None:
    t = capture.tracer
    start = 1_700_000_000 * 10**9
    span = t.start_span("backwards", start_time=start)
    span.end(end_time=start - 5 * 10**9)
    huge = t.start_span("forever", start_time=start)
    huge.end(end_time=start + 30 * 24 * 3600 * 10**9)  # 30 days > INTEGER milliseconds
    exporter.export(capture.take())
    back = fetch_spans(db_dsn, span.get_span_context().trace_id)["backwards"]
    assert back["duration_ms"] == 0
    assert back["metadata"]["sanitized"]["duration_ms"]["reason"] == "out of range"
    assert back["metadata"]["otel"]["duration_ns"] == -5 * 10**9
    long = fetch_spans(db_dsn, huge.get_span_context().trace_id)["forever"]
    assert long["duration_ms"] == 2**31 - 1
    assert long["metadata"]["sanitized"]["duration_ms"]["original"] == str(30 * 24 * 3600 * 1000)


def test_users_unknown_non_uuid_and_known(db_dsn, exporter, capture) -> None:
    known = uuid.uuid4()
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO profiles (id) VALUES (%s)", (known,))
    cases = {"not-a-uuid": None, str(uuid.uuid4()): None, str(known).upper(): known}
    for raw, want in cases.items():
        tid, _ = _one(capture, "root", **{"user.id": raw})
        assert exporter.export(capture.take()).name == "SUCCESS"
        trace = fetch_trace(db_dsn, tid)
        assert trace["user_id"] == want
        assert trace["metadata"]["user"] == raw


def test_user_attribute_precedence_across_spans(db_dsn, exporter, capture) -> None:
    t = capture.tracer
    with (
        t.start_as_current_span("root", attributes={"gen_ai.user": "weak"}) as root,
        t.start_as_current_span("child", attributes={"enduser.id": "strong"}),
    ):
        pass
    spans = by_name(capture.take())
    exporter.export([spans["root"]])
    exporter.export([spans["child"]])
    trace = fetch_trace(db_dsn, root.get_span_context().trace_id)
    assert trace["metadata"]["user"] == "strong"
    assert trace["metadata"]["sources"]["user"]["attribute"] == "enduser.id"


def test_explicit_execution_id_and_clash(db_dsn, exporter, capture) -> None:
    ids = []
    for _ in range(2):
        tid, _ = _one(capture, "run", **{"execution.id": "job-42"})
        ids.append(tid)
        assert exporter.export(capture.take()).name == "SUCCESS"
    first, second = (fetch_trace(db_dsn, t) for t in ids)
    assert first["execution_id"] == "job-42"
    assert second["execution_id"] == f"{ids[1]:032x}"  # the clash falls back to the trace id
    assert second["metadata"]["requested_execution_id"] == "job-42"
    # an explicit id that looks like another trace's hex id is never used
    tid, _ = _one(capture, "run", **{"execution.id": f"{ids[0]:032x}"})
    exporter.export(capture.take())
    assert fetch_trace(db_dsn, tid)["execution_id"] == f"{tid:032x}"


def test_database_rejection_isolates_the_offending_span(make_database, capture) -> None:
    dsn = make_database()
    install_schema(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # constraints the sanitizer cannot know about: one on payload, one on a kept column
        conn.execute(
            "ALTER TABLE spans ADD CONSTRAINT no_poison_input CHECK (NOT inputs::text LIKE '%poison%')"
        )
        conn.execute("ALTER TABLE spans ADD CONSTRAINT no_poison_name CHECK (name <> 'deadly')")
    t = capture.tracer
    with t.start_as_current_span("root") as root:
        for i in range(10):
            with t.start_as_current_span(f"s{i}", attributes={"input.value": "poison" if i == 3 else "ok"}):
                pass
        with t.start_as_current_span("deadly"):
            pass
    exporter = PostgresSpanExporter(dsn)
    try:
        assert exporter.export(capture.take()).name == "SUCCESS"
        stats = exporter.stats()
    finally:
        exporter.shutdown()
    rows = fetch_spans(dsn, root.get_span_context().trace_id)
    assert {f"s{i}" for i in range(10)} | {"root"} <= set(rows)
    assert "deadly" not in rows
    assert rows["s3"]["inputs"] == {}  # stored without its payload, with the reason
    assert "no_poison_input" in rows["s3"]["metadata"]["write_error"]
    assert rows["s4"]["inputs"]["value"] == "ok"
    assert stats["degraded"] == 1 and stats["dropped"] == 1 and stats["exported"] == 11
    assert fetch_trace(dsn, root.get_span_context().trace_id)["status"] == "completed"
