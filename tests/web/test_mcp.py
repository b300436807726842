"""``otel-pg-mcp`` with the MCP SDK's own client: over stdio and streamable HTTP, on traces the real
SDK made through the exporter; and ``query_sql``'s guarantees, each tried against the database."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from opentelemetry.trace import Status, StatusCode

from otel_pg_exporter import PostgresSpanExporter, install_schema
from otel_pg_exporter.query.outline import OUTLINE_CHARS
from otel_pg_exporter.query.sql_tool import SqlRefused, run_read_only
from tests.helpers.scenarios import ALICE, BOB, agent_run, authenticated_role, database_with_users
from tests.helpers.support import Capture, drop_exporter_role, free_port

BIN = Path(sys.executable).parent
READER_SQL = Path(__file__).resolve().parents[2] / "sql" / "roles" / "otel_reader_role.sql"


def _failed_run(capture: Any) -> str:
    """An agent run whose model call fails with a rate limit, as the real SDK records it."""
    t = capture.tracer
    with t.start_as_current_span("support run", attributes={"gen_ai.workflow.name": "refunds"}) as root:
        with t.start_as_current_span("chat gpt-4o", attributes={"gen_ai.operation.name": "chat"}) as chat:
            chat.set_attribute("error.type", "<class 'openai.RateLimitError'>")
            chat.set_status(Status(StatusCode.ERROR, "Error code: 429 - rate limited"))
        root.set_status(Status(StatusCode.ERROR, "the model call failed"))
    return format(root.get_span_context().trace_id, "032x")


@pytest.fixture(scope="module")
def mcp_db(make_database) -> str:
    dsn = make_database()
    install_schema(dsn)
    return dsn


@pytest.fixture(scope="module")
def stored(mcp_db: str) -> dict[str, str]:
    from tests.helpers.support import Capture

    capture = Capture()
    trace_hex = _failed_run(capture)
    exporter = PostgresSpanExporter(mcp_db)
    try:
        assert exporter.export(capture.take()).name == "SUCCESS"
    finally:
        exporter.shutdown()
    return {"trace_hex": trace_hex}


def _result(result: Any) -> Any:
    assert not result.is_error, result.content
    if result.structured_content is not None:
        data = result.structured_content
        return data.get("result", data) if isinstance(data, dict) and set(data) == {"result"} else data
    return json.loads(result.content[0].text)


def test_over_stdio_an_agent_finds_the_failed_trace_and_its_error(
    mcp_db: str, stored: dict[str, str]
) -> None:
    params = StdioServerParameters(
        command=str(BIN / "otel-pg-mcp"), args=["--dsn", mcp_db], env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )

    async def session() -> None:
        async with Client(params) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"search_traces", "get_trace", "get_span", "failures", "cost_summary"} <= tools
            assert "query_sql" not in tools  # not offered without a read-only role
            found = _result(await client.call_tool("search_traces", {"status": "failed", "since": "all"}))
            (row,) = found["traces"]
            assert row["workflow"] == "refunds" and row["status"] == "failed"
            tree = _result(await client.call_tool("get_trace", {"trace_id": stored["trace_hex"]}))
            assert (
                "llm 'chat gpt-4o' [failed]" in tree["outline"] and "openai.RateLimitError" in tree["outline"]
            )
            worst = _result(await client.call_tool("failures", {"since": "all"}))["failures"][0]
            assert worst["error_type"] == "openai.RateLimitError" and worst["traces"] == 1
            span = _result(await client.call_tool("get_span", {"span_id": worst["example_spans"][0]}))
            assert span["error_type"] == "openai.RateLimitError" and "429" in span["error"]
            bad = await client.call_tool("get_trace", {"trace_id": "not-a-trace"})
            assert bad.is_error and "not a UUID" in bad.content[0].text  # a clear tool error; it goes on
            window = await client.call_tool("search_traces", {"since": "last tuesday"})
            assert window.is_error and "is not a window" in window.content[0].text
            assert _result(await client.call_tool("search_traces", {"since": "all"}))["traces"]
            slow = {"since": "all", "min_duration_ms": 3_600_000}
            assert _result(await client.call_tool("search_traces", slow))["traces"] == []

    asyncio.run(session())


def _http_server(dsn: str, port: int, token: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OTEL_PG_MCP_TOKEN": token}
    proc = subprocess.Popen(
        [str(BIN / "otel-pg-mcp"), "--dsn", dsn, "--http", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/mcp", timeout=1)
        except urllib.error.HTTPError:
            return proc  # answering (401 without the token)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(proc.stderr.read() if proc.stderr else "no server")


def test_over_http_with_the_token_and_refused_without_it_or_with_a_forged_host(
    mcp_db: str, stored: dict[str, str]
) -> None:
    import httpx2

    port, token = free_port(), uuid.uuid4().hex
    proc = _http_server(mcp_db, port, token)
    try:
        url = f"http://127.0.0.1:{port}/mcp"

        async def session() -> None:
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
                from mcp.client.streamable_http import streamable_http_client

                async with Client(streamable_http_client(url, http_client=http)) as client:
                    found = _result(await client.call_tool("search_traces", {"since": "all"}))
                    assert found["traces"][0]["workflow"] == "refunds"

        asyncio.run(session())
        body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
        for headers, status in (
            ({}, 401),
            ({"Authorization": "Bearer wrong"}, 401),
        ):
            request = urllib.request.Request(url, data=body, method="POST", headers=headers)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code == status
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # without a token, only this machine's Host names are answered (DNS rebinding)
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "otel-pg-mcp"), "--dsn", mcp_db, "--http", "--port", str(port)],
        env={k: v for k, v in os.environ.items() if k != "OTEL_PG_MCP_TOKEN"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/mcp", data=b"{}", method="POST", headers={"Host": "evil.example"}
            )
            try:
                urllib.request.urlopen(request, timeout=2)
            except urllib.error.HTTPError as exc:
                assert exc.code == 421
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- query_sql ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reader_dsn(mcp_db: str, stored: dict[str, str]) -> Iterator[str]:
    """``sql/roles/otel_reader_role.sql`` applied; the same database as that role."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with psycopg.connect(mcp_db, autocommit=True) as conn:
        conn.execute(READER_SQL.read_text())
    yield make_conninfo(**{**conninfo_to_dict(mcp_db), "user": "otel_pg_reader"})
    drop_exporter_role(mcp_db, "otel_pg_reader")


