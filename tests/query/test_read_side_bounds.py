"""The read side on hostile shapes: a 1,000-deep parent chain and a parent cycle render (no
recursion, no hidden span), a crafted cursor is a 400, a 50,000-span trace is shown a bounded window
at a time (page and JSON API), a statement timeout is a 504; text commands escape control
characters; the doctor is quiet on a fresh install."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from opentelemetry import trace as trace_api

from otel_pg_exporter import PostgresSpanExporter, install_schema, span_uuid, trace_uuid
from otel_pg_exporter.query.doctor import DoctorOptions, diagnose, exit_code
from otel_pg_exporter.query.trace_store import TraceStore, TraceStoreError
from otel_pg_exporter.terminal import for_terminal
from otel_pg_exporter.web.explorer.app import TRACE_PAGE_SPANS
from otel_pg_exporter.web.explorer.views import waterfall
from tests.helpers.support import Capture, Served, chat_attributes, served_explorer

DEPTH = 1000
WIDE = 50_000


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _chain(capture: Capture, depth: int) -> int:
    """A trace whose spans each have the previous one as parent, ``depth`` deep (explicit contexts:
    no Python recursion needed to make it)."""
    tracer = capture.tracer
    opened = [tracer.start_span("level 0")]
    for i in range(1, depth):
        opened.append(tracer.start_span(f"level {i}", context=trace_api.set_span_in_context(opened[-1])))
    for span in reversed(opened):
        span.end()
    return opened[0].get_span_context().trace_id


def _wide(capture: Capture, n: int) -> int:
    tracer = capture.tracer
    root = tracer.start_span("wide root")
    ctx = trace_api.set_span_in_context(root)
    for i in range(n - 1):
        tracer.start_span(f"step {i}", context=ctx).end()
    root.end()
    return root.get_span_context().trace_id


@pytest.fixture(scope="module")
def shapes(make_database) -> dict[str, Any]:
    dsn = make_database()
    install_schema(dsn)
    capture = Capture()
    exporter = PostgresSpanExporter(dsn, spool_dir="off", timeout_s=60)
    try:
        deep = _chain(capture, DEPTH)
        assert exporter.export(capture.take()).name == "SUCCESS"
        with capture.tracer.start_as_current_span("cycle a") as a:
            with capture.tracer.start_as_current_span("cycle b") as b:
                pass
        cycle = a.get_span_context().trace_id
        assert exporter.export(capture.take()).name == "SUCCESS"
        wide = _wide(capture, WIDE)
        spans = capture.take()
        for i in range(0, len(spans), 5000):
            assert exporter.export(spans[i : i + 5000]).name == "SUCCESS"
    finally:
        exporter.shutdown()
    # a hostile sender can make what the SDK cannot: a's parent is b, b's parent is a
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE spans SET parent_span_id = %s WHERE span_id = %s",
            (span_uuid(cycle, b.get_span_context().span_id), span_uuid(cycle, a.get_span_context().span_id)),
        )
    return {"dsn": dsn, "deep": deep, "cycle": cycle, "wide": wide}


@pytest.fixture(scope="module")
def site(shapes) -> Iterator[Served]:
    with served_explorer(shapes["dsn"]) as served:
        yield served


def test_a_thousand_deep_chain_renders(shapes, site) -> None:
    with TraceStore(shapes["dsn"]) as store:
        detail = store.get_trace(trace_uuid(shapes["deep"]))
    spans = detail.spans
    assert len(spans) == DEPTH and [s.depth for s in spans] == list(range(DEPTH))
    status, body = _get(f"{site.url}/traces/{trace_uuid(shapes['deep'])}")
    assert status == 200 and b"level 499" in body and b"level 500<" not in body
    status, body = _get(f"{site.url}/traces/{trace_uuid(shapes['deep'])}?offset=500")
    assert status == 200 and b"level 999" in body and b"depth-9" in body
    status, body = _get(f"{site.url}/api/traces/{trace_uuid(shapes['deep'])}")
    listed = json.loads(body)
    assert status == 200 and len(listed["spans"]) == DEPTH and listed["spans"][-1]["depth"] == DEPTH - 1


def test_a_parent_cycle_hides_no_span(shapes, site) -> None:
    with TraceStore(shapes["dsn"]) as store:
        detail = store.get_trace(trace_uuid(shapes["cycle"]))
    assert sorted(s.name for s in detail.spans) == ["cycle a", "cycle b"]
    (root,) = detail.roots  # the earlier span of the cycle becomes the root
    assert root.name == "cycle a" and [c.name for c in root.children] == ["cycle b"]
    status, body = _get(f"{site.url}/traces/{trace_uuid(shapes['cycle'])}")
    assert status == 200 and b"cycle a" in body and b"cycle b" in body


def test_a_fifty_thousand_span_trace_is_shown_a_window_at_a_time(shapes, site) -> None:
    tid = trace_uuid(shapes["wide"])
    status, body = _get(f"{site.url}/traces/{tid}")
    assert status == 200 and len(body) < 2_000_000
    text = body.decode()
    assert f"of {WIDE}" in text and f"({WIDE - TRACE_PAGE_SPANS} not shown)" in text
    assert text.count('class="span-row') == TRACE_PAGE_SPANS and "later spans" in text
    status, body = _get(f"{site.url}/traces/{tid}?offset={WIDE - 10}")
    assert status == 200 and body.decode().count('class="span-row') == 10 and "earlier spans" in body.decode()
    with TraceStore(shapes["dsn"]) as store:  # a window keeps the trace's time axis
        last = store.get_trace(tid, offset=WIDE - 10, limit=10)
    assert min(bar.left for bar in waterfall(last).values()) > 50
    status, body = _get(f"{site.url}/api/traces/{tid}")
    page = json.loads(body)
    assert status == 200 and len(page["spans"]) == 1000 and page["total_spans"] == WIDE
    assert page["next_offset"] == 1000 and len(body) < 2_000_000
    assert page["spans"][0]["child_spans_total"] == WIDE - 1 and len(page["spans"][0]["child_spans"]) == 100
    status, body = _get(f"{site.url}/api/traces/{tid}?offset=49500&limit=100000")  # capped
    page = json.loads(body)
    assert len(page["spans"]) == 500 and page["next_offset"] is None


def test_crafted_cursors_are_a_400(site) -> None:
    def cursor(document: Any) -> str:
        return "o." + base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    tid = "00000000-0000-0000-0000-000000000001"
    hostile = [
        cursor({"s": "cost", "v": {"d": "not a number"}, "id": tid}),
        cursor({"s": "cost", "v": {"d": "NaN"}, "id": tid}),
        cursor({"s": "tokens", "v": {"i": 10**40}, "id": tid}),
        "o." + base64.urlsafe_b64encode(b"[" * 20_000 + b"]" * 20_000).decode()[:400],
        "o." + base64.urlsafe_b64encode(b'{"s":' + b"[" * 5000 + b"]" * 5000 + b"}").decode(),
        "o." + "A" * 5000,
    ]
    for value in hostile:
        sort = "cost" if "cost" in value or len(value) > 1000 else "tokens"
        for path in ("/", "/api/traces"):
            status, _ = _get(f"{site.url}{path}?sort={sort}&cursor={value}")
            assert status == 400, (value[:40], path, status)


def test_a_statement_timeout_is_a_504(shapes) -> None:
    with served_explorer(shapes["dsn"], statement_timeout_ms=1) as served:
        status, body = _get(f"{served.url}/api/traces/{trace_uuid(shapes['wide'])}")
        assert status == 504 and "statement timeout" in json.loads(body)["error"]
    with TraceStore(shapes["dsn"], statement_timeout_ms=1) as store, pytest.raises(TraceStoreError):
        store.get_trace(trace_uuid(shapes["wide"]))


FORGED = "evil\x1b[2J\x1b[1;1H\nOK    seed_indexes   all fine\u202e"


def test_text_output_escapes_control_characters(make_database, tmp_path) -> None:
    dsn = make_database()
    install_schema(dsn)
    capture = Capture()
    with capture.tracer.start_as_current_span(
        "chat",
        attributes=chat_attributes(10, 5, **{"gen_ai.request.model": FORGED, "gen_ai.workflow.name": FORGED}),
    ):
        pass
    exporter = PostgresSpanExporter(dsn, spool_dir="off")
    assert exporter.export(capture.take()).name == "SUCCESS"
    exporter.shutdown()
    env = {"OTEL_EXPORTER_POSTGRES_DSN": dsn, "OTEL_EXPORTER_POSTGRES_SPOOL_DIR": str(tmp_path), "PATH": ""}
    for command in ("doctor_main", "report_main"):
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import sys; from otel_pg_exporter.commands.cli import {command} as m; sys.exit(m([]))",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert "\x1b" not in out.stdout and "\u202e" not in out.stdout, command
        assert "evil\\x1b[2J" in out.stdout, command  # shown, escaped
        assert not any(line.startswith("OK    seed_indexes   all fine") for line in out.stdout.splitlines())
    assert for_terminal("a\nb\tc\x9b") == "a\\x0ab\\x09c\\x9b"


def test_the_doctor_is_quiet_on_a_fresh_install(make_database, tmp_path) -> None:
    dsn = make_database()
    install_schema(dsn)
    findings = diagnose(dsn, options=DoctorOptions(spool_dir=str(tmp_path)))
    assert exit_code(findings) == 0, [f for f in findings if f.status != "ok"]
    retention = next(f for f in findings if f.name == "retention_runs")
    assert retention.status == "ok" and retention.data == {"never_run": True}
    # once something is old enough to be swept, never having swept it is worth a warning
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO traces (execution_id, workflow_id, status, started_at) "
            "VALUES ('old-run', 'wf', 'completed', now() - interval '200 days')"
        )
    findings = diagnose(dsn, options=DoctorOptions(spool_dir=str(tmp_path)))
    retention = next(f for f in findings if f.name == "retention_runs")
    assert retention.status == "warn" and "older than 90 days" in retention.detail
