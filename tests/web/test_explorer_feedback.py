"""Judging traces in the explorer, in a real headless Chromium: thumbs and comments from the span
pane and the trace header, badges and the "thumbs down" filter in the list, the review flow; and
the guards: read-only without --allow-annotations, the CSRF token, cross-site posts, hostile
comments inert, end users' feedback under RLS (--as-user)."""

from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from otel_pg_exporter import PostgresSpanExporter, trace_uuid
from tests.helpers.scenarios import ALICE, BOB, agent_run, authenticated_role, database_with_users
from tests.helpers.support import Capture, Served, served_explorer

HOSTILE = '<img src=x onerror="window.__pwned = 3"><script>window.__pwned = 4</script>'


@pytest.fixture(scope="module")
def judged(make_database) -> dict[str, Any]:
    dsn = database_with_users(make_database)
    capture = Capture()
    now = datetime.now(timezone.utc)
    failed = agent_run(capture, "refund please", user=ALICE, session="conv-f", fail=True, start=now)
    good = agent_run(capture, "opening hours", user=ALICE, session="conv-f", start=now - timedelta(minutes=1))
    other = agent_run(capture, "bob asks", user=BOB, session="conv-b", start=now - timedelta(minutes=2))
    with capture.tracer.start_as_current_span("tool only", attributes={"gen_ai.workflow.name": "no-model"}):
        pass
    exporter = PostgresSpanExporter(dsn, spool_dir="off")
    assert exporter.export(capture.take()).name == "SUCCESS"
    exporter.shutdown()
    return {"dsn": dsn, "failed": failed, "good": good, "other": other}


@pytest.fixture(scope="module")
def judging_site(judged) -> Iterator[Served]:
    with served_explorer(judged["dsn"], annotator="reviewer-ann") as served:
        yield served


def _post(url: str, fields: dict[str, str], headers: dict[str, str] | None = None) -> int:
    body = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _annotations(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT target_kind, name, label, score, explanation, annotator_kind, annotator, source"
            " FROM otel_annotations ORDER BY updated_at"
        ).fetchall()


def test_thumbs_down_with_a_comment_then_find_it(judging_site, judged, page) -> None:
    failed = trace_uuid(judged["failed"])
    page.goto(f"{judging_site.url}/traces/{failed}")
    assert page.locator("#span h2").inner_text().startswith("chat")  # the failed model call is selected
    page.fill("#span-feedback input[name=comment]", f"wrong refund policy {HOSTILE}")
    page.click("#span-feedback button[value=down]")
    page.wait_for_url(re.compile(rf"/traces/{failed}"))
    judgements = page.inner_text("#span-judgements")
    assert (
        "thumbs: down" in judgements and "wrong refund policy" in judgements and "reviewer-ann" in judgements
    )
    assert page.evaluate("window.__pwned") is None and page.evaluate("document.images.length") == 0
    # a label and a score on the trace itself
    page.fill("#trace-feedback input[name=name]", "correctness")
    page.fill("#trace-feedback input[name=score]", "0.2")
    page.fill("#trace-feedback input[name=label]", "incorrect")
    page.click("#trace-feedback button[name=save]")
    assert "correctness: incorrect" in page.inner_text("#trace-judgements")
    rows = _annotations(judged["dsn"])
    assert rows[0][:6] == ("span", "thumbs", "down", 0.0, f"wrong refund policy {HOSTILE}", "human")
    assert rows[0][6:] == ("reviewer-ann", "explorer")
    assert rows[1][:4] == ("trace", "correctness", "incorrect", 0.2)
    # the list: a badge on the row, and the trace under "thumbs down"
    page.goto(f"{judging_site.url}/?judged=down")
    assert page.locator("#traces tbody tr").count() == 1
    row = page.locator("#traces tbody tr").first
    assert row.get_attribute("data-trace-id") == str(failed)
    assert "thumbs: down" in row.inner_text()
    page.goto(f"{judging_site.url}/?min_score=0.1&max_score=0.3")
    assert [
        page.locator("#traces tbody tr").nth(i).get_attribute("data-trace-id")
        for i in range(page.locator("#traces tbody tr").count())
    ] == [str(failed)]
    # the workflow name links to the trace
    page.goto(f"{judging_site.url}/?workflow=support")
    page.locator("#traces tbody tr").first.locator("a.workflow-link").click()
    assert page.url.endswith(f"/traces/{failed}")
    assert page.errors == []