def _spans(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM spans").fetchone()[0]


def test_query_sql_reads(reader_dsn: str) -> None:
    result = run_read_only(
        reader_dsn, "SELECT span_type, error_type FROM spans WHERE status = 'failed' ORDER BY 1;"
    )
    assert result.columns == ["span_type", "error_type"] and ["llm", "openai.RateLimitError"] in result.rows
    like = run_read_only(
        reader_dsn, "SELECT count(*) FROM spans WHERE name LIKE 'chat%'"
    )  # % is no placeholder
    assert like.rows == [[1]]


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM spans",
        "SELECT 1; DELETE FROM spans",
        "SELECT 1; COMMIT; DELETE FROM spans",
        "SET ROLE postgres",
        "SET LOCAL statement_timeout = 0",
        "RESET ALL",
        "COPY spans TO PROGRAM 'id'",
        "WITH gone AS (DELETE FROM spans RETURNING 1) SELECT count(*) FROM gone",
        "SELECT nextval(pg_get_serial_sequence('spans', 'span_id'))",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE usename = current_user",
        'SELECT U&"pg_terminate_backend"(pg_backend_pid())',
        "SELECT set_config('role', 'postgres', false)",
        "SELECT set_config('transaction_read_only', 'off', false)",
        "CREATE TABLE x (a int)",
    ],
)
def test_query_sql_cannot_write_escape_or_outlive_the_call(
    reader_dsn: str, mcp_db: str, statement: str
) -> None:
    before = _spans(mcp_db)
    try:
        result = run_read_only(reader_dsn, statement)
    except SqlRefused as exc:
        assert str(exc)  # a clear error
    else:  # what did run had no effect: nothing terminated, no write
        assert not any(v is True for row in result.rows for v in row)
    assert _spans(mcp_db) == before
    with psycopg.connect(mcp_db) as conn:  # nothing outlived the call
        assert conn.execute("SELECT to_regclass('x')").fetchone()[0] is None


def test_query_sql_settings_do_not_outlive_the_call_and_timeouts_hold(reader_dsn: str) -> None:
    run_read_only(reader_dsn, "SELECT set_config('statement_timeout', '0', false)")
    started = time.monotonic()
    with pytest.raises(SqlRefused, match=r"cancelled|timed out|watchdog"):
        run_read_only(reader_dsn, "SELECT pg_sleep(30)", timeout_ms=500)
    with pytest.raises(SqlRefused):
        run_read_only(
            reader_dsn, "SELECT set_config('statement_timeout', '0', true), pg_sleep(30)", timeout_ms=500
        )
    assert time.monotonic() - started < 10


def test_query_sql_bounds_what_comes_back(reader_dsn: str) -> None:
    many = run_read_only(reader_dsn, "SELECT generate_series(1, 100000)", max_rows=50)
    assert len(many.rows) == 50 and many.truncated and "LIMIT" in (many.reason or "")
    wide = run_read_only(
        reader_dsn, "SELECT repeat('x', 10000) FROM generate_series(1, 100)", max_bytes=30_000
    )
    assert wide.truncated and sum(len(r[0]) for r in wide.rows) <= 30_000


def test_query_sql_refuses_a_role_that_can_write(mcp_db: str) -> None:
    with pytest.raises(SqlRefused, match="read-only role"):
        run_read_only(mcp_db, "SELECT 1")  # the test server's superuser


