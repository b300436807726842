"""Per-user ``profiles.settings.observability``: enabled, capture_content, caching with a TTL."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import psycopg
import pytest

from otel_pg_exporter import PostgresSpanExporter
from otel_pg_exporter.config.user_settings import content_allowed, parse_observability
from tests.helpers.support import Capture, chat_attributes, fetch_spans, fetch_trace, messages

SECRET_KEY = "lsv2_pt_" + "9f8e7d6c5b4a" * 3


def make_user(dsn: str, observability: dict[str, Any] | None) -> uuid.UUID:
    uid = uuid.uuid4()
    settings = {"theme": "dark"} if observability is None else {"observability": observability}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO profiles (id, settings) VALUES (%s, %s)", (uid, json.dumps(settings)))
    return uid


def set_observability(dsn: str, uid: uuid.UUID, observability: dict[str, Any]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE profiles SET settings = jsonb_build_object('observability', %s::jsonb) WHERE id = %s",
            (json.dumps(observability), uid),
        )


def user_trace(capture: Capture, uid: uuid.UUID | None, text: str = "my secret question") -> Any:
    """A root (carrying the user) with one LLM child that has content."""
    attrs = {"user.id": str(uid)} if uid else {}
    with capture.tracer.start_as_current_span("request", attributes=attrs) as root:
        with capture.tracer.start_as_current_span(
            "chat",
            attributes=chat_attributes(
                100,
                10,
                **{
                    "gen_ai.input.messages": messages(("user", text)),
                    "gen_ai.output.messages": messages(("assistant", "the answer")),
                },
            ),
        ):
            pass
    return root


def llm(dsn: str, root: Any) -> dict[str, Any]:
    return next(
        r for r in fetch_spans(dsn, root.get_span_context().trace_id).values() if r["span_type"] == "llm"
    )


# -- the object (pure) ---------------------------------------------------------------------------------


def test_parse_observability_is_lenient_and_never_echoes_values() -> None:
    parsed = parse_observability(
        {
            "enabled": "nope",
            "capture_content": False,
            "retention_days": 10_000_000,
            "langsmith": {"api_key": SECRET_KEY, "project": "p1"},
            "langfuse": {"public_key": "pk-lf-1"},  # no secret: not a target
        }
    )
    assert parsed.enabled is True and parsed.capture_content is False and parsed.retention_days == 36_500
    (target,) = parsed.targets
    assert target.endpoint == "https://api.smith.langchain.com/otel/v1/traces"
    assert dict(target.headers) == {"x-api-key": SECRET_KEY, "Langsmith-Project": "p1"}
    assert SECRET_KEY not in repr(parsed) and SECRET_KEY not in " ".join(parsed.problems)
    assert parsed.problems[0] == "enabled is not a boolean"
    assert parsed.problems[1].startswith("langfuse.public_key/secret_key missing")
    assert parse_observability(None) == parse_observability({})
    assert content_allowed(True, parse_observability({"enabled": False, "capture_content": True})) is False
    assert content_allowed(False, parse_observability({"capture_content": True})) is True


# -- each setting is honoured -------------------------------------------------------------------------


def test_enabled_false_stores_the_trace_without_content(db_dsn: str, exporter: PostgresSpanExporter) -> None:
    capture = Capture()
    uid = make_user(db_dsn, {"enabled": False, "langsmith": {"api_key": SECRET_KEY}})
    root = user_trace(capture, uid)
    assert exporter.export(capture.take()).name == "SUCCESS"
    row = llm(db_dsn, root)
    assert "messages" not in row["inputs"] and row["inputs"]["_omitted"]
    assert row["tokens"] == {"input": 100, "output": 10, "total": 110} and row["cost"] > 0  # billing intact
    trace = fetch_trace(db_dsn, root.get_span_context().trace_id)
    assert trace["user_id"] == uid and trace["query"] is None and trace["total_cost"] > 0
    everything = str(fetch_spans(db_dsn, root.get_span_context().trace_id)) + str(trace)
    assert "my secret question" not in everything
    assert SECRET_KEY not in everything  # nothing of profiles.settings is ever written into a span


@pytest.mark.parametrize(
    ("global_capture", "override", "kept"),
    [(True, False, False), (False, True, True), (True, None, True), (False, None, False)],
)
def test_capture_content_override(
    db_dsn: str, global_capture: bool, override: bool | None, kept: bool
) -> None:
    capture = Capture()
    uid = make_user(db_dsn, {} if override is None else {"capture_content": override})
    exp = PostgresSpanExporter(db_dsn, spool_dir="off", capture_content=global_capture)
    try:
        root = user_trace(capture, uid)
        exp.export(capture.take())
    finally:
        exp.shutdown()
    row = llm(db_dsn, root)
    assert ("messages" in row["inputs"]) is kept
    assert (fetch_trace(db_dsn, root.get_span_context().trace_id)["query"] is not None) is kept


def test_content_stored_before_the_user_was_known_is_removed(
    db_dsn: str, exporter: PostgresSpanExporter
) -> None:
    """The child (with content, no user attribute) is exported before its root names the user."""
    capture = Capture()
    uid = make_user(db_dsn, {"capture_content": False})
    root = user_trace(capture, uid)
    spans = capture.take()
    child = [s for s in spans if s.name == "chat"]
    exporter.export(child)
    assert "messages" in llm(db_dsn, root)["inputs"]  # unknown user: the global setting applies
    exporter.export([s for s in spans if s.name == "request"])
    row = llm(db_dsn, root)
    assert "messages" not in row["inputs"] and "messages" not in row["outputs"]
    assert row["metadata"]["content"] == "omitted" and row["tokens"]["input"] == 100
    assert "gen_ai.input.messages" not in row["metadata"].get("attributes", {})
    assert fetch_trace(db_dsn, root.get_span_context().trace_id)["query"] is None


# -- caching --------------------------------------------------------------------------------------------


class _Clock:
    """``time`` for the settings cache, with a hand that moves forward on request: the test decides
    when the TTL has passed, not the machine's speed."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


