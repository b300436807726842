"""``otel-pg-mcp``: a Model Context Protocol server over the trace store, for coding agents.

Every tool is one ``TraceStore`` call (or one read-only SQL query, ``query.sql_tool``) rendered
compact by ``query.outline``: bounded, with "call again with …" when cut. Tools raise a
``TraceStoreError`` for a bad argument or an unreachable database; the SDK turns it into a tool error
the agent reads. Served over stdio (what desktop agents launch) or streamable HTTP (the same
token and Host rules as the explorer: ``web.auth``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from ...errors import OtelPgError
from ...pipeline.annotations import Annotation, AnnotatorKind
from ...query import outline as view
from ...query import questions
from ...query.sql_tool import MAX_BYTES, MAX_ROWS, TIMEOUT_MS, run_read_only
from ...query.trace_store import SORTS, STATUSES, TraceStore, TraceStoreError

Tool = TypeVar("Tool", bound=Callable[..., Any])


def _answering(fn: Tool) -> Tool:
    """Our own refusals (a bad argument, nothing found, the database away) reach the agent as a tool
    error with their one-line reason; anything else stays a crash the SDK reports without details."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OtelPgError as exc:
            raise ToolError(str(exc)) from None

    return wrapper  # type: ignore[return-value]


INSTRUCTIONS = (
    "Traces of an LLM application stored in PostgreSQL (one trace = one request or agent run; its "
    "spans = model calls, tools, agents, retrievals). Start with search_traces (or failures to see what "
    "goes wrong most), then get_trace for one trace's span tree, then get_span for one span whole. "
    "Times are UTC, durations milliseconds, costs USD."
)


@dataclass(frozen=True)
class McpOptions:
    """``sql_dsn``: the connection of ``query_sql`` (a read-only role; None: the tool is not offered);
    ``as_user``: every read as this profile under row level security."""

    sql_dsn: str | None = None
    schema: str | None = None
    as_user: str | None = None
    #: the store judgements are written through (``--allow-annotations``; None: no annotate tool)
    annotations: TraceStore | None = None
    annotator: str = "mcp-agent"


