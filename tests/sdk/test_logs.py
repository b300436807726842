"""Content, evaluations and exceptions that arrive as OpenTelemetry log records (PostgresLogExporter).

Log records are made by a real SDK ``LoggerProvider`` inside real spans, or by the real
``opentelemetry-instrumentation-openai-v2`` in its default mode, and merged into real rows.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from otel_pg_exporter import PostgresLogExporter, PostgresSpanExporter
from otel_pg_exporter.commands.fakeai import FakeOpenAI
from otel_pg_exporter.pipeline.log_fragments import map_log_records
from tests.helpers.faults import TcpProxy
from tests.helpers.support import (
    Capture,
    app_env,
    chat_attributes,
    fetch_spans,
    fetch_trace,
    messages,
    span_row,
)


def emit(capture: Capture, event: str, body: Any = None, ts: int | None = None, **attributes: Any) -> None:
    """One log event in the current span's context, as instrumentations emit them."""
    capture.logger.emit(event_name=event, body=body, attributes=attributes or None, timestamp=ts)


def chat_with_logged_content(capture: Capture, user_text: str = "Weather in Paris?") -> Any:
    with capture.tracer.start_as_current_span("agent") as root:
        with capture.tracer.start_as_current_span(
            "chat gpt-4o-mini",
            attributes=chat_attributes(12, 5),
        ):
            emit(capture, "gen_ai.system.message", {"content": "You are a weather bot."})
            emit(capture, "gen_ai.user.message", {"content": user_text})
            emit(
                capture,
                "gen_ai.choice",
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Rainy."}},
            )
    return root


@pytest.fixture
def log_exporter(exporter: PostgresSpanExporter) -> Any:
    logs = PostgresLogExporter(span_exporter=exporter)
    yield logs
    logs.shutdown()


def llm_row(dsn: str, trace_id: int) -> dict[str, Any]:
    return next(r for r in fetch_spans(dsn, trace_id).values() if r["span_type"] == "llm")


# -- mapping (pure) ----------------------------------------------------------------------------------


def test_mapping_groups_by_span_and_ignores_what_is_not_ours(capture: Capture) -> None:
    import logging

    from opentelemetry.sdk._logs import LoggingHandler

    app_log = logging.getLogger("tests.app")  # the application's own Python logging, bridged to OTel
    handler = LoggingHandler(logger_provider=capture.logger_provider)
    app_log.addHandler(handler)
    app_log.propagate = False
    try:
        emit(capture, "gen_ai.user.message", {"content": "no span around me"})
        with capture.tracer.start_as_current_span("chat"):
            emit(capture, "gen_ai.user.message", {"content": "hi"})
            emit(capture, "app.cache.miss", {"key": "k"})  # an application event, not GenAI content
            app_log.warning("cache is cold for %s", "user-1")  # a plain log line inside the span
            emit(capture, "gen_ai.choice", {"index": 0, "message": {"role": "assistant", "content": "hello"}})
    finally:
        app_log.removeHandler(handler)
    records = capture.take_logs()
    assert any(r.log_record.body == "cache is cold for user-1" for r in records)  # it did go through
    batch = map_log_records(records)
    assert batch.ignored == {"no_span_context": 1, "not_genai": 2}
    (frag,) = batch.fragments
    assert [i[2] for i in frag.inputs] == [{"role": "user", "content": "hi"}]  # role from the event name
    assert frag.outputs[0][2]["message"]["content"] == "hello"
    assert frag.service == "test-svc"
    assert "cache is cold" not in repr(frag)  # the application's log line is nobody's message


def test_records_of_unsampled_spans_are_ignored() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    capture = Capture()
    tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("t")
    with tracer.start_as_current_span("never exported"):
        emit(capture, "gen_ai.user.message", {"content": "hi"})
    batch = map_log_records(capture.take_logs())
    assert batch.fragments == [] and batch.ignored == {"span_not_sampled": 1}


# -- arrival order -----------------------------------------------------------------------------------


