"""The trace explorer (otel-pg-ui) in a real headless Chromium (the system's, driven by Python
Playwright), over traces the real SDK made: list, paging, a trace with model/tokens/cost/error,
hostile content inert, sessions, costs, JSON API, token, RLS, the command itself."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from otel_pg_exporter import PostgresSpanExporter, trace_uuid
from otel_pg_exporter.query.trace_store import TraceStore
from otel_pg_exporter.web.explorer.app import create_app
from tests.helpers.scenarios import ALICE, BOB, agent_run, authenticated_role, database_with_users
from tests.helpers.support import Capture, Served, chat_attributes, free_port, served_explorer

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


@pytest.fixture(scope="module")
def data(make_database) -> dict[str, Any]:
    dsn = database_with_users(make_database)
    capture = Capture()
    now = datetime.now(timezone.utc)
    ids = [
        agent_run(
            capture,
            f"question {i} {HOSTILE}",
            user=ALICE if i % 2 == 0 else BOB,
            session="conv-1" if i < 3 else "conv-2",
            fail=i == 2,
            start=now - timedelta(minutes=10 - i),
        )
        for i in range(5)
    ]
    exporter = PostgresSpanExporter(dsn, spool_dir="off")
    assert exporter.export(capture.take()).name == "SUCCESS"
    with capture.tracer.start_as_current_span("agent still working") as running_root:  # root not sent
        with capture.tracer.start_as_current_span("chat", attributes=chat_attributes(7, 3)):
            pass
    assert exporter.export([s for s in capture.take() if s.name == "chat"]).name == "SUCCESS"
    exporter.shutdown()
    return {"dsn": dsn, "ids": ids, "running": running_root.get_span_context().trace_id}


@pytest.fixture(scope="module")
def site(data) -> Iterator[Served]:
    with served_explorer(data["dsn"]) as served:
        yield served


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_list_page_older_newer_and_open_a_trace(site, data, page) -> None:
    response = page.goto(f"{site.url}/?limit=2&workflow=support")
    assert response.status == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    rows = page.locator("#traces tbody tr")
    assert rows.count() == 2
    newest = [trace_uuid(i) for i in reversed(data["ids"])]
    assert [rows.nth(i).get_attribute("data-trace-id") for i in range(2)] == [str(t) for t in newest[:2]]
    page.click("#older")
    assert [page.locator("#traces tbody tr").nth(i).get_attribute("data-trace-id") for i in range(2)] == [
        str(t) for t in newest[2:4]
    ]
    page.click("#older")
    assert page.locator("#traces tbody tr").count() == 1 and page.locator("#older").count() == 0
    page.click("#newer")
    assert page.locator("#traces tbody tr").first.get_attribute("data-trace-id") == str(newest[2])
    # the failed run: open it from the list
    page.goto(f"{site.url}/?status=failed")
    page.click("a.trace-link")
    assert page.url.endswith(f"/traces/{trace_uuid(data['ids'][2])}")
    assert page.inner_text("#trace-status") == "failed"
    assert page.inner_text("#trace-error") == "the model refused"
    # the deepest failed span is selected: the model call, with its model, tokens, cost and error
    assert page.inner_text("#span-model").startswith("gpt-4o-mini")
    tokens = page.inner_text("#span-tokens")
    assert "input" in tokens and "100" in tokens and "output" in tokens and "20" in tokens
    assert page.inner_text("#span-cost").startswith("$0.0000") and "computed" in page.inner_text("#span-cost")
    assert "RateLimitError" in page.inner_text("#span-error") and "rate limited" in page.inner_text(
        "#span-error"
    )
    assert page.locator("#tree .span-row").count() == 3 and page.locator("#tree svg.bar rect").count() == 3
    # a link points at one span
    tool_row = page.locator("#tree .span-row", has_text="execute_tool")
    tool_row.locator("a").click()
    assert "span=" in page.url and page.locator("#span h2").inner_text().startswith("execute_tool lookup")
    assert page.errors == []


def test_hostile_content_stays_inert(site, data, page) -> None:
    for path in ("/", f"/traces/{trace_uuid(data['ids'][0])}", "/sessions/conv-1"):
        page.goto(site.url + path)
        assert page.evaluate("window.__pwned") is None
        assert page.evaluate("document.scripts.length") == 0  # the explorer uses none; content adds none
        assert page.evaluate("document.images.length") == 0
        assert "<script>window.__pwned = 1</script>" in page.inner_text("main")  # shown, as text
    page.goto(f"{site.url}/traces/{trace_uuid(data['ids'][0])}")
    page.locator("#tree .span-row", has_text="chat").locator("a").click()
    conversation = page.inner_text("#conversation")
    assert "question 0 <script>" in conversation and "answer to question 0" in conversation
    assert page.locator("details.system").count() == 1  # the system prompt, collapsed
    assert page.errors == []


def test_a_running_trace_refreshes_itself(site, data, page) -> None:
    page.goto(f"{site.url}/traces/{trace_uuid(data['running'])}")
    assert page.inner_text("#trace-status") == "running"
    assert page.locator("meta[http-equiv=refresh]").get_attribute("content") == "3"
    assert page.locator(".live").count() == 1
    assert "placeholder" in page.inner_text("#tree")  # the root that has not arrived
    page.goto(f"{site.url}/traces/{trace_uuid(data['ids'][0])}")
    assert page.locator("meta[http-equiv=refresh]").count() == 0  # a finished one does not
    page.goto(f"{site.url}/?status=running")  # a list showing a running trace, less often
    assert page.locator("meta[http-equiv=refresh]").get_attribute("content") == "10"
    page.goto(f"{site.url}/?status=completed")
    assert page.locator("meta[http-equiv=refresh]").count() == 0


def test_sessions_replay_and_costs(site, data, page) -> None:
    page.goto(f"{site.url}/sessions")
    assert page.locator("#sessions tbody tr").count() == 2
    page.click("text=conv-1")
    turns = page.locator("#replay .turn")
    assert turns.count() == 3
    assert "question 0" in turns.nth(0).inner_text() and "answer to question 0" in turns.nth(0).inner_text()
    assert "the model refused" in turns.nth(2).inner_text()
    page.goto(f"{site.url}/costs")
    assert "This month:" in page.inner_text("#month")
    assert page.locator("svg#cost-chart polyline.history").count() == 1
    assert "gpt-4o-mini" in page.inner_text("main") and page.locator("#budgets").count() == 1


def test_json_api(site, data) -> None:
    status, headers, body = _get(f"{site.url}/api/traces?workflow=support&limit=2")
    assert status == 200 and headers["content-type"].startswith("application/json")
    listed = json.loads(body)
    assert len(listed["traces"]) == 2 and listed["older"] and listed["newer"] is None
    status, _, body = _get(f"{site.url}/api/traces?workflow=support&limit=2&cursor={listed['older']}")
    assert [t["trace_id"] for t in json.loads(body)["traces"]] == [
        str(trace_uuid(i)) for i in reversed(data["ids"][1:3])
    ]
    status, _, body = _get(f"{site.url}/api/traces/{trace_uuid(data['ids'][2])}")
    detail = json.loads(body)
    assert status == 200 and detail["trace"]["status"] == "failed"
    root, chat, tool = detail["spans"]  # flat, depth first
    assert root["depth"] == 0 and root["children"] == [chat["span_id"], tool["span_id"]]
    assert [chat["name"], tool["name"]] == ["chat", "execute_tool lookup"]
    assert chat["depth"] == 1 and chat["parent_span_id"] == root["span_id"]
    assert chat["tokens"]["input"] == 100
    assert detail["total_spans"] == 3 and detail["next_offset"] is None
    assert _get(f"{site.url}/api/traces/{uuid.uuid4()}")[0] == 404
    status, _, body = _get(f"{site.url}/api/traces?cursor=o.garbage")
    assert status == 400 and "invalid cursor" in json.loads(body)["error"]
    status, _, body = _get(f"{site.url}/traces/not-a-uuid")
    assert status == 400 and "not a UUID" in body


def test_a_token_guards_every_request(data) -> None:
    store = TraceStore(data["dsn"])
    served = Served(create_app(store, token="s3cret-token"), token="s3cret-token")
    try:
        status, headers, body = _get(served.url + "/")
        assert (
            status == 401
            and "s3cret" not in body
            and "content-security-policy" in {k.lower() for k in headers}
        )
        assert _get(served.url + "/", {"Authorization": "Bearer wrong"})[0] == 401
        assert _get(served.url + "/api/traces", {"Authorization": "Bearer s3cret-token"})[0] == 200
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with opener.open(served.url + "/?token=s3cret-token&status=failed", timeout=10) as resp:
            assert resp.status == 200 and "token=" not in resp.url and "status=failed" in resp.url
            assert "s3cret-token" not in resp.read().decode()
        with opener.open(served.url + "/sessions", timeout=10) as resp:  # the cookie carries it
            assert resp.status == 200
    finally:
        served.close()
        store.close()


def test_as_user_shows_what_the_seed_rls_allows(data, page) -> None:
    dsn = data["dsn"]
    with authenticated_role(dsn):
        store = TraceStore(dsn, as_user=BOB)
        served = Served(create_app(store))
        try:
            page.goto(served.url + "/?window=all")
            shown = {r.get_attribute("data-trace-id") for r in page.locator("#traces tbody tr").all()}
            bobs = {str(trace_uuid(i)) for i in data["ids"][1::2]}
            assert shown == bobs | {
                str(trace_uuid(data["running"]))
            }  # the seed shows user-less traces to all
            assert page.goto(f"{served.url}/traces/{trace_uuid(data['ids'][0])}").status == 404  # alice's
        finally:
            served.close()
            store.close()


def test_the_command_binds_loopback_and_refuses_others_without_a_token(data) -> None:
    ui = str(Path(sys.executable).parent / "otel-pg-ui")
    refused = subprocess.run(
        [ui, "--dsn", data["dsn"], "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and "refusing to listen on 0.0.0.0 without --token" in refused.stderr
    port = free_port()
    proc = subprocess.Popen(
        [ui, "--dsn", data["dsn"], "--port", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and "serving" in proc.stdout.readline()
        deadline = time.monotonic() + 20
        status = 0
        while time.monotonic() < deadline:
            try:
                status = _get(f"http://127.0.0.1:{port}/healthz")[0]
                break
            except OSError:
                time.sleep(0.1)
        assert status == 200
        assert _get(f"http://127.0.0.1:{port}/?workflow=support")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_screenshot_of_a_trace(site, data, page) -> None:
    """The picture in the README: made from the real page (and looked at)."""
    page.goto(f"{site.url}/traces/{trace_uuid(data['ids'][2])}")
    shot = Path(__file__).parent / ".artifacts" / "explorer-trace.png"
    shot.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
