"""``otel-pg traces|trace|span|failures``: the MCP server's questions from a shell, with control
characters of stored text escaped and JSON on request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from opentelemetry.trace import Status, StatusCode

from otel_pg_exporter import PostgresSpanExporter
from tests.helpers.support import Capture

OTEL_PG = str(Path(sys.executable).parent / "otel-pg")


def _run(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OTEL_PG, "--dsn", dsn, *args], capture_output=True, text=True, timeout=60)


def test_list_read_a_trace_and_a_span_escaping_what_is_stored(db_dsn: str) -> None:
    capture = Capture()
    hostile = "refund \x1b[31mNOW\x1b[0m\x07"
    with capture.tracer.start_as_current_span(
        "shell run", attributes={"gen_ai.workflow.name": "shell-cli", "input.value": hostile}
    ) as root:
        with capture.tracer.start_as_current_span(
            "chat", attributes={"gen_ai.operation.name": "chat"}
        ) as chat:
            chat.set_attribute("error.type", "<class 'openai.APITimeoutError'>")
            chat.set_status(Status(StatusCode.ERROR, "timed out \x1b[2J"))
    exporter = PostgresSpanExporter(db_dsn)
    try:
        assert exporter.export(capture.take()).name == "SUCCESS"
    finally:
        exporter.shutdown()
    trace_hex = format(root.get_span_context().trace_id, "032x")

    listing = _run(db_dsn, "traces", "--since", "all", "--workflow", "shell-cli")
    assert listing.returncode == 0 and "shell-cli" in listing.stdout
    assert "\x1b" not in listing.stdout and "\\x1b[31mNOW" in listing.stdout  # shown, not obeyed

    tree = _run(db_dsn, "trace", trace_hex)
    assert tree.returncode == 0 and "llm 'chat' [failed]" in tree.stdout
    assert "openai.APITimeoutError" in tree.stdout and "\x1b" not in tree.stdout and "\x07" not in tree.stdout

    data = json.loads(_run(db_dsn, "--json", "trace", trace_hex).stdout)
    assert data["spans_total"] == 2 and data["next_offset"] is None
    failures = json.loads(_run(db_dsn, "--json", "failures", "--since", "all").stdout)["failures"]
    timeouts = next(f for f in failures if f["error_type"] == "openai.APITimeoutError")
    span = json.loads(_run(db_dsn, "--json", "span", timeouts["example_spans"][0]).stdout)
    assert span["type"] == "llm" and span["status"] == "failed" and span["error"].startswith("timed out")

    missing = _run(db_dsn, "trace", "0" * 32)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "no such trace" in missing.stderr
