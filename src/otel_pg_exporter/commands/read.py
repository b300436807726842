"""``otel-pg traces|trace|span|failures``: the MCP server's questions from a shell, for people and for
agents without MCP. Text (control characters escaped) or ``--json``; the same bounded views."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..config.dsn import resolve_dsn
from ..errors import OtelPgError
from ..query import outline as view
from ..query import questions
from ..query.trace_store import JUDGED, SORTS, STATUSES, TraceStore
from ..terminal import for_terminal
from .arguments import add_dsn, add_schema, fail, parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-pg", description="Read stored traces from a shell.")
    add_dsn(parser)
    add_schema(parser)
    parser.add_argument("--as-user", help="read as this user (profiles.id), under the seed's RLS")
    parser.add_argument("--json", action="store_true", help="JSON instead of text")
    commands = parser.add_subparsers(dest="command", required=True)
    traces = commands.add_parser("traces", help="find traces, newest first")
    traces.add_argument("--since", default="24h", help="24h, 7d, 90m, today, week, all, or an ISO date")
    traces.add_argument("--workflow")
    traces.add_argument("--user")
    traces.add_argument("--status", choices=STATUSES)
    traces.add_argument("--model")
    traces.add_argument("--text", help="in the trace's question")
    traces.add_argument("--sort", choices=list(SORTS), default="started_at")
    traces.add_argument("--cursor", help="the next_cursor of the previous page")
    traces.add_argument("--limit", type=int, default=20)
    traces.add_argument("--min-cost", type=float, help="USD")
    traces.add_argument("--min-duration-ms", type=int)
    trace = commands.add_parser("trace", help="one trace as an outline of its spans")
    trace.add_argument("trace_id", help="OTel hex id or the stored UUID")
    trace.add_argument("--offset", type=int, default=0)
    trace.add_argument("--content-chars", type=int, default=view.CONTENT_CHARS)
    span = commands.add_parser("span", help="one span whole")
    span.add_argument("span_id")
    span.add_argument("--full", action="store_true", help="large fields uncut, and the raw metadata")
    failures = commands.add_parser("failures", help="the most frequent error types of failed spans")
    failures.add_argument("--since", default="24h")
    failures.add_argument("--limit", type=int, default=10)
    return parser


def _run(store: TraceStore, args: argparse.Namespace) -> tuple[Any, str]:
    """(JSON-ready data, text) of one command."""
    if args.command == "traces":
        found = questions.search(
            store,
            since=args.since,
            workflow=args.workflow,
            user=args.user,
            status=args.status,
            model=args.model,
            text=args.text,
            sort=args.sort,
            cursor=args.cursor,
            limit=max(1, min(args.limit, 200)),
            min_cost=args.min_cost,
            min_duration_ms=args.min_duration_ms,
        )
        lines = [
            f"{r['started_at'][:19]}  {r['status']:<9} {r['duration_ms'] or 0:>7} ms  ${r['cost_usd']:.4f}  "
            f"{r['workflow']}  {r['trace_id']}  {r['preview'] or ''}"
            for r in found["traces"]
        ]
        if found["next_cursor"]:
            lines.append(f"(more: --cursor {found['next_cursor']})")
        return found, "\n".join(lines) or "no traces"
    if args.command == "trace":
        data = questions.trace(store, args.trace_id, offset=args.offset, content_chars=args.content_chars)
        return data, data["outline"]
    if args.command == "span":
        data = questions.span(store, args.span_id, full=args.full)
        text = "\n".join(
            f"{k}: {v if isinstance(v, str) else json.dumps(v, default=str)}" for k, v in data.items()
        )
        return data, text
    data = questions.failures(store, since=args.since, limit=args.limit)
    text = "\n".join(
        f"{r['spans']:>6} spans  {r['traces']:>5} traces  {r['error_type']}  last {r['last_seen'][:19]}  "
        f"{r['last_error'] or ''}"
        for r in data["failures"]
    )
    return data, text or "no failures"


def main(argv: Sequence[str] | None = None) -> int:
    prog = "otel-pg"
    args = parse(_parser(), argv)
    dsn, _ = resolve_dsn(args.dsn)
    try:
        with TraceStore(args.dsn, schema=args.schema, as_user=args.as_user) as store:
            data, text = _run(store, args)
    except OtelPgError as exc:
        return fail(prog, str(exc), dsn)
    # stored text is untrusted: a terminal gets it with control characters escaped
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print("\n".join(for_terminal(line) for line in text.split("\n")))
    return 0


def export_main(argv: Sequence[str] | None = None) -> int:
    """``otel-pg-export``: the spans of the traces a filter keeps, as JSONL (an evaluation set, a
    fine-tuning file): input, output, model, tokens, cost, the judgements and any correction."""
    from ..query.export import DEFAULT_MAX_LINES, SpanSelection, export_lines

    prog = "otel-pg-export"
    parser = argparse.ArgumentParser(prog=prog, description=export_main.__doc__)
    add_dsn(parser)
    add_schema(parser)
    parser.add_argument("--as-user", help="export as this user (profiles.id), under the seed's RLS")
    parser.add_argument(
        "--since", default="30d", help="24h, 7d, today, week, all, or an ISO date (default 30d)"
    )
    parser.add_argument("--workflow")
    parser.add_argument("--status", choices=STATUSES)
    parser.add_argument("--model")
    parser.add_argument(
        "--judged", choices=list(JUDGED), help="traces with any judgement, or a thumb down / up"
    )
    parser.add_argument("--annotation", help="traces with a judgement of this name")
    parser.add_argument("--label", help="... with this label")
    parser.add_argument("--min-score", type=float)
    parser.add_argument("--max-score", type=float)
    parser.add_argument(
        "--spans",
        choices=[s.value for s in SpanSelection],
        default="root",
        help="root: one line per trace (question and answer, default); llm: each model call; "
        "judged: spans with judgements of their own; all",
    )
    parser.add_argument("--max-lines", type=int, default=DEFAULT_MAX_LINES)
    parser.add_argument("--output", "-o", help="write here (created readable by you only), not to stdout")
    args = parse(parser, argv)
    dsn, _ = resolve_dsn(args.dsn)
    filters: dict[str, Any] = {
        "since": view.since_of(args.since),
        "workflow": args.workflow,
        "status": args.status,
        "model": args.model,
        "annotation": args.annotation,
        "label": args.label,
        "min_score": args.min_score,
        "max_score": args.max_score,
        **(JUDGED[args.judged][1] if args.judged else {}),
    }
    out = sys.stdout
    try:
        if args.output:
            # trace content: readable by its owner only, and never through a link planted there
            fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            out = os.fdopen(fd, "w", encoding="utf-8")
        lines = 0
        with TraceStore(args.dsn, schema=args.schema, as_user=args.as_user) as store:
            for line in export_lines(store, spans=args.spans, max_lines=max(1, args.max_lines), **filters):
                out.write(line)
                lines += 1
    except OSError as exc:
        return fail(prog, f"cannot write {args.output}: {exc.strerror}", dsn)
    except OtelPgError as exc:
        return fail(prog, str(exc), dsn)
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"{prog}: {lines} lines", file=sys.stderr)
    return 0
