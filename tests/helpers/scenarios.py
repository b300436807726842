"""Scenarios several test modules share: stored agent runs with users (read side, explorer), an
agent trace in arrival-order batches (store, pooler), a daily cost history (forecast, report). Built
with the real SDK; helpers only, no tests here."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone

import psycopg
from opentelemetry.trace import Status, StatusCode

from otel_pg_exporter import PostgresSpanExporter, install_schema
from tests.helpers.support import Capture, chat_attributes, messages

ALICE = uuid.UUID("00000000-0000-4000-8000-0000000a11ce")
BOB = uuid.UUID("00000000-0000-4000-8000-000000000b0b")


def agent_run(
    capture: Capture,
    question: str,
    *,
    user: uuid.UUID,
    session: str,
    model: str = "gpt-4o-mini",
    fail: bool = False,
    start: datetime | None = None,
) -> int:
    t = capture.tracer
    ns = int((start or datetime.now(timezone.utc)).timestamp() * 1e9)
    root = t.start_span(
        "support run",
        start_time=ns,
        attributes={
            "gen_ai.workflow.name": "support",
            "user.id": str(user),
            "session.id": session,
            "input.value": question,
            "output.value": f"answer to {question}",
        },
    )
    from opentelemetry.trace import set_span_in_context

    ctx = set_span_in_context(root)
    chat = t.start_span(
        "chat",
        context=ctx,
        start_time=ns + 1_000_000,
        attributes=chat_attributes(
            100,
            20,
            **{
                "gen_ai.request.model": model,
                "gen_ai.input.messages": messages(("system", "be brief"), ("user", question)),
                "gen_ai.output.messages": messages(("assistant", f"answer to {question}")),
            },
        ),
    )
    if fail:
        chat.set_status(Status(StatusCode.ERROR, "rate limited"))
        chat.set_attribute("error.type", "RateLimitError")
    chat.end(end_time=ns + 5_000_000)
    tool = t.start_span(
        "execute_tool lookup",
        context=ctx,
        start_time=ns + 6_000_000,
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"},
    )
    tool.end(end_time=ns + 7_000_000)
    if fail:
        root.set_status(Status(StatusCode.ERROR, "the model refused"))
    root.end(end_time=ns + 8_000_000)
    return root.get_span_context().trace_id


def database_with_users(make_database) -> str:
    """A database with the schema, the seed's RLS policies, and alice and bob in profiles."""
    dsn = make_database()
    install_schema(dsn, rls=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO profiles (id) VALUES (%s), (%s)", (ALICE, BOB))
    return dsn


@contextmanager
def authenticated_role(dsn: str) -> Iterator[None]:
    """Supabase's role for signed-in users, on plain PostgreSQL: SELECT on the tables, for the
    duration of a test (roles are cluster-wide; the grants are taken back)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') "
            "THEN CREATE ROLE authenticated NOLOGIN; END IF; END $$"
        )
        conn.execute("GRANT USAGE ON SCHEMA public TO authenticated")
        conn.execute("GRANT SELECT ON traces, spans TO authenticated")
        # what 010 grants when the role exists at install time (Supabase), and no DELETE
        conn.execute("GRANT SELECT, INSERT, UPDATE ON otel_annotations TO authenticated")
        conn.execute("GRANT SELECT ON spans_annotated TO authenticated")
    try:
        yield
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("REVOKE ALL ON traces, spans, otel_annotations, spans_annotated FROM authenticated")
            conn.execute("REVOKE USAGE ON SCHEMA public FROM authenticated")



def agent_trace(capture: Capture, calls: int = 2, name: str = "run") -> int:
    t = capture.tracer
    with t.start_as_current_span(name, attributes={"gen_ai.workflow.name": "wf-" + name}) as root:
        with t.start_as_current_span(
            "invoke_agent helper", attributes={"gen_ai.operation.name": "invoke_agent"}
        ):
            for i in range(calls):
                with t.start_as_current_span(
                    f"chat {i}",
                    attributes={
                        "gen_ai.operation.name": "chat",
                        "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": "gpt-4o",
                        "gen_ai.usage.input_tokens": 10 * (i + 1),
                        "gen_ai.usage.output_tokens": i + 1,
                        "gen_ai.usage.cost": 0.001 * (i + 1),
                    },
                ):
                    pass
    return root.get_span_context().trace_id



AS_OF = date(2026, 9, 14)  # a Monday


def true_cost(x: int, day: date) -> float:
    """Known shape: linear trend, weekends at 40 %."""
    return (2.0 + 0.05 * x) * (0.4 if day.isoweekday() >= 6 else 1.0)


def load_history(
    dsn: str,
    days: int,
    noise: float,
    workflow: str = "support",
    seed: int = 7,
    user: str | None = None,
    scale: float = 1.0,
) -> None:
    """One trace a day whose LLM call reports that day's cost (times ``scale``), exported through the
    SDK; ``user`` goes on the root as ``user.id``."""
    rng = random.Random(seed)
    capture = Capture()
    start = AS_OF - timedelta(days=days)
    for x in range(days):
        day = start + timedelta(days=x)
        cost = scale * true_cost(x, day) * (1 + rng.gauss(0, noise))
        ns = int(datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc).timestamp() * 1e9)
        root_attrs = {"gen_ai.workflow.name": workflow, **({"user.id": user} if user else {})}
        root = capture.tracer.start_span("run", start_time=ns, attributes=root_attrs)
        from opentelemetry.trace import set_span_in_context

        child = capture.tracer.start_span(
            "chat",
            context=set_span_in_context(root),
            start_time=ns,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.cost": max(cost, 0),
            },
        )
        child.end(end_time=ns + 10**9)
        root.end(end_time=ns + 2 * 10**9)
    exporter = PostgresSpanExporter(dsn)
    assert exporter.export(capture.take()).name == "SUCCESS"
    exporter.shutdown()


