"""Shared test helpers: real SDK spans captured in memory, rows read back as dicts."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from psycopg import sql
from psycopg.rows import dict_row

from otel_pg_exporter import span_uuid, trace_uuid

#: Headless Chromium on this kind of machine (root, closed network): no sandbox, no GPU, no
#: background connections that the network would refuse.
CHROMIUM_FLAGS: list[str] = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Capture:
    """A real TracerProvider (and LoggerProvider) whose finished spans and emitted log records are
    kept, so tests choose batches and their order."""

    def __init__(self, service: str = "test-svc", **resource: Any) -> None:
        self.resource = Resource.create({"service.name": service, **resource})
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider(resource=self.resource)
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.tracer = self.provider.get_tracer("tests.support", "1.0")
        self.log_memory = InMemoryLogRecordExporter()
        self.logger_provider = LoggerProvider(resource=self.resource)
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.log_memory))
        self.logger = self.logger_provider.get_logger("tests.support", "1.0")

    def take(self) -> list[ReadableSpan]:
        spans = list(self.memory.get_finished_spans())
        self.memory.clear()
        return spans

    def take_logs(self) -> list[Any]:
        records = list(self.log_memory.get_finished_logs())
        self.log_memory.clear()
        return records


def by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def messages(*pairs: tuple[str, str]) -> str:
    """OTel >= 1.37 JSON messages: ("user", "hi") -> [{"role": "user", "parts": [...]}]."""
    return json.dumps([{"role": r, "parts": [{"type": "text", "content": c}]} for r, c in pairs])


def fetch_trace(dsn: str, trace_id: int) -> dict[str, Any] | None:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM traces WHERE trace_id = %s", (trace_uuid(trace_id),)).fetchone()


def fetch_spans(dsn: str, trace_id: int) -> dict[str, dict[str, Any]]:
    """Rows of one trace keyed by span name (placeholders keyed by their span id)."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        rows = conn.execute("SELECT * FROM spans WHERE trace_id = %s", (trace_uuid(trace_id),)).fetchall()
    return {(r["name"] if r["status"] != "pending" else str(r["span_id"])): r for r in rows}


def span_row(dsn: str, span: ReadableSpan) -> dict[str, Any] | None:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM spans WHERE span_id = %s",
            (span_uuid(span.context.trace_id, span.context.span_id),),
        ).fetchone()


def chat_attributes(input_tokens: int, output_tokens: int | None = None, **extra: Any) -> dict[str, Any]:
    """Attributes of an OTel GenAI chat span to gpt-4o-mini at OpenAI (plus ``extra``)."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": input_tokens,
    }
    if output_tokens is not None:
        attrs["gen_ai.usage.output_tokens"] = output_tokens
    return {**attrs, **extra}


def app_env(db_dsn: str, **extra: str) -> dict[str, str]:
    """Environment of an application subprocess: no inherited OTEL_* settings, the exporter's DSN,
    no metrics or logs exporter unless ``extra`` asks for one, the tests folder importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        {
            "OTEL_EXPORTER_POSTGRES_DSN": db_dsn,
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        },
        **extra,
    )
    return env


def drop_exporter_role(dsn: str, role: str = "otel_exporter") -> None:
    """Roles are cluster-wide: a test that created ``role`` (``sql/roles/``) removes what it owns in
    its own database and the role itself unless another test's database still uses it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with contextlib.suppress(psycopg.errors.DependentObjectsStillExist):
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def count_spans(dsn: str, run_id: str, attribute: str = "run.id") -> int:
    """Stored (not placeholder) spans whose ``attribute`` is ``run_id``."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT count(*) FROM spans WHERE status <> 'pending' AND metadata->'attributes'->>%s = %s",
            (attribute, run_id),
        ).fetchone()[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """An ASGI app served on a free local port, in a thread of the test process, as the commands
    serve it (``serving.server_config``: Host allow-list without a token, header deadline, caps)."""

    def __init__(self, app: Any, token: str | None = None, **options: Any) -> None:
        import uvicorn

        from otel_pg_exporter.web.serving import server_config

        self.port = free_port()
        self.server = uvicorn.Server(server_config(app, "127.0.0.1", self.port, token=token, **options))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "the server did not start"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextlib.contextmanager
def served_explorer(
    dsn: str, token: str | None = None, annotator: str | None = None, **store_options: Any
) -> Iterator[Served]:
    """``otel-pg-ui`` over a ``TraceStore`` of ``dsn``, served as the command serves it; with
    ``annotator``, as ``--allow-annotations --annotator <annotator>`` serves it."""
    from otel_pg_exporter.query.trace_store import TraceStore
    from otel_pg_exporter.web.explorer.app import Feedback, create_app

    store = TraceStore(dsn, **store_options)
    writer = TraceStore(dsn, **store_options) if annotator is not None else None
    feedback = Feedback(writer, annotator=annotator) if writer is not None and annotator is not None else None
    served = Served(create_app(store, token=token, annotations=feedback), token=token)
    try:
        yield served
    finally:
        served.close()
        store.close()
        if writer is not None:
            writer.close()