def test_settings_are_cached_per_user_not_queried_per_span(db_dsn: str, monkeypatch) -> None:
    import otel_pg_exporter.config.user_settings as user_settings_module

    clock = _Clock()
    monkeypatch.setattr(user_settings_module, "time", clock)
    capture = Capture()
    uid = make_user(db_dsn, {"capture_content": True})
    exp = PostgresSpanExporter(db_dsn, spool_dir="off", user_settings_ttl_s=60.0)
    try:
        roots = []
        for _ in range(10):  # 10 batches, 3 spans each (root, chat ... plus the batch's own)
            roots.append(user_trace(capture, uid))
            exp.export(capture.take())
        stats = exp.stats()
        assert stats["exported"] == 20
        # one lookup in encode() when the user first appeared; the writer then found it cached
        assert stats["user_settings_queries"] == 1
        set_observability(db_dsn, uid, {"capture_content": False})
        within_ttl = user_trace(capture, uid)
        exp.export(capture.take())
        assert "messages" in llm(db_dsn, within_ttl)["inputs"]  # the cached value still applies
        clock.offset += 61.0  # the TTL has passed
        after_ttl = user_trace(capture, uid)
        exp.export(capture.take())
        assert "messages" not in llm(db_dsn, after_ttl)["inputs"]  # the change is visible after the TTL
        assert exp.stats()["user_settings_queries"] == 2
    finally:
        exp.shutdown()


def test_users_without_settings_and_unknown_users_cost_one_lookup(db_dsn: str) -> None:
    capture = Capture()
    plain = make_user(db_dsn, None)
    stranger = uuid.uuid4()  # not in profiles
    exp = PostgresSpanExporter(db_dsn, spool_dir="off")
    try:
        for uid in (plain, stranger, plain, stranger):
            root = user_trace(capture, uid)
            exp.export(capture.take())
            assert "messages" in llm(db_dsn, root)["inputs"]
        assert exp.stats()["user_settings_queries"] == 2  # each user looked up once, absent or not
    finally:
        exp.shutdown()


def test_user_settings_can_be_turned_off(db_dsn: str) -> None:
    capture = Capture()
    uid = make_user(db_dsn, {"enabled": False})
    exp = PostgresSpanExporter(db_dsn, spool_dir="off", user_settings=False)
    try:
        root = user_trace(capture, uid)
        exp.export(capture.take())
        assert "user_settings_queries" not in exp.stats()
    finally:
        exp.shutdown()
    assert "messages" in llm(db_dsn, root)["inputs"]


@pytest.mark.parametrize("logs_first", [True, False], ids=["logs-first", "spans-first"])
def test_logged_content_follows_the_users_settings(db_dsn: str, logs_first: bool) -> None:
    from otel_pg_exporter import PostgresLogExporter

    capture = Capture()
    uid = make_user(db_dsn, {"capture_content": False})
    exp = PostgresSpanExporter(db_dsn, spool_dir="off")
    logs = PostgresLogExporter(span_exporter=exp)
    try:
        with capture.tracer.start_as_current_span("request", attributes={"user.id": str(uid)}) as root:
            with capture.tracer.start_as_current_span("chat", attributes={"gen_ai.operation.name": "chat"}):
                capture.logger.emit(
                    event_name="gen_ai.user.message", body={"content": "logged secret question"}
                )
        spans, records = capture.take(), capture.take_logs()
        for exporter, batch in [(logs, records), (exp, spans)][:: 1 if logs_first else -1]:
            assert exporter.export(batch).name == "SUCCESS"
    finally:
        logs.shutdown()
        exp.shutdown()
    rows = fetch_spans(db_dsn, root.get_span_context().trace_id)
    assert "logged secret question" not in str(rows)
    assert rows["chat"]["inputs"] == {"_omitted": "content capture is off"}
    assert fetch_trace(db_dsn, root.get_span_context().trace_id)["query"] is None


def test_settings_apply_to_batches_spooled_while_the_database_was_down(db_dsn: str, tmp_path: Any) -> None:
    from tests.helpers.faults import TcpProxy

    capture = Capture()
    uid = make_user(db_dsn, {"enabled": False})
    proxy = TcpProxy(db_dsn)
    exp = PostgresSpanExporter(proxy.dsn, timeout_s=1, spool_dir=str(tmp_path), shutdown_timeout_s=30)
    try:
        proxy.cut()
        root = user_trace(capture, uid)
        assert exp.export(capture.take()).name == "SUCCESS"  # spooled
        again = user_trace(capture, uid)
        assert exp.export(capture.take()).name == "SUCCESS"
        stats = exp.stats()
        assert stats["spooled"] == 4 and stats["user_settings_queries"] == 0  # no lookup while down
        proxy.restore()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and exp.stats()["replayed"] < 4:
            time.sleep(0.2)
    finally:
        exp.shutdown()
        proxy.close()
    for r in (root, again):  # replayed through the writer, which applied the user's settings
        row = llm(db_dsn, r)
        assert row["status"] == "completed" and "messages" not in row["inputs"]
