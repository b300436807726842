"""otel-pg-report on a populated database, in text, JSON and HTML; the HTML chart renders in Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from otel_pg_exporter import install_schema
from test_forecast import AS_OF, _load

CLI = [sys.executable, "-c", "from otel_pg_exporter.cli import report_main as m; raise SystemExit(m())"]


@pytest.fixture
def populated(make_database) -> str:
    dsn = make_database()
    install_schema(dsn)
    _load(dsn, 42, noise=0.05)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO otel_budgets (scope, scope_value, monthly_limit) VALUES ('all', NULL, 1)")
    return dsn


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
    js = _run("--dsn", populated, "--as-of", AS_OF.isoformat(), "--format", "json")
    data = json.loads(js.stdout)
    assert len(data["history"]) == 30 and len(data["forecast"]) == 14
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
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
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
