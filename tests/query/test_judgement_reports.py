"""Judgements on the read side: quality next to cost (report, /costs), and the JSONL export
(otel-pg-export, the explorer's download) round-tripping what is stored."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.request
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from otel_pg_exporter import PostgresSpanExporter, annotate, trace_uuid
from otel_pg_exporter.query.report import build_report, render_text
from tests.helpers.scenarios import ALICE, agent_run, database_with_users
from tests.helpers.support import Capture, served_explorer

#: the installed command (pyproject's entry point), as users run it
EXPORT = str(Path(sys.executable).parent / "otel-pg-export")


@pytest.fixture(scope="module")
def judged_runs(make_database) -> dict:
    dsn = database_with_users(make_database)
    capture = Capture()
    ids = [agent_run(capture, f"question {i}", user=ALICE, session="q", fail=i == 0) for i in range(4)]
    exporter = PostgresSpanExporter(dsn, spool_dir="off")
    assert exporter.export(capture.take()).name == "SUCCESS"
    exporter.shutdown()
    for i, label in ((0, "down"), (1, "down"), (2, "up")):
        annotate(
            f"{ids[i]:032x}", "thumbs", label=label, score=1.0 if label == "up" else 0.0, kind="user", dsn=dsn
        )
    annotate(
        f"{ids[0]:032x}",
        "correctness",
        score=0.2,
        kind="llm",
        correction={"answer": "the right answer"},
        dsn=dsn,
    )
    annotate(f"{ids[2]:032x}", "correctness", score=0.9, kind="llm", dsn=dsn)
    return {"dsn": dsn, "ids": ids}


def test_quality_next_to_cost(judged_runs) -> None:
    report = build_report(judged_runs["dsn"], days=7)
    (support,) = report["quality_workflows"]
    assert support["name"] == "support" and support["traces"] == 4 and support["judged"] == 3
    assert (support["thumbs"], support["thumbs_down"]) == (3, 2)
    assert support["thumbs_down_share"] == pytest.approx(Decimal(2) / 3)
    assert support["mean_score"] == pytest.approx(0.55)
    assert support["cost"] > 0 and support["calls"] == 4
    (model,) = report["quality_models"]
    assert model["name"] == "gpt-4o-mini" and model["judged"] == 3 and model["calls"] == 4
    assert [d["judged"] for d in report["quality_days"]] == [3]
    text = render_text(report)
    assert "quality by workflow" in text and "3/4 judged  67% thumbs down (2/3)  mean score 0.55" in text
    with (
        served_explorer(judged_runs["dsn"]) as site,
        urllib.request.urlopen(f"{site.url}/costs", timeout=10) as r,
    ):
        page = r.read().decode()
    assert 'id="quality_workflows"' in page and "67% thumbs down (2/3)" in page and "mean 0.55" in page


def _stored(dsn: str, trace_ids: list) -> dict:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM spans WHERE trace_id = ANY(%s) AND parent_span_id IS NULL", (trace_ids,))
        return {str(r["span_id"]): r for r in cur.fetchall()}


def test_jsonl_export_round_trips(judged_runs, tmp_path: Path) -> None:
    dsn, ids = judged_runs["dsn"], judged_runs["ids"]
    out = tmp_path / "thumbs-down.jsonl"
    proc = subprocess.run(
        [
            EXPORT,
            "--dsn",
            dsn,
            "--judged",
            "down",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 lines" in proc.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["trace_id"] for line in lines} == {str(trace_uuid(ids[0])), str(trace_uuid(ids[1]))}
    stored = _stored(dsn, [trace_uuid(ids[0]), trace_uuid(ids[1])])
    for line in lines:
        row = stored[line["span_id"]]
        assert line["input"] == row["inputs"] and line["output"] == row["outputs"]
        assert Decimal(line["cost"]) == row["cost"] and line["tokens"] == row["tokens"]
        assert line["workflow"] == "support" and line["status"] == row["status"]
    first = next(line for line in lines if line["trace_id"] == str(trace_uuid(ids[0])))
    by_name = {a["name"]: a for a in first["trace_annotations"]}
    assert by_name["thumbs"]["label"] == "down"
    assert by_name["correctness"]["correction"] == {"answer": "the right answer"}
    # the model calls of the same traces, and the explorer's download is the same file
    llm = subprocess.run(
        [
            EXPORT,
            "--dsn",
            dsn,
            "--judged",
            "down",
            "--spans",
            "llm",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = [json.loads(line) for line in llm.stdout.splitlines()]
    assert len(calls) == 2 and all(c["model"] == "gpt-4o-mini" and c["span_type"] == "llm" for c in calls)
    assert calls[0]["input"]["messages"][-1]["parts"][0]["content"].startswith("question")
    with served_explorer(dsn) as site:
        with urllib.request.urlopen(f"{site.url}/export.jsonl?judged=down&window=all", timeout=10) as r:
            assert r.headers["content-type"].startswith("application/x-ndjson")
            downloaded = r.read().decode()
    assert downloaded == out.read_text()
