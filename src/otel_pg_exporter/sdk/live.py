"""Live spans: long steps visible while they run.

``LiveSpanProcessor`` sits next to the ``BatchSpanProcessor`` of a ``PostgresSpanExporter``. It notes
when each span starts (a dict insert: a span that ends within ``delay_s`` costs nothing more) and a
background thread writes a ``running`` row for every span still open after ``delay_s``: type, name,
parent, start, model and attributes as known then. The trace shows ``running`` until its root ends.
When the span ends, its real row replaces the running one in place (same ``span_id``, same tree: the
store fills ``running`` rows like placeholders; a real row is never replaced by a running one).

Live rows are best effort: they are written straight to the database with a short timeout, never
spooled; when the database is down they are skipped (``stats()["live_skipped"]``) and the real row
arrives through the exporter's normal path. A process that dies leaves its running rows to
retention's ``stale_running`` rule.
"""

from __future__ import annotations

import logging
import threading
import time

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from .._fork import on_fork_in_child
from .engine import Engine
from .span_exporter import PostgresSpanExporter

logger = logging.getLogger("otel_pg_exporter")

#: Longest sleep of the live thread between looks at the open spans, in seconds.
POLL_MAX_S = 0.5
#: How long a live row may wait for a connection and its transaction, in seconds.
LIVE_TIMEOUT_S = 2.0


def _snapshot(span: Span) -> ReadableSpan:
    """A consistent copy of a span that is still recording (the SDK's own copy when it has one)."""
    copy = getattr(span, "_readable_span", None)
    return copy() if callable(copy) else span


class LiveSpanProcessor(SpanProcessor):
    """Writes ``running`` rows for spans open longer than ``delay_s`` (default: the exporter's
    ``live_delay_s``, 2 s). Add it to the same ``TracerProvider`` as the exporter's batch
    processor; ``configure(live=True)`` (or ``OTEL_EXPORTER_POSTGRES_LIVE=true``) does."""

    def __init__(self, exporter: PostgresSpanExporter | Engine, delay_s: float | None = None) -> None:
        self._engine = exporter.engine if isinstance(exporter, PostgresSpanExporter) else exporter
        self._delay_s = delay_s if delay_s is not None else self._engine.settings.live_delay_s
        self._open: dict[tuple[int, int], tuple[float, Span]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._token: object | None = self._engine.retain()
        on_fork_in_child(self._after_fork_in_child)  # a forked child starts with its own lock and thread

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self._open = {}  # the parent's open spans are the parent's

    # -- SpanProcessor API --------------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self._stopped.is_set():
            return
        ctx = span.get_span_context()
        due = time.monotonic() + self._delay_s
        with self._lock:
            self._open[(ctx.trace_id, ctx.span_id)] = (due, span)
        thread = self._thread
        if thread is None or not thread.is_alive():  # first span, or a forked child
            self._start()

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is not None:
            with self._lock:
                self._open.pop((ctx.trace_id, ctx.span_id), None)

    def shutdown(self) -> None:
        self._stopped.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=LIVE_TIMEOUT_S * 2)
        if self._token is not None:
            token, self._token = self._token, None
            self._engine.release(token)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    # -- the live thread ----------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._run, name="otel-pg-exporter-live", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            now = time.monotonic()
            due: list[Span] = []
            next_due = now + POLL_MAX_S
            with self._lock:
                for key, (at, span) in list(self._open.items()):
                    if at <= now:
                        due.append(span)
                        del self._open[key]  # one running row per span
                    else:
                        next_due = min(next_due, at)
            if due:
                self._write(due)
            self._wake.wait(max(0.01, min(POLL_MAX_S, next_due - time.monotonic())))

    def _write(self, spans: list[Span]) -> None:
        snapshots = []
        for span in spans:
            snapshot = _snapshot(span)
            if snapshot.end_time is None:  # ended meanwhile: its real row is on its way
                snapshots.append(snapshot)
        if not snapshots:
            return
        try:
            self._engine.write_live(snapshots, timeout_s=LIVE_TIMEOUT_S)
        except Exception as exc:  # best effort: the real rows come through the exporter
            logger.debug("otel-pg-exporter: live rows skipped: %s", type(exc).__name__)