@pytest.mark.parametrize("logs_first", [True, False], ids=["logs-before-span", "span-before-logs"])
def test_logged_messages_merge_into_the_span_row_in_order(
    db_dsn: str,
    exporter: PostgresSpanExporter,
    log_exporter: PostgresLogExporter,
    capture: Capture,
    logs_first: bool,
) -> None:
    root = chat_with_logged_content(capture)
    spans, records = capture.take(), capture.take_logs()
    tid = root.get_span_context().trace_id
    if logs_first:
        assert log_exporter.export(records).name == "SUCCESS"
        pending = fetch_spans(db_dsn, tid)
        (placeholder,) = pending.values()
        assert placeholder["status"] == "pending" and placeholder["inputs"]["messages"][1]["content"]
        assert fetch_trace(db_dsn, tid)["status"] == "running"
        assert exporter.export(spans).name == "SUCCESS"
    else:
        assert exporter.export(spans).name == "SUCCESS"
        assert log_exporter.export(records).name == "SUCCESS"
    llm = llm_row(db_dsn, tid)
    assert llm["inputs"]["messages"] == [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    assert llm["inputs"]["source"] == "logs"
    assert llm["outputs"]["messages"][0]["message"] == {"role": "assistant", "content": "Rainy."}
    assert llm["tokens"]["input"] == 12 and llm["model"] == "gpt-4o-mini" and llm["status"] == "completed"
    assert "placeholder" not in llm["metadata"]
    trace = fetch_trace(db_dsn, tid)
    assert trace["status"] == "completed" and trace["query"] == "Weather in Paris?"
    assert trace["total_tokens"]["input"] == 12
    assert len(fetch_spans(db_dsn, tid)) == 2  # no leftover placeholder


def test_re_exported_and_out_of_order_batches_merge_once_in_timestamp_order(
    db_dsn: str, exporter: PostgresSpanExporter, log_exporter: PostgresLogExporter, capture: Capture
) -> None:
    base = time.time_ns()
    with capture.tracer.start_as_current_span("chat", attributes={"gen_ai.operation.name": "chat"}) as span:
        for n in range(4):
            emit(capture, "gen_ai.user.message", {"content": f"m{n}"}, ts=base + n * 1000)
    records = capture.take_logs()
    exporter.export(capture.take())
    assert log_exporter.export(records[2:]).name == "SUCCESS"  # the later half first
    assert log_exporter.export(records[:2]).name == "SUCCESS"
    assert log_exporter.export(records).name == "SUCCESS"  # a replay of everything
    row = span_row(db_dsn, span)
    assert [m["content"] for m in row["inputs"]["messages"]] == ["m0", "m1", "m2", "m3"]
    assert len(row["metadata"]["logs"]["inputs"]) == 4


def test_span_content_is_never_overwritten_by_logs(
    db_dsn: str, exporter: PostgresSpanExporter, log_exporter: PostgresLogExporter, capture: Capture
) -> None:
    with capture.tracer.start_as_current_span(
        "chat",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.input.messages": messages(("user", "from the span")),
        },
    ) as span:
        emit(capture, "gen_ai.user.message", {"content": "from a log (SPAN_AND_EVENT duplicate)"})
        emit(capture, "gen_ai.choice", {"index": 0, "message": {"role": "assistant", "content": "ok"}})
    spans, records = capture.take(), capture.take_logs()
    # logs first: the span's own messages replace the logged ones when it arrives
    log_exporter.export(records)
    exporter.export(spans)
    row = span_row(db_dsn, span)
    assert row["inputs"]["messages"][0]["parts"][0]["content"] == "from the span"
    assert row["inputs"]["source"] == "gen_ai.input.messages"
    assert row["outputs"]["messages"][0]["message"]["content"] == "ok"  # the span had no outputs
    # and logs after the span do not replace them either
    log_exporter.export(records)
    again = span_row(db_dsn, span)
    assert again["inputs"] == row["inputs"] and again["outputs"] == row["outputs"]
    assert again["metadata"]["logs"]["superseded"] is True


