"""``otel-pg-mcp``: the trace store as an MCP server (extra ``mcp``), over stdio or streamable HTTP."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..config.dsn import describe, resolve_dsn
from ..errors import OtelPgError
from ..web.auth import TokenGate, is_loopback
from .arguments import add_server, fail, parse

#: Where ``query_sql`` connects when ``--sql-dsn`` is not given (a read-only role).
SQL_DSN_ENV = "OTEL_PG_MCP_SQL_DSN"
ANNOTATIONS_DSN_ENV = "OTEL_PG_MCP_ANNOTATIONS_DSN"


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="otel-pg-mcp",
        description="Traces for coding agents: an MCP server over the stored traces (stdio by default).",
    )
    add_server(
        parser,
        port=8401,
        token_env="OTEL_PG_MCP_TOKEN",
        token_help="with --http: require this bearer token (default $OTEL_PG_MCP_TOKEN); needed to listen "
        "beyond this machine",
    )
    parser.add_argument("--as-user", help="every read as this user (profiles.id), under the seed's RLS")
    parser.add_argument("--as-role", default="authenticated", help="the role --as-user runs as")
    parser.add_argument(
        "--sql-dsn",
        default=os.environ.get(SQL_DSN_ENV),
        help=f"offer query_sql, connecting with this read-only role (default ${SQL_DSN_ENV}; "
        "see sql/roles/otel_reader_role.sql); without it the tool is not offered",
    )
    parser.add_argument(
        "--allow-annotations",
        action="store_true",
        help="offer the annotate tool: the agent records judgements (kind llm) of traces, spans, sessions",
    )
    parser.add_argument(
        "--annotations-dsn",
        default=os.environ.get(ANNOTATIONS_DSN_ENV),
        help=f"write judgements with this DSN (default ${ANNOTATIONS_DSN_ENV}, else --dsn; see "
        "sql/roles/otel_annotator_role.sql)",
    )
    parser.add_argument("--annotator", default="mcp-agent", help="who the judgements are from")
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    return parse(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    prog = "otel-pg-mcp"
    args = _arguments(argv)
    dsn, _ = resolve_dsn(args.dsn)
    try:
        from ..query.trace_store import TraceStore
        from ..web.mcp.server import McpOptions, build_server
    except ImportError:
        return fail(prog, "the MCP server needs its extra: pip install 'otel-pg-exporter[mcp]'", dsn)
    if args.http and not is_loopback(args.host) and not args.token:
        return fail(prog, f"refusing to listen on {args.host} without a token (OTEL_PG_MCP_TOKEN)", dsn)
    try:
        store = TraceStore(args.dsn, schema=args.schema, as_user=args.as_user, as_role=args.as_role)
        store.list_traces(limit=1)  # fail now, with one line
        writer = (
            TraceStore(
                args.annotations_dsn or args.dsn,
                schema=args.schema,
                as_user=args.as_user,
                as_role=args.as_role,
                pool_size=1,
            )
            if args.allow_annotations
            else None
        )
    except OtelPgError as exc:
        return fail(prog, str(exc), dsn)
    options = McpOptions(
        sql_dsn=args.sql_dsn,
        schema=args.schema,
        as_user=args.as_user,
        annotations=writer,
        annotator=args.annotator,
    )
    server = build_server(store, options)
    try:
        if not args.http:
            print(f"{prog}: serving {describe(dsn)} over stdio", file=sys.stderr, flush=True)
            server.run("stdio")
            return 0
        from mcp.server.transport_security import TransportSecuritySettings

        from ..web.serving import serve

        print(f"{prog}: serving {describe(dsn)} on http://{args.host}:{args.port}/mcp", flush=True)
        # the door is ours, as for the explorer: the token, else the Host allow-list (serve adds it)
        door = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        app = TokenGate(server.streamable_http_app(host=args.host, transport_security=door), token=args.token)
        serve(app, args.host, args.port, token=args.token, allow_hosts=args.allow_host)
    finally:
        store.close()
        if writer is not None:
            writer.close()
    return 0
