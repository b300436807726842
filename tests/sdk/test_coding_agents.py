"""Coding agents that send only log events (Claude Code, OpenAI Codex CLI, Gemini CLI) become
traces: a trace per prompt (per conversation for Codex), a model call per request with tokens by
kind and the reported cost, tool calls, errors; a re-sent batch is stored once; over OTLP/gRPC into
the gateway as the agents send them.

Records are emitted with the SDK's Logs API carrying the event names and attributes the agents'
telemetry documentation lists (Claude Code: ``claude_code.*`` with ``event.name`` unprefixed and
the full name in the body, ``prompt.id``, ``event.sequence``, numbers as strings where it sends
strings; Codex: ``codex.*`` in ``event.name``, ``conversation.id``, token counts on
``codex.sse_event`` of kind ``response.completed``; Gemini CLI: ``gemini_cli.*``, ``prompt_id``,
``*_token_count``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from otel_pg_exporter import PostgresLogExporter
from otel_pg_exporter.pipeline.coding_agents import split
from otel_pg_exporter.query.report import build_report
from tests.helpers.support import Capture

CLAUDE = {
    "session.id": "cc-session-1",
    "prompt.id": "7f0c6c2e-4d1e-4b4a-9a55-2f5a5d0e9b11",
    "user.email": "dev@example.com",
    "user.account_uuid": "acc-1",
    "organization.id": "org-42",
    "terminal.type": "vscode",
}


def _claude_code(capture: Capture, prompt: str | None = "fix the failing test") -> None:
    emit = capture.logger.emit
    user_prompt = {**CLAUDE, "event.name": "user_prompt", "event.sequence": 1, "prompt_length": "20"}
    if prompt is not None:  # only with OTEL_LOG_USER_PROMPTS=1
        user_prompt["prompt"] = prompt
    emit(body="claude_code.user_prompt", attributes=user_prompt)
    emit(
        body="claude_code.api_request",
        attributes={
            **CLAUDE,
            "event.name": "api_request",
            "event.sequence": 2,
            "model": "claude-sonnet-4-5",
            "cost_usd": "0.0123",
            "duration_ms": "2100",
            "input_tokens": "12",
            "output_tokens": "340",
            "cache_read_tokens": "18000",
            "cache_creation_tokens": "1500",
            "query_source": "main",
        },
    )
    emit(
        body="claude_code.tool_result",
        attributes={
            **CLAUDE,
            "event.name": "tool_result",
            "event.sequence": 3,
            "tool_name": "Bash",
            "success": "false",
            "error": "exit code 1",
            "duration_ms": "800",
        },
    )
    emit(
        body="claude_code.api_error",
        attributes={
            **CLAUDE,
            "event.name": "api_error",
            "event.sequence": 4,
            "model": "claude-sonnet-4-5",
            "error": "Overloaded",
            "status_code": "529",
            "duration_ms": "300",
            "attempt": "1",
        },
    )
    emit(
        body="claude_code.tool_decision",
        attributes={
            **CLAUDE,
            "event.name": "tool_decision",
            "event.sequence": 5,
            "tool_name": "Edit",
            "decision": "accept",
            "source": "config",
        },
    )


def _codex(capture: Capture) -> None:
    common = {
        "conversation.id": "cx-conv-1",
        "app.version": "0.154.0",
        "auth_mode": "chatgpt",
        "user.account_id": "acct-7",
        "terminal.type": "xterm",
        "model": "gpt-5.1",
        "slug": "gpt-5.1",
    }
    emit = capture.logger.emit
    emit(
        body=None, attributes={**common, "event.name": "codex.conversation_starts", "provider_name": "OpenAI"}
    )
    emit(
        body=None,
        attributes={
            **common,
            "event.name": "codex.user_prompt",
            "prompt_length": 14,
            "prompt": "add a unit test",
        },
    )
    emit(
        body=None,
        attributes={
            **common,
            "event.name": "codex.api_request",
            "attempt": 1,
            "duration_ms": 950,
            "http.response.status_code": 200,
        },
    )
    emit(
        body=None,
        attributes={
            **common,
            "event.name": "codex.sse_event",
            "event.kind": "response.output_text.delta",
            "duration_ms": 3,
        },
    )
    emit(
        body=None,
        attributes={
            **common,
            "event.name": "codex.sse_event",
            "event.kind": "response.completed",
            "input_token_count": 5000,
            "output_token_count": 800,
            "cached_token_count": 4000,
            "reasoning_token_count": 300,
            "tool_token_count": 5800,
            "duration_ms": 950,
        },
    )
    emit(
        body=None,
        attributes={
            **common,
            "event.name": "codex.tool_result",
            "tool_name": "shell",
            "call_id": "call_1",
            "arguments": '{"cmd":"pytest -q"}',
            "duration_ms": 1200,
            "success": "true",
            "output": "3 passed",
        },
    )
    emit(
        body=None,
        attributes={
            **common,
            "event.name": "codex.api_request",
            "attempt": 2,
            "duration_ms": 30,
            "http.response.status_code": 429,
            "error.message": "rate limited",
        },
    )


def _gemini(capture: Capture) -> None:
    common = {
        "session.id": "gm-session-1",
        "prompt_id": "gm-prompt-1",
        "installation.id": "inst-1",
        "user.email": "dev@example.com",
    }
    emit = capture.logger.emit
    emit(
        body=None,
        attributes={
            **common,
            "event.name": "gemini_cli.user_prompt",
            "prompt_length": 9,
            "auth_type": "oauth-personal",
        },
    )
    emit(
        body=None,
        attributes={
            **common,
            "event.name": "gemini_cli.api_response",
            "model": "gemini-2.5-pro",
            "status_code": 200,
            "duration_ms": 4100,
            "input_token_count": 12000,
            "output_token_count": 350,
            "cached_content_token_count": 8000,
            "thoughts_token_count": 420,
            "tool_token_count": 0,
            "total_token_count": 12770,
        },
    )
    emit(
        body=None,
        attributes={
            **common,
            "event.name": "gemini_cli.tool_call",
            "function_name": "read_file",
            "function_args": '{"path": "a.py"}',
            "duration_ms": 12,
            "success": True,
            "decision": "auto_accept",
        },
    )
    emit(
        body=None,
        attributes={
            **common,
            "event.name": "gemini_cli.api_error",
            "model": "gemini-2.5-pro",
            "error": "quota exceeded",
            "error_type": "RESOURCE_EXHAUSTED",
            "status_code": 429,
            "duration_ms": 80,
        },
    )


def _session(dsn: str, session: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        (trace,) = conn.execute(
            "SELECT * FROM traces WHERE metadata ->> 'session_id' = %s", (session,)
        ).fetchall()
        spans = conn.execute(
            "SELECT * FROM spans WHERE trace_id = %s ORDER BY span_type, name, status", (trace["trace_id"],)
        ).fetchall()
    return trace, spans


@pytest.fixture
def log_exporter_of(db_dsn: str):
    made: list[PostgresLogExporter] = []

    def make() -> PostgresLogExporter:
        made.append(PostgresLogExporter(db_dsn, spool_dir="off"))
        return made[-1]

    yield make
    for exporter in made:
        exporter.shutdown()


def test_claude_code_prompt_becomes_a_trace_with_exact_cost_and_tokens(db_dsn: str, log_exporter_of) -> None:
    capture = Capture("claude-code")
    _claude_code(capture)
    records = capture.take_logs()
    exporter = log_exporter_of()
    assert exporter.export(records).name == "SUCCESS"
    assert exporter.export(records).name == "SUCCESS"  # re-sent: stored once
    trace, spans = _session(db_dsn, "cc-session-1")
    assert [(s["span_type"], s["name"], s["status"]) for s in spans] == [
        ("llm", "chat claude-sonnet-4-5", "completed"),
        ("llm", "chat claude-sonnet-4-5", "failed"),
        ("other", "tool_decision Edit", "completed"),
        ("tool", "execute_tool Bash", "failed"),
        ("workflow", "claude-code prompt", "completed"),
    ]
    call, error = spans[0], spans[1]
    # Claude Code counts input without the cache, as the Anthropic API does; ours includes it
    assert call["tokens"] == {
        "input": 19512,
        "output": 340,
        "total": 19852,
        "cache_read": 18000,
        "cache_write": 1500,
    }
    assert call["cost"] == Decimal("0.012300") and call["metadata"]["cost"]["status"] == "provided"
    assert call["provider"] == "anthropic" and call["duration_ms"] == 2100
    assert call["metadata"]["attributes"]["query_source"] == "main"
    assert error["error_type"] == "http.529" and error["error"] == "Overloaded"
    assert error["metadata"]["cost"]["status"] == "no_usage"  # unknown, not zero
    assert spans[3]["error"] == "exit code 1"
    assert trace["workflow_id"] == "claude-code" and trace["query"] == "fix the failing test"
    assert trace["total_cost"] == Decimal("0.012300") and trace["total_tokens"]["cache_read"] == 18000
    assert trace["metadata"]["user"] == "dev@example.com" and trace["status"] == "completed"
    assert spans[4]["metadata"]["attributes"]["organization.id"] == "org-42"
    # the report shows the agent's spend like any other workflow's
    report = build_report(db_dsn, days=2)
    (claude,) = [w for w in report["top_workflows"] if w["name"] == "claude-code"]
    assert claude["cost"] >= Decimal("0.0123") and claude["calls"] >= 2


def test_claude_code_without_prompt_text_stores_none(db_dsn: str, log_exporter_of) -> None:
    capture = Capture("claude-code")
    CLAUDE_OTHER = {"session.id": "cc-session-2"}
    capture.logger.emit(
        body="claude_code.user_prompt",
        attributes={**CLAUDE, **CLAUDE_OTHER, "event.name": "user_prompt", "prompt_length": "20"},
    )
    assert log_exporter_of().export(capture.take_logs()).name == "SUCCESS"
    trace, (root,) = _session(db_dsn, "cc-session-2")
    assert trace["query"] is None and root["inputs"] == {}


def test_codex_conversation_with_usage_on_completed_responses(db_dsn: str, log_exporter_of) -> None:
    capture = Capture("codex_cli_rs")
    _codex(capture)
    records = capture.take_logs()
    batch = split(records)
    assert batch.skipped == 2 and len(batch.spans) == 5  # a delta and a successful attempt make no row
    assert log_exporter_of().export(records).name == "SUCCESS"
    trace, spans = _session(db_dsn, "cx-conv-1")
    by_name = {(s["name"], s["status"]): s for s in spans}
    call = by_name[("chat gpt-5.1", "completed")]
    # OpenAI counts the cache inside input and the reasoning inside output, as we do
    assert call["tokens"] == {
        "input": 5000,
        "output": 800,
        "total": 5800,
        "cache_read": 4000,
        "reasoning": 300,
    }
    assert call["provider"] == "openai" and call["metadata"]["cost"]["status"] in ("computed", "unpriced")
    failed = by_name[("chat gpt-5.1", "failed")]
    assert failed["error_type"] == "http.429" and failed["error"] == "rate limited"
    tool = by_name[("execute_tool shell", "completed")]
    assert "pytest -q" in str(tool["inputs"]) and "3 passed" in str(tool["outputs"])
    assert trace["workflow_id"] == "codex" and trace["metadata"]["user"] == "acct-7"


def test_gemini_cli_prompt_with_thoughts_billed_as_output(db_dsn: str, log_exporter_of) -> None:
    capture = Capture("gemini-cli")
    _gemini(capture)
    assert log_exporter_of().export(capture.take_logs()).name == "SUCCESS"
    trace, spans = _session(db_dsn, "gm-session-1")
    call = next(s for s in spans if s["span_type"] == "llm" and s["status"] == "completed")
    # Gemini's prompt count includes the cache; its thoughts are billed as output and counted apart
    assert call["tokens"] == {
        "input": 12000,
        "output": 770,
        "total": 12770,
        "cache_read": 8000,
        "reasoning": 420,
    }
    assert call["provider"] == "gcp.gemini" and call["model"] == "gemini-2.5-pro"
    error = next(s for s in spans if s["status"] == "failed")
    assert error["error_type"] == "RESOURCE_EXHAUSTED" and error["error"] == "quota exceeded"
    assert trace["workflow_id"] == "gemini-cli" and trace["total_tokens"]["total"] == 12770


def test_content_is_scrubbed_and_withheld_when_capture_is_off(db_dsn: str) -> None:
    key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
    capture = Capture("claude-code")
    capture.logger.emit(
        body="claude_code.user_prompt",
        attributes={**CLAUDE, "session.id": "cc-secret", "event.name": "user_prompt", "prompt": f"use {key}"},
    )
    exporter = PostgresLogExporter(db_dsn, spool_dir="off")
    assert exporter.export(capture.take_logs()).name == "SUCCESS"
    exporter.shutdown()
    trace, _ = _session(db_dsn, "cc-secret")
    assert key not in (trace["query"] or "") and "use" in trace["query"]
    quiet = PostgresLogExporter(db_dsn, spool_dir="off", capture_content=False)
    capture.logger.emit(
        body="claude_code.user_prompt",
        attributes={
            **CLAUDE,
            "session.id": "cc-quiet",
            "event.name": "user_prompt",
            "prompt": "private words",
        },
    )
    assert quiet.export(capture.take_logs()).name == "SUCCESS"
    quiet.shutdown()
    trace, (root,) = _session(db_dsn, "cc-quiet")
    assert "private words" not in str(root) + str(trace)