def test_review_one_trace_after_another(judging_site, judged, page) -> None:
    page.goto(f"{judging_site.url}/?workflow=support&window=24h")
    page.click("#review")
    first = page.locator("#review-trace h1 a").get_attribute("href")
    page.click("#trace-feedback button[value=up]")  # judged: on to the next trace
    second = page.locator("#review-trace h1 a").get_attribute("href")
    assert first != second and first is not None and second is not None
    page.click("#review-next")  # skipped without a judgement
    third = page.locator("#review-trace h1 a").get_attribute("href")
    assert len({first, second, third}) == 3
    assert page.locator("#review-next").count() == 0  # the last of the filter
    with psycopg.connect(judged["dsn"]) as conn:
        thumbs_up = conn.execute(
            "SELECT trace_id FROM otel_annotations WHERE name = 'thumbs' AND label = 'up'"
        ).fetchall()
    assert [f"/traces/{r[0]}" for r in thumbs_up] == [first]


def test_no_usage_header(judging_site, judged, page) -> None:
    page.goto(f"{judging_site.url}/?workflow=no-model")
    page.click("a.trace-link")
    assert page.inner_text("#trace-cost") == "no usage"


def test_forms_are_guarded(judging_site, judged, make_database) -> None:
    failed = str(trace_uuid(judged["failed"]))
    form = {"target_kind": "trace", "target": failed, "thumbs": "down", "next": "/"}
    before = _annotations(judged["dsn"])
    # no token, a wrong token, a cookie without the form's copy, a cross-site origin
    assert _post(f"{judging_site.url}/annotate", form) == 403
    assert (
        _post(
            f"{judging_site.url}/annotate", {**form, "csrf": "x" * 32}, {"Cookie": "otel_pg_csrf=" + "y" * 32}
        )
        == 403
    )
    good = "z" * 32
    assert (
        _post(
            f"{judging_site.url}/annotate",
            {**form, "csrf": good},
            {"Cookie": f"otel_pg_csrf={good}", "Origin": "http://evil.example"},
        )
        == 403
    )
    assert (
        _post(
            f"{judging_site.url}/annotate",
            {**form, "csrf": good, "comment": "x" * 200_000},
            {"Cookie": f"otel_pg_csrf={good}"},
        )
        == 413
    )
    # an open redirect is not one
    request = urllib.request.Request(
        f"{judging_site.url}/annotate",
        data=urllib.parse.urlencode({**form, "csrf": good, "next": "//evil.example/x"}).encode(),
        method="POST",
        headers={"Cookie": f"otel_pg_csrf={good}", "Content-Type": "application/x-www-form-urlencoded"},
    )

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.build_opener(NoRedirect).open(request, timeout=10)
    assert answer.value.code == 303 and answer.value.headers["location"] == "/"
    after = _annotations(judged["dsn"])
    assert ("trace", "thumbs", "down") in {r[:3] for r in after} and len(after) <= len(before) + 1
    # the explorer without --allow-annotations: no form, and a forged POST refused
    with served_explorer(judged["dsn"]) as read_only:
        with urllib.request.urlopen(f"{read_only.url}/traces/{failed}", timeout=10) as resp:
            html = resp.read().decode()
        assert 'form class="feedback"' not in html and "/annotate" not in html
        assert (
            _post(f"{read_only.url}/annotate", {**form, "csrf": good}, {"Cookie": f"otel_pg_csrf={good}"})
            == 403
        )
    assert _annotations(judged["dsn"]) == after


def test_as_user_writes_the_users_own_feedback_under_rls(judged, page) -> None:
    dsn = judged["dsn"]
    with authenticated_role(dsn), served_explorer(dsn, annotator="ignored", as_user=ALICE) as site:
        page.goto(f"{site.url}/traces/{trace_uuid(judged['good'])}")
        page.click("#trace-feedback button[value=up]")
        assert "thumbs: up" in page.inner_text("#trace-judgements")
        # bob's trace is not visible to alice, and a forged post on it is refused by RLS
        response = page.goto(f"{site.url}/traces/{trace_uuid(judged['other'])}")
        assert response.status == 404
        token = page.context.cookies()[0]["value"]
        status = _post(
            f"{site.url}/annotate",
            {
                "target_kind": "trace",
                "target": str(trace_uuid(judged["other"])),
                "thumbs": "down",
                "csrf": token,
            },
            {"Cookie": f"otel_pg_csrf={token}"},
        )
        assert status == 403
    with psycopg.connect(dsn) as conn:
        mine = conn.execute(
            "SELECT annotator_kind, annotator, label FROM otel_annotations WHERE trace_id = %s",
            (trace_uuid(judged["good"]),),
        ).fetchall()
        theirs = conn.execute(
            "SELECT count(*) FROM otel_annotations WHERE trace_id = %s", (trace_uuid(judged["other"]),)
        ).fetchone()
    assert ("user", str(ALICE), "up") in mine and theirs == (0,)
