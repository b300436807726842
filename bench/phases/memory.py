"""Peak RSS of an application exporting a long run (measured in a child process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_pg_exporter import PostgresSpanExporter

from ..registry import Row, Run, verdict
from ..support import BATCH, count_spans, truncate
from ..workload import SPANS_PER_TRACE, make_trace


def peak_rss(dsn: str, spans: int, payload: int) -> dict[str, Any]:
    """Peak RSS of a separate process exporting ``spans`` spans end to end."""
    code = (
        "import sys\n"
        "from bench.phases.memory import memory_child\n"
        "memory_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, dsn, str(spans), str(payload)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _proc_status_mib(field: str) -> float:
    """VmHWM / VmRSS of this process (ru_maxrss would include the parent's peak across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def memory_child(dsn: str, spans: int, payload: int) -> None:
    exporter = PostgresSpanExporter(dsn, spool_dir="off")
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=8192, max_export_batch_size=BATCH)
    )
    tracer = provider.get_tracer("bench")
    baseline = _proc_status_mib("VmRSS")
    traces = spans // SPANS_PER_TRACE
    for i in range(traces):
        make_trace(tracer, i, payload, ("otel",))
        if i % 1024 == 1023:  # keep the producer within the queue: no SDK drops
            provider.force_flush()
    provider.force_flush()
    provider.shutdown()
    peak = _proc_status_mib("VmHWM")
    print(
        json.dumps(
            {
                "spans": traces * SPANS_PER_TRACE,
                "stored": count_spans(dsn),
                "peak_rss_mib": round(peak, 1),
                "rss_before_mib": round(baseline, 1),
            }
        )
    )


def render_memory(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "memory" not in r:
        return rows
    mem = r["memory"]
    rows.append(
        (
            f"peak RSS, {mem['spans']:,}-span run",
            f"{mem['peak_rss_mib']:.0f} MiB (idle {mem['rss_before_mib']:.0f})",
            verdict("peak_rss_mib", mem["peak_rss_mib"]),
        )
    )
    return rows


def run(run: Run) -> dict[str, Any]:
    truncate(run.dsn)
    return {"memory": peak_rss(run.dsn, run.size["memory_spans"], run.payload)}
