"""otel-pg-report on a populated database, in text, JSON and HTML; the HTML chart renders in Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from otel_pg_exporter import PostgresSpanExporter, install_schema
from tests.helpers.scenarios import AS_OF, load_history
from tests.helpers.support import CHROMIUM_FLAGS, Capture

CLI = [sys.executable, "-c", "from otel_pg_exporter.commands.cli import report_main as m; raise SystemExit(m())"]


@pytest.fixture
def populated(make_database) -> str:
    dsn = make_database()
    install_schema(dsn)
    load_history(dsn, 42, noise=0.05)
    _odd_calls(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO otel_budgets (scope, scope_value, monthly_limit) VALUES ('all', NULL, 1)")
    return dsn


def _odd_calls(dsn: str) -> None:
    """Yesterday: three calls to a model no price list knows, one call refused without usage."""
    capture = Capture()
    ns = int(datetime.combine(AS_OF - timedelta(days=1), time(15), tzinfo=timezone.utc).timestamp() * 1e9)
    calls = [("my-private-model-v9", {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5})] * 3
    for model, usage in [*calls, ("gpt-4o-mini", {})]:
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.provider.name": "openai",
        }
        span = capture.tracer.start_span("chat", start_time=ns, attributes={**attrs, **usage})
        span.end(end_time=ns + 10**9)
    exporter = PostgresSpanExporter(dsn)
    assert exporter.export(capture.take()).name == "SUCCESS"
    exporter.shutdown()


def test_unpriced_models_and_calls_without_usage_are_listed_apart(populated) -> None:
    out = _run("--dsn", populated, "--as-of", AS_OF.isoformat(), "--days", "3").stdout
    unpriced = out.split("unpriced models")[1].split("calls without token usage")[0]
    no_usage = out.split("calls without token usage")[1].split("budgets")[0]
    assert "my-private-model-v9" in unpriced and "3 calls" in unpriced and "in 30 / out 15" in unpriced
    assert "gpt-4o-mini" not in unpriced
    assert "gpt-4o-mini" in no_usage and "1 calls" in no_usage and "my-private" not in no_usage
    data = json.loads(_run("--dsn", populated, "--as-of", AS_OF.isoformat(), "--format", "json").stdout)
    assert [(r["model"], r["calls"]) for r in data["unpriced_models"]] == [("my-private-model-v9", 3)]
    assert [(r["model"], r["calls"]) for r in data["no_usage_calls"]] == [("gpt-4o-mini", 1)]


def test_short_history_says_so_instead_of_a_zero_width_range(make_database) -> None:
    dsn = make_database()
    install_schema(dsn)
    load_history(dsn, 1, noise=0)
    out = _run("--dsn", dsn, "--as-of", AS_OF.isoformat(), "--days", "3", "--horizon", "2").stdout
    month = out.split("this month:")[1].split("\n")[0]
    assert "from 1 day of history: too few for a range" in month and "range 0" not in month
    forecast_rows = [ln for ln in out.splitlines() if ln[:10] > AS_OF.isoformat() and ln[:4] == "2026"]
    assert len(forecast_rows) == 2 and not any("[" in ln or "┆" in ln for ln in forecast_rows)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_text_and_json(populated) -> None:
    text = _run("--dsn", populated, "--as-of", AS_OF.isoformat(), "--days", "14", "--horizon", "7")
    assert text.returncode == 0, text.stderr
    out = text.stdout
    for section in (
        "cost by day",
        "this month:",
        "top workflows",
        "top models",
        "unpriced models",
        "budgets",
    ):
        assert section in out
    assert "support" in out and "BREACHED" in out and "█" in out and "░" in out
    chart = out.split("cost by day")[1].split("this month:")[0]
    assert chart.count("█") and len([ln for ln in chart.splitlines() if ln[:4] == "2026"]) == 14 + 7
    assert "range" in out.split("this month:")[1].split("\n")[0]  # 42 days of history: a real band
    js = _run("--dsn", populated, "--as-of", AS_OF.isoformat(), "--format", "json")
    data = json.loads(js.stdout)
    assert len(data["history"]) == 30 and len(data["forecast"]) == 14  # the defaults
    short = json.loads(
        _run(
            "--dsn",
            populated,
            "--as-of",
            AS_OF.isoformat(),
            "--format",
            "json",
            "--days",
            "9",
            "--horizon",
            "3",
        ).stdout
    )
    assert len(short["history"]) == 9 and len(short["forecast"]) == 3
    assert short["history"][-1]["day"] == AS_OF.isoformat()
    assert data["top_workflows"][0]["name"] == "support"
    assert data["budgets"][0]["breached"] is True
    assert data["month"]["projected_total"] >= data["month"]["month_to_date"]


def test_html_chart_renders_in_headless_chromium(populated, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    proc = _run("--dsn", populated, "--as-of", AS_OF.isoformat(), "--html", str(page))
    assert proc.returncode == 0, proc.stderr
    content = page.read_text()
    assert (
        "<svg" in content
        and "<script" not in content
        and "http" not in content.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )  # self-contained
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is needed for this test: apt-get install chromium (.ci/run does)"
    flags = ["--headless", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert (
        'class="history"' in dom.stdout and 'class="forecast"' in dom.stdout and 'class="band"' in dom.stdout
    )
    shot = tmp_path / "report.png"
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", "--window-size=1000,700", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 10_000  # a rendered chart, not a blank page
    keep = Path(__file__).parent / ".artifacts"
    keep.mkdir(exist_ok=True)
    shutil.copy(shot, keep / "report.png")
