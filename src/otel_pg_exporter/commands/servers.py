"""``otel-pg-ui`` (the explorer) and ``otel-pg-gateway`` (the OTLP/HTTP receiver): options, the
token and Host rules, then ``web.serving.serve``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..config.dsn import describe, resolve_dsn
from ..errors import OtelPgError
from ..web.auth import is_loopback
from ..web.serving import MAX_CONNECTIONS, serve
from .arguments import add_server, fail, parse


def ui_main(argv: Sequence[str] | None = None) -> int:
    """``otel-pg-ui``: the trace explorer (extra ``ui``)."""
    prog = "otel-pg-ui"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="A local web explorer of stored traces: list, tree with waterfall, sessions, costs.",
    )
    add_server(
        parser,
        port=8400,
        token_env="OTEL_PG_UI_TOKEN",
        token_help="require this token on every request (default $OTEL_PG_UI_TOKEN); needed to listen "
        "beyond this machine. Open http://HOST:PORT/?token=... once; a cookie keeps it",
    )
    parser.add_argument(
        "--as-user", help="show only what this user (profiles.id) may see under the seed's RLS"
    )
    parser.add_argument(
        "--as-role", default="authenticated", help="the role --as-user runs as (default authenticated)"
    )
    parser.add_argument("--statement-timeout-ms", type=int, default=5000, help="per query (default 5000)")
    parser.add_argument(
        "--allow-annotations",
        action="store_true",
        help="show feedback forms (thumbs, label, score, comment) and accept them; read-only without",
    )
    parser.add_argument(
        "--annotations-dsn",
        default=os.environ.get("OTEL_PG_UI_ANNOTATIONS_DSN"),
        help="write judgements with this DSN (a role that may write otel_annotations and nothing else: "
        "sql/roles/otel_annotator_role.sql; default $OTEL_PG_UI_ANNOTATIONS_DSN, else --dsn)",
    )
    parser.add_argument(
        "--annotator", default="explorer", help="who the judgements are from (default explorer)"
    )
    args = parse(parser, argv)
    dsn, _ = resolve_dsn(args.dsn)
    if not is_loopback(args.host) and not args.token:
        return fail(prog, f"refusing to listen on {args.host} without --token (or OTEL_PG_UI_TOKEN)", dsn)
    if args.annotations_dsn and not args.allow_annotations:
        return fail(prog, "--annotations-dsn needs --allow-annotations", dsn)
    try:
        import uvicorn  # noqa: F401 (the extra's marker)

        from ..query.trace_store import TraceStore
        from ..web.explorer.app import Feedback, create_app
    except ImportError:
        return fail(prog, "the explorer needs its extra: pip install 'otel-pg-exporter[ui]'", dsn)
    try:
        store = TraceStore(
            args.dsn,
            schema=args.schema,
            as_user=args.as_user,
            as_role=args.as_role,
            statement_timeout_ms=args.statement_timeout_ms,
        )
        store.list_traces(limit=1)  # fail now, with one line, rather than on the first page
        feedback = None
        if args.allow_annotations:
            writer = TraceStore(
                args.annotations_dsn or args.dsn,
                schema=args.schema,
                as_user=args.as_user,
                as_role=args.as_role,
                statement_timeout_ms=args.statement_timeout_ms,
                pool_size=2,
            )
            feedback = Feedback(writer, annotator=args.annotator)
    except OtelPgError as exc:
        return fail(prog, str(exc), dsn)
    print(f"{prog}: serving {describe(dsn)} on http://{args.host}:{args.port}/", flush=True)
    try:
        serve(
            create_app(store, token=args.token, annotations=feedback),
            args.host,
            args.port,
            token=args.token,
            allow_hosts=args.allow_host,
        )
    finally:
        store.close()
        if feedback is not None:
            feedback.store.close()
    return 0


def gateway_main(argv: Sequence[str] | None = None) -> int:
    """``otel-pg-gateway``: the OTLP receiver, HTTP and gRPC (extra ``gateway``)."""
    prog = "otel-pg-gateway"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Receive OTLP traces and logs over HTTP (protobuf or JSON) and gRPC from any language "
        "or an OTel Collector and store them like the in-process exporter does.",
    )
    add_server(
        parser,
        port=4318,
        token_env="OTEL_PG_GATEWAY_TOKEN",
        token_help="require 'Authorization: Bearer TOKEN' on every request (default "
        "$OTEL_PG_GATEWAY_TOKEN); needed to listen beyond this machine",
    )
    parser.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="listen beyond this machine without a token (behind your own network boundary)",
    )
    parser.add_argument(
        "--max-body-mb", type=float, default=16.0, help="largest request body, decompressed (default 16)"
    )
    parser.add_argument(
        "--max-inflight",
        type=int,
        default=8,
        help="batches read and written at once; more get 429 (default 8)",
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=4317,
        help="OTLP/gRPC port on the same host (default 4317; 0: no gRPC receiver)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=MAX_CONNECTIONS,
        help=f"open connections; more are answered 503 (default {MAX_CONNECTIONS})",
    )
    args = parse(parser, argv)
    dsn, _ = resolve_dsn(args.dsn)
    if not is_loopback(args.host) and not args.token and not args.allow_unauthenticated:
        return fail(
            prog,
            f"refusing to listen on {args.host} without --token (or OTEL_PG_GATEWAY_TOKEN, or "
            "--allow-unauthenticated)",
            dsn,
        )
    try:
        import uvicorn  # noqa: F401 (the extra's marker)

        from ..web.gateway.app import Gateway, create_app
        from ..web.gateway.grpc_receiver import start_grpc
    except ImportError:
        return fail(prog, "the gateway needs its extra: pip install 'otel-pg-exporter[gateway]'", dsn)
    options: dict[str, Any] = {"schema": args.schema} if args.schema else {}
    try:
        gateway = Gateway(
            args.dsn,
            token=args.token,
            max_body_bytes=int(args.max_body_mb * 1024 * 1024),
            max_inflight=args.max_inflight,
            **options,
        )
    except OtelPgError as exc:
        return fail(prog, str(exc), dsn)
    ready, why = gateway.ready()
    if not ready:
        print(f"{prog}: not ready yet ({why}); /readyz says so until it is", file=sys.stderr, flush=True)
    url = f"http://{args.host}:{args.port}"
    grpc_server = None
    if args.grpc_port:
        try:
            grpc_server = start_grpc(gateway, args.host, args.grpc_port)
        except (OSError, RuntimeError) as exc:
            gateway.close()
            return fail(prog, f"OTLP/gRPC: {exc}", dsn)
    grpc_note = f"; OTLP/gRPC on {args.host}:{args.grpc_port}" if grpc_server is not None else ""
    print(
        f"{prog}: storing into {describe(dsn)}{grpc_note}; OTLP/HTTP on {url}/v1/traces and {url}/v1/logs",
        flush=True,
    )
    # on shutdown the app's lifespan closes the gateway: the gRPC server first, then the engine
    serve(
        create_app(gateway),
        args.host,
        args.port,
        token=args.token,
        allow_hosts=args.allow_host,
        max_connections=args.max_connections,
    )
    return 0