def test_a_5000_span_trace_outline_stays_under_the_bound(mcp_db: str) -> None:
    from otel_pg_exporter.query import outline
    from otel_pg_exporter.query.trace_store import TraceStore
    from tests.helpers.support import Capture

    capture = Capture()
    with capture.tracer.start_as_current_span("big run") as root:
        for i in range(4999):
            with capture.tracer.start_as_current_span(
                f"tool {i}", attributes={"gen_ai.operation.name": "execute_tool", "input.value": "x" * 500}
            ):
                pass
    exporter = PostgresSpanExporter(mcp_db)
    try:
        assert exporter.export(capture.take()).name == "SUCCESS"
    finally:
        exporter.shutdown()
    with TraceStore(mcp_db) as store:
        detail = store.get_trace(format(root.get_span_context().trace_id, "032x"), limit=1000)
        assert detail is not None and detail.total_spans == 5000
        cut = outline.outline(detail)
    assert (
        len(cut.text) <= OUTLINE_CHARS
        and cut.next_offset == cut.shown
        and "call again with offset" in cut.text
    )
    assert shutil.which("otel-pg-mcp", path=str(BIN))


def test_as_a_user_the_tools_and_the_sql_never_return_another_users_traces(make_database) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from otel_pg_exporter.query.trace_store import TraceStore
    from otel_pg_exporter.web.mcp.server import McpOptions, build_server

    dsn = database_with_users(make_database)
    capture = Capture()
    agent_run(capture, "alice asks", user=ALICE, session="s-alice", fail=True)
    bob_trace = format(agent_run(capture, "bob's secret", user=BOB, session="s-bob", fail=True), "032x")
    exporter = PostgresSpanExporter(dsn)
    try:
        assert exporter.export(capture.take()).name == "SUCCESS"
    finally:
        exporter.shutdown()
    with authenticated_role(dsn):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(READER_SQL.read_text())
        reader = make_conninfo(**{**conninfo_to_dict(dsn), "user": "otel_pg_reader"})
        store = TraceStore(dsn, as_user=str(ALICE))
        server = build_server(store, McpOptions(sql_dsn=reader, as_user=str(ALICE)))

        async def session() -> None:
            async with Client(server) as client:
                found = _result(await client.call_tool("search_traces", {"since": "all"}))["traces"]
                assert [t["preview"] for t in found] == ["alice asks"]
                assert (await client.call_tool("get_trace", {"trace_id": bob_trace})).is_error
                assert (
                    _result(await client.call_tool("failures", {"since": "all"}))["failures"][0]["traces"]
                    == 1
                )
                users = _result(
                    await client.call_tool("query_sql", {"sql": "SELECT DISTINCT user_id FROM traces"})
                )
                assert users["rows"] == [[str(ALICE)]]
                for attempt in (
                    "SELECT count(*) FROM traces, (SELECT set_config('request.jwt.claim.sub', "
                    f"'{BOB}', true)) AS s",
                    "SELECT count(*) FROM traces, (SELECT U&\"set\\0063onfig\"('role', 'otel_pg_reader', true)) s",
                ):
                    assert (await client.call_tool("query_sql", {"sql": attempt})).is_error
                bob_rows = _result(
                    await client.call_tool(
                        "query_sql",
                        {
                            "sql": f"SELECT count(*) FROM spans s JOIN traces t "
                            f"USING (trace_id) WHERE t.user_id = '{BOB}'"
                        },
                    )
                )
                assert bob_rows["rows"] == [[0]]

        try:
            asyncio.run(session())
        finally:
            store.close()
            drop_exporter_role(dsn, "otel_pg_reader")


def test_an_agent_records_and_reads_judgements_only_when_allowed(mcp_db: str, stored: dict[str, str]) -> None:
    def params(*extra: str) -> StdioServerParameters:
        return StdioServerParameters(
            command=str(BIN / "otel-pg-mcp"),
            args=["--dsn", mcp_db, *extra],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    async def read_only() -> None:
        async with Client(params()) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert "annotations" in tools and "annotate" not in tools

    async def judging() -> None:
        async with Client(params("--allow-annotations", "--annotator", "claude-review")) as client:
            written = _result(
                await client.call_tool(
                    "annotate",
                    {
                        "target": stored["trace_hex"],
                        "name": "root-cause-found",
                        "label": "rate limit",
                        "score": 1,
                        "explanation": "429 from the provider; add retries with backoff",
                    },
                )
            )
            assert written["written"]["target_kind"] == "trace"
            bad = await client.call_tool("annotate", {"target": stored["trace_hex"], "name": "empty"})
            assert bad.is_error and "needs a score, a label" in bad.content[0].text
            found = _result(await client.call_tool("annotations", {"trace_id": stored["trace_hex"]}))
            (one,) = found["annotations"]
            assert (one["name"], one["label"], one["annotator_kind"], one["annotator"], one["source"]) == (
                "root-cause-found",
                "rate limit",
                "llm",
                "claude-review",
                "mcp",
            )

    asyncio.run(read_only())
    asyncio.run(judging())
