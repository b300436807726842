"""otel-pg-recompute-costs: re-pricing history exactly once, in chunks, never touching provided costs."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from otel_pg_exporter import PostgresSpanExporter, install_schema
from otel_pg_exporter.pipeline.pricing import Pricer, load_custom_prices
from otel_pg_exporter.store.backfill import recompute_costs
from tests.helpers.support import fetch_spans, fetch_trace

PRICE_A = {"acme/model-x": {"input": 1, "output": 2}}
PRICE_B = {"acme/model-x": {"input": 3, "output": 4}}


@pytest.fixture
def db_dsn(make_database) -> str:
    """A database of its own: a backfill walks every span it holds."""
    dsn = make_database()
    install_schema(dsn)
    return dsn


def _trace(capture) -> int:
    t = capture.tracer
    usage = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "acme",
        "gen_ai.request.model": "model-x",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 500,
    }
    with t.start_as_current_span("run") as root:
        with t.start_as_current_span("a", attributes=usage):
            pass
        with t.start_as_current_span("b", attributes=usage):
            pass
        with t.start_as_current_span("paid", attributes={**usage, "gen_ai.usage.cost": 0.25}):
            pass
    return root.get_span_context().trace_id


def test_recompute_after_a_price_change(db_dsn, capture, tmp_path) -> None:
    exporter = PostgresSpanExporter(db_dsn, prices=PRICE_A)
    tid = _trace(capture)
    exporter.export(capture.take())
    exporter.shutdown()
    assert fetch_trace(db_dsn, tid)["total_cost"] == Decimal("0.254")  # 2 × 0.002 + 0.25

    # a dry run reports and changes nothing
    dry = recompute_costs(db_dsn, dry_run=True, pricer=Pricer(load_custom_prices(PRICE_B)))
    assert dry.changed >= 2
    assert fetch_trace(db_dsn, tid)["total_cost"] == Decimal("0.254")

    report = recompute_costs(db_dsn, chunk=1, pricer=Pricer(load_custom_prices(PRICE_B)))
    assert report.changed >= 2
    rows = fetch_spans(db_dsn, tid)
    assert rows["a"]["cost"] == rows["b"]["cost"] == Decimal("0.005")  # 1000×3 + 500×4 per million
    assert rows["paid"]["cost"] == Decimal("0.25")  # provided: never touched
    assert rows["paid"]["metadata"]["cost"]["status"] == "provided"
    assert rows["a"]["metadata"]["cost"]["price"]["per_million"] == {"input": "3", "output": "4"}
    assert fetch_trace(db_dsn, tid)["total_cost"] == Decimal("0.26")

    # idempotent: a second run changes nothing, totals stay exact
    again = recompute_costs(db_dsn, pricer=Pricer(load_custom_prices(PRICE_B)))
    assert again.changed == 0
    assert fetch_trace(db_dsn, tid)["total_cost"] == Decimal("0.26")


RECOMPUTE = [
    sys.executable,
    "-c",
    "from otel_pg_exporter.commands.cli import recompute_costs_main as m; raise SystemExit(m())",
]


def _stored_at_price_a(db_dsn: str, capture, folder: Path) -> tuple[int, Path]:
    """A trace stored at PRICE_A, and a prices file that makes model-x ten times dearer."""
    exporter = PostgresSpanExporter(db_dsn, prices=PRICE_A)
    tid = _trace(capture)
    exporter.export(capture.take())
    exporter.shutdown()
    prices = folder / "prices.json"
    prices.write_text(json.dumps({"acme/model-x": {"input": 10, "output": 10}}))
    return tid, prices


def test_cli_with_a_prices_file_and_date_window(db_dsn, capture, tmp_path) -> None:
    tid, prices = _stored_at_price_a(db_dsn, capture, tmp_path)
    cli = RECOMPUTE
    future = subprocess.run(
        [*cli, "--dsn", db_dsn, "--prices", str(prices), "--since", "2999-01-01"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert future.returncode == 0, future.stderr
    assert "scanned 0 model-call spans" in future.stdout
    proc = subprocess.run(
        [*cli, "--dsn", db_dsn, "--prices", str(prices)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert fetch_spans(db_dsn, tid)["a"]["cost"] == Decimal("0.015")
    with psycopg.connect(db_dsn) as conn:
        total = conn.execute(
            "SELECT total_cost FROM traces WHERE trace_id = %s", (fetch_trace(db_dsn, tid)["trace_id"],)
        ).fetchone()[0]
    assert total == Decimal("0.28")


def test_cli_dry_run_until_and_chunk(db_dsn, capture, tmp_path) -> None:
    """--dry-run changes nothing but says what would change; --until before the spans selects
    none; --chunk 1 (one span per transaction) reaches the same result as one big chunk."""
    tid, prices = _stored_at_price_a(db_dsn, capture, tmp_path)
    cli = RECOMPUTE

    def run(*args: str) -> str:
        proc = subprocess.run(
            [*cli, "--dsn", db_dsn, "--prices", str(prices), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    before = fetch_spans(db_dsn, tid)["a"]["cost"]
    dry = run("--dry-run")
    assert "would change 2 spans" in dry and fetch_spans(db_dsn, tid)["a"]["cost"] == before
    assert "scanned 0 model-call spans" in run("--until", "2000-01-01")
    assert fetch_spans(db_dsn, tid)["a"]["cost"] == before
    assert "changed 2 spans" in run("--chunk", "1")
    assert fetch_spans(db_dsn, tid)["a"]["cost"] == Decimal("0.015")
    assert fetch_trace(db_dsn, tid)["total_cost"] == Decimal("0.28")