def test_evaluations_and_logged_exceptions(
    db_dsn: str, exporter: PostgresSpanExporter, log_exporter: PostgresLogExporter, capture: Capture
) -> None:
    from opentelemetry.trace import Status, StatusCode

    with capture.tracer.start_as_current_span("agent") as root:
        with capture.tracer.start_as_current_span(
            "chat", attributes={"gen_ai.operation.name": "chat", "error.type": "TimeoutError"}
        ) as failed:
            failed.set_status(Status(StatusCode.ERROR))
            # OTEL_SEMCONV_EXCEPTION_SIGNAL_OPT_IN=logs: the stack trace is only in a log record
            emit(
                capture,
                "gen_ai.client.operation.exception",
                **{
                    "exception.type": "TimeoutError",
                    "exception.message": "read timed out",
                    "exception.stacktrace": "Traceback (most recent call last):\n  ...\nTimeoutError",
                },
            )
        with capture.tracer.start_as_current_span(
            "chat ok", attributes={"gen_ai.operation.name": "chat"}
        ) as ok:
            emit(
                capture,
                "gen_ai.evaluation.result",
                **{
                    "gen_ai.evaluation.name": "relevance",
                    "gen_ai.evaluation.score.value": 0.75,
                    "gen_ai.evaluation.score.label": "relevant",
                },
            )
            emit(capture, "exception", **{"exception.type": "KeyError", "exception.stacktrace": "handled"})
    records, spans = capture.take_logs(), capture.take()
    exporter.export(spans)
    log_exporter.export(records)
    bad = span_row(db_dsn, failed)
    assert bad["status"] == "failed" and bad["error_stack"].endswith("TimeoutError")
    assert bad["error"] == "read timed out"
    good = span_row(db_dsn, ok)
    assert good["evaluation"]["results"] == [
        {"name": "relevance", "score": 0.75, "label": "relevant", "source": "logs"}
    ]
    # a handled exception on a completed span is kept in metadata, not as the span's error
    assert good["error_stack"] is None and good["status"] == "completed"
    assert good["metadata"]["logs"]["exceptions"][0]["type"] == "KeyError"
    assert fetch_trace(db_dsn, root.get_span_context().trace_id)["status"] == "completed"


def test_logged_exception_before_the_failed_span_arrives(
    db_dsn: str, exporter: PostgresSpanExporter, log_exporter: PostgresLogExporter, capture: Capture
) -> None:
    from opentelemetry.trace import Status, StatusCode

    with capture.tracer.start_as_current_span("chat", attributes={"gen_ai.operation.name": "chat"}) as span:
        span.set_status(Status(StatusCode.ERROR, "boom"))
        emit(capture, "exception", **{"exception.type": "RuntimeError", "exception.stacktrace": "trace-1"})
    log_exporter.export(capture.take_logs())
    exporter.export(capture.take())
    row = span_row(db_dsn, span)
    assert row["status"] == "failed" and row["error"] == "boom" and row["error_stack"] == "trace-1"


# -- privacy -----------------------------------------------------------------------------------------


def test_logged_content_is_scrubbed_and_the_capture_switch_applies(db_dsn: str, capture: Capture) -> None:
    secret = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0" * 2
    open_exp = PostgresSpanExporter(db_dsn, spool_dir="off")
    closed_exp = PostgresSpanExporter(db_dsn, spool_dir="off", capture_content=False)
    try:
        for exp in (open_exp, closed_exp):
            root = chat_with_logged_content(capture, user_text=f"my key is {secret}")
            logs = PostgresLogExporter(span_exporter=exp)
            logs.export(capture.take_logs())
            exp.export(capture.take())
            logs.shutdown()
            llm = llm_row(db_dsn, root.get_span_context().trace_id)
            trace = fetch_trace(db_dsn, root.get_span_context().trace_id)
            assert secret not in str(llm) and secret not in str(trace)
            if exp is open_exp:
                assert "[REDACTED" in llm["inputs"]["messages"][1]["content"]
            else:
                assert "messages" not in llm["inputs"] and llm["inputs"]["_omitted"]
                assert "messages" not in llm["outputs"] and trace["query"] is None
                assert llm["tokens"]["input"] == 12  # tokens, model, errors stay
    finally:
        open_exp.shutdown()
        closed_exp.shutdown()


