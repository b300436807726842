"""The benchmark script runs (tiny sizes). Nothing is timed here: speed lives in ``python -m bench``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke_mode_runs_every_phase(pg_server_dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "OTEL_PG_BENCH_DSN": pg_server_dsn}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["mode"] == "smoke"
    assert result["e2e"]["postgres"]["stored"] == result["e2e"]["postgres"]["spans"]  # every span landed
    e2e = result["e2e"]
    assert e2e["otlp"]["spans"] == e2e["noop"]["spans"] and e2e["otlp"]["app_cpu_us_per_span"] > 0
    # the test server is on this machine, so its CPU is read (at smoke sizes a few clock ticks,
    # possibly none: nothing is timed here)
    assert e2e["floor"]["available"] and e2e["postgres"]["pg_cpu_us_per_span"] >= 0
    assert e2e["floor"]["rows"] == e2e["postgres"]["stored"] and "pg_cpu_vs_floor" in e2e
    assert "in-app CPU per span, ours / OTLP" in proc.stdout
    gateway = result["gateway"]  # the workload over OTLP/HTTP through otel-pg-gateway: every span stored
    assert gateway["stored"] == gateway["spans"] and gateway["gateway_cpu_us_per_span"] >= 0
    assert "official exporter -> otel-pg-gateway" in proc.stdout
    burst = result["burst"]  # Collector-sized requests: every span of every request stored
    assert burst["stored"] == burst["spans_per_request"] * burst["requests"] and set(burst["statuses"]) == {200}
    assert burst["big_bodies"]["small_ok"] == burst["big_bodies"]["small_requests"]
    assert "Collector burst" in proc.stdout
    assert result["writer"]["ours"]["stored"] == result["writer"]["ours"]["spans"]
    assert result["memory"]["stored"] == result["memory"]["spans"]
    assert result["spooling"]["spooled"] > 0 and result["spooling"]["ratio"] > 0
    assert "app span creation while spooling" in proc.stdout
    assert result["doctor"]["spans"] >= 1000 and result["doctor"]["findings"] > 10
    assert result["explorer"]["spans"] >= 1000 and len(result["explorer"]["seconds"]) == 9
    assert set(result["growth"]) == {"0", "1000"}
    assert result["scrub"]["with_scrubbing"] > 0 and result["scrub"]["without_scrubbing"] > 0
    assert result["profile"] and "function" in result["profile"][0]
    assert "end to end ratio" in proc.stdout and "writer vs naive" in proc.stdout
    for order in ("spans_first", "logs_first"):  # every LLM row got its logged content, either order
        assert result["logs"][order]["llm_rows_with_content"] == result["logs"]["traces"]
    rt = result["retention"]
    assert rt["old_spans_left"] == 0 and rt["spans_removed"] == rt["old_spans"]
    assert rt["export_during_ms"]["n"] > 0 and rt["exporter_failed_batches"] == 0