def build_server(store: TraceStore, options: McpOptions | None = None) -> MCPServer:
    """The MCP server over ``store`` (its ``as_user``, if any, applies to every tool)."""
    opts = options or McpOptions()
    server = MCPServer("otel-pg", instructions=INSTRUCTIONS)

    def tool(description: str) -> Callable[[Tool], Tool]:
        return lambda fn: server.tool(description=description)(_answering(fn))

    @tool(
        "Find traces, newest first (or by cost, duration, tokens). since: a window (15m, 1h, 24h, 7d, "
        "30d, today, week, month, all) or an ISO date. Filters: workflow, user (id), status "
        f"({'/'.join(STATUSES)}), model (any span's), text (in the trace's question), min_cost_usd, "
        f"min_duration_ms. sort: "
        f"{'/'.join(SORTS)}. Returns compact rows and a cursor for the next (older) page."
    )
    def search_traces(
        since: str = "24h",
        workflow: str | None = None,
        user: str | None = None,
        status: str | None = None,
        model: str | None = None,
        text: str | None = None,
        sort: str = "started_at",
        cursor: str | None = None,
        limit: int = 20,
        min_cost_usd: float | None = None,
        min_duration_ms: int | None = None,
    ) -> dict[str, Any]:
        found = questions.search(
            store,
            since=since,
            workflow=workflow,
            user=user,
            status=status,
            model=model,
            text=text,
            sort=sort,
            cursor=cursor,
            limit=max(1, min(limit, 50)),
            min_cost=min_cost_usd,
            min_duration_ms=min_duration_ms,
        )
        older = found["next_cursor"]
        return {**found, "more": f"call again with cursor={older!r} for older traces" if older else None}

    @tool(
        "One trace as an indented outline of its spans (type, name, status, ms, model, tokens, USD, "
        "error, a short excerpt of the messages), depth first. Large traces are cut: the last line "
        "says which offset to ask next. Use get_span for one span's full content."
    )
    def get_trace(trace_id: str, offset: int = 0, content_chars: int = view.CONTENT_CHARS) -> dict[str, Any]:
        return questions.trace(store, trace_id, offset=offset, content_chars=min(content_chars, 2000))

    @tool(
        "One span whole: type, timing, model, provider, tokens, cost, the input and output messages, "
        "error type, message and stack, evaluation. full=true returns large fields uncut and the raw "
        "metadata (attributes, events)."
    )
    def get_span(span_id: str, full: bool = False) -> dict[str, Any]:
        return questions.span(store, span_id, full=full)

    @tool("Conversations (sessions): traces grouped by session id, most recent first.")
    def sessions(since: str = "7d", limit: int = 20) -> dict[str, Any]:
        found = store.sessions(since=view.since_of(since), limit=max(1, min(limit, 100)))
        return {"sessions": [view.plain(s.__dict__) for s in found]}

    @tool("One session's traces in order: each question, the answer, status, cost.")
    def get_session(session_id: str) -> dict[str, Any]:
        turns = store.session(session_id, limit=100)
        if not turns:
            raise TraceStoreError("no such session (or not visible to this server's user)")
        return {
            "turns": [
                {
                    "trace_id": str(t.trace.trace_id),
                    "status": t.trace.status,
                    "started_at": view.plain(t.trace.started_at),
                    "cost_usd": float(t.trace.cost or 0),
                    "question": view.cut(t.query, 2000),
                    "answer": view.content_text(t.answer, 2000),
                }
                for t in turns
            ]
        }

    @tool(
        "Spend in USD: per day over the last `days`, a forecast `horizon` days ahead with a range, "
        "month to date and projection, top workflows, models and users, unpriced models, budgets."
    )
    def cost_summary(days: int = 30, horizon: int = 14) -> dict[str, Any]:
        report = store.cost_report(days=max(1, min(days, 366)), horizon=max(1, min(horizon, 90)))
        return view.plain(report)

    @tool(
        "What fails most: error types of failed spans over a window (since: 24h, 7d, …), with the "
        "number of spans and traces, when last seen, the latest message and span ids for get_span."
    )
    def failures(since: str = "24h", limit: int = 10) -> dict[str, Any]:
        return questions.failures(store, since=since, limit=max(1, min(limit, 50)))

    if opts.sql_dsn is not None:

        @tool(
            "Read-only SQL over the trace tables (traces, spans; jsonb columns tokens, metadata, inputs, "
            "outputs). One query (SELECT / WITH … SELECT), run in a read-only transaction as a role that "
            f"cannot write, {TIMEOUT_MS} ms at most, {MAX_ROWS} rows and {MAX_BYTES} bytes returned at "
            "most: aggregate or add LIMIT. Times are UTC (timestamp without time zone)."
        )
        def query_sql(sql: str) -> dict[str, Any]:
            result = run_read_only(opts.sql_dsn, sql, schema=opts.schema, as_user=opts.as_user)
            return {
                "columns": result.columns,
                "rows": result.rows,
                "truncated": result.truncated,
                "reason": result.reason,
            }

    @tool(
        "Judgements (annotations) of a trace (and its spans), a span or a session, newest first: name, "
        "label, score, explanation, correction, annotator kind (human, user = the app's end user, llm, "
        "code). Give one of trace_id / span_id / session_id, or none for the latest of all."
    )
    def annotations(
        trace_id: str | None = None,
        span_id: str | None = None,
        session_id: str | None = None,
        name: str | None = None,
        label: str | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        return {
            "annotations": [
                view.plain(a)
                for a in store.annotations(
                    trace_id=trace_id,
                    span_id=span_id,
                    session_id=session_id,
                    name=name,
                    label=label,
                    limit=max(1, min(limit, 200)),
                )
            ]
        }

    if opts.annotations is not None:
        writer = opts.annotations

        @tool(
            "Record your judgement of a trace, a span or a session (kind llm; writing the same name "
            "again updates it). target: a trace id (OTel hex or UUID), a span id (UUID from get_trace) "
            "or a session id. Give a score (number), a label (e.g. correct / incorrect) and/or an "
            "explanation; correction: the output that should have been (any JSON)."
        )
        def annotate(
            target: str,
            name: str,
            score: float | None = None,
            label: str | None = None,
            explanation: str | None = None,
            correction: Any = None,
        ) -> dict[str, Any]:
            where = writer.resolve_target(target)
            judgement = Annotation.checked(
                where,
                name,
                score=score,
                label=label,
                explanation=explanation,
                correction=correction,
                kind=AnnotatorKind.LLM,
                annotator=opts.annotator,
                source="mcp",
            )
            writer.annotate(judgement)
            return {"written": {"target": where.kind.value, "name": judgement.name, **judgement.row()}}

    @server.prompt(
        description="Diagnose one trace: what happened, where it failed, what it cost, what to fix."
    )
    def diagnose_trace(trace_id: str) -> str:
        return (
            f"Diagnose trace {trace_id}. Call get_trace with this id; find the deepest failed or slowest "
            "span and open it with get_span; say what the application was asked, what happened step by "
            "step, where and why it failed (error type and message), what it cost and took, and one concrete "
            "fix. Quote span ids."
        )

    return server