def test_redact_callback_sees_logged_content(db_dsn: str, capture: Capture) -> None:
    def redact(row: Any) -> Any:
        for side in (row.inputs, row.outputs):
            for m in side.get("messages", []):
                if isinstance(m.get("content"), str):
                    m["content"] = m["content"].replace("Paris", "<CITY>")
        return row

    exp = PostgresSpanExporter(db_dsn, spool_dir="off", redact=redact)
    logs = PostgresLogExporter(span_exporter=exp)
    try:
        root = chat_with_logged_content(capture)
        logs.export(capture.take_logs())
        exp.export(capture.take())
    finally:
        logs.shutdown()
        exp.shutdown()
    llm = llm_row(db_dsn, root.get_span_context().trace_id)
    assert llm["inputs"]["messages"][1]["content"] == "Weather in <CITY>?"


# -- real instrumentation, entry point, configure(), outage --------------------------------------------


def _openai_chat(capture: Capture) -> Any:
    """One chat call through the real openai client and the real openai-v2 instrumentation."""
    import openai
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=capture.provider, logger_provider=capture.logger_provider)
    try:
        with FakeOpenAI() as srv:
            client = openai.OpenAI(base_url=srv.base_url, api_key="sk-test-not-a-real-key", max_retries=0)
            with capture.tracer.start_as_current_span("weather agent") as root:
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[
                        {"role": "system", "content": "You are a weather bot."},
                        {"role": "user", "content": "Weather in Paris?"},
                    ],
                )
    finally:
        instrumentor.uninstrument()
    return root


@pytest.mark.parametrize("logs_first", [True, False], ids=["logs-first", "spans-first"])
def test_real_openai_v2_default_mode_content_in_log_events(
    db_dsn: str,
    exporter: PostgresSpanExporter,
    log_exporter: PostgresLogExporter,
    monkeypatch: pytest.MonkeyPatch,
    logs_first: bool,
) -> None:
    """openai-v2's default (legacy) mode: one ``gen_ai.*.message`` log record per prompt message
    and a ``gen_ai.choice`` per completion. util-genai >= 1.0 hard-wires the latest mode
    (``is_experimental_mode()`` always True), so the package's own switch is set back to default
    here; its legacy code path is what older util-genai releases run by default."""
    import opentelemetry.instrumentation.openai_v2 as openai_v2

    monkeypatch.setattr(openai_v2, "is_experimental_mode", lambda: False)
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    capture = Capture(service="openai-app")
    root = _openai_chat(capture)
    spans, records = capture.take(), capture.take_logs()
    assert {r.log_record.event_name for r in records} == {
        "gen_ai.system.message",
        "gen_ai.user.message",
        "gen_ai.choice",
    }
    assert all("gen_ai.input.messages" not in (s.attributes or {}) for s in spans)  # content only in logs
    first, second = (log_exporter, records), (exporter, spans)
    for exp, batch in (first, second) if logs_first else (second, first):
        assert exp.export(batch).name == "SUCCESS"
    tid = root.get_span_context().trace_id
    llm = llm_row(db_dsn, tid)
    assert llm["inputs"]["messages"] == [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    choice = llm["outputs"]["messages"][0]
    assert choice["finish_reason"] == "stop" and "umbrella" in choice["message"]["content"]
    assert llm["tokens"]["input"] == 120 and llm["provider"] == "openai" and llm["status"] == "completed"
    assert fetch_trace(db_dsn, tid)["query"] == "Weather in Paris?"
    assert "sk-test" not in str(llm)


def test_real_openai_v2_latest_mode_event_only(
    db_dsn: str,
    exporter: PostgresSpanExporter,
    log_exporter: PostgresLogExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The current mode with ``EVENT_ONLY``: the whole exchange in one
    ``gen_ai.client.inference.operation.details`` log record, nothing on the span."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "EVENT_ONLY")
    capture = Capture(service="openai-app")
    root = _openai_chat(capture)
    spans, records = capture.take(), capture.take_logs()
    assert [r.log_record.event_name for r in records] == ["gen_ai.client.inference.operation.details"]
    exporter.export(spans)
    log_exporter.export(records)
    tid = root.get_span_context().trace_id
    llm = llm_row(db_dsn, tid)
    assert [m["role"] for m in llm["inputs"]["messages"]] == ["system", "user"] or llm["inputs"]["system"]
    assert llm["inputs"]["messages"][-1]["parts"][0]["content"] == "Weather in Paris?"
    assert "umbrella" in llm["outputs"]["messages"][0]["parts"][0]["content"]
    assert fetch_trace(db_dsn, tid)["query"] == "Weather in Paris?"


def _app(tmp_path: Path, body: str) -> Path:
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(body))
    return app


def _trace_by_workflow(db_dsn: str, workflow: str) -> tuple[Any, dict[str, Any]]:
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute(
            "SELECT trace_id, query FROM traces WHERE workflow_id = %s", (workflow,)
        ).fetchone()
        assert row is not None
        llm = conn.execute(
            "SELECT inputs, outputs FROM spans WHERE trace_id = %s AND span_type = 'llm'", (row[0],)
        ).fetchone()
    return row[1], {"inputs": llm[0], "outputs": llm[1]}


def test_zero_code_otel_logs_exporter_postgres(db_dsn: str, tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex
    app = _app(
        tmp_path,
        f"""
        import openai
        from opentelemetry import trace
        from otel_pg_exporter.commands.fakeai import FakeOpenAI

        with FakeOpenAI() as srv:
            client = openai.OpenAI(base_url=srv.base_url, api_key="sk-zero-code", max_retries=0)
            with trace.get_tracer("app").start_as_current_span("logs {run_id}"):
                client.chat.completions.create(model="gpt-4o-mini",
                                               messages=[{{"role": "user", "content": "hi from logs"}}])
        """,
    )
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "opentelemetry-instrument"), sys.executable, str(app)],
        env=app_env(
            db_dsn,
            OTEL_TRACES_EXPORTER="postgres",
            OTEL_LOGS_EXPORTER="postgres",
            OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="EVENT_ONLY",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    query, llm = _trace_by_workflow(db_dsn, f"logs {run_id}")
    assert query == "hi from logs"
    assert llm["inputs"]["messages"][0]["parts"][0]["content"] == "hi from logs"
    assert "umbrella" in llm["outputs"]["messages"][0]["parts"][0]["content"]


def test_configure_wires_spans_and_logs(db_dsn: str, tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex
    app = _app(
        tmp_path,
        f"""
        import openai
        import otel_pg_exporter
        from opentelemetry import trace
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
        from otel_pg_exporter.commands.fakeai import FakeOpenAI

        provider = otel_pg_exporter.configure(service_name="configured-logs")
        OpenAIInstrumentor().instrument()
        with FakeOpenAI() as srv:
            client = openai.OpenAI(base_url=srv.base_url, api_key="sk-configured", max_retries=0)
            with trace.get_tracer("app").start_as_current_span("configured {run_id}"):
                client.chat.completions.create(model="gpt-4o-mini",
                                               messages=[{{"role": "user", "content": "hi configured"}}])
        provider.shutdown()  # the log exporter still flushes at exit: the shared pool waits for it
        """,
    )
    proc = subprocess.run(
        [sys.executable, str(app)],
        env=app_env(db_dsn, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="EVENT_ONLY"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    query, llm = _trace_by_workflow(db_dsn, f"configured {run_id}")
    assert query == "hi configured"
    assert llm["inputs"]["messages"][0]["parts"][0]["content"] == "hi configured"


def test_log_fragments_are_spooled_while_the_database_is_down(
    db_dsn: str, capture: Capture, tmp_path: Path
) -> None:
    proxy = TcpProxy(db_dsn)
    exp = PostgresSpanExporter(proxy.dsn, timeout_s=1, spool_dir=str(tmp_path))
    logs = PostgresLogExporter(span_exporter=exp)
    try:
        root = chat_with_logged_content(capture)
        spans, records = capture.take(), capture.take_logs()
        proxy.cut()
        assert logs.export(records).name == "SUCCESS"  # kept on disk, not lost
        assert exp.export(spans).name == "SUCCESS"
        assert exp.stats()["spooled"] == 3, exp.stats()  # one log fragment + two spans
        proxy.restore()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and exp.stats().get("log_fragments_merged", 0) < 1:
            time.sleep(0.2)
    finally:
        logs.shutdown()
        exp.shutdown()
        proxy.close()
    llm = llm_row(db_dsn, root.get_span_context().trace_id)
    assert llm["inputs"]["messages"][1]["content"] == "Weather in Paris?" and llm["status"] == "completed"
