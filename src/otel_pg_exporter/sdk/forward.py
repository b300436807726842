"""Forwarding each user's spans to their own LangSmith / Langfuse (OTLP/HTTP), in the background.

Optional: ``forward=True`` (or ``OTEL_EXPORTER_POSTGRES_FORWARD=true``) and the extra
``otel-pg-exporter[forward]`` (``opentelemetry-exporter-otlp-proto-http``). The targets come from
``profiles.settings.observability`` (``user_settings``). Isolation is structural: a batch is split by
trace, each trace belongs to one user, and each user's spans go through an OTLP exporter built from
that user's target alone. Spans of traces whose user is not known yet (children usually end before
the root that names the user) wait, bounded in time and number, until a later batch names it.

Forwarding never delays or fails the PostgreSQL export: batches are queued (bounded, oldest dropped
and counted) and sent by one worker thread. Keys are never logged: targets print without headers.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from ..config.user_settings import ForwardTarget
from ..delivery.telemetry import Counter
from ..pipeline import conventions as cv

logger = logging.getLogger("otel_pg_exporter")

#: How long a target that failed is left alone: doubling from the first to the second.
REST_MIN_S = 30.0
REST_MAX_S = 600.0

#: Counter callback: (stats key, value).
Count = Callable[[Counter, int], None]


def without_content(span: ReadableSpan) -> ReadableSpan:
    """The span minus message content (attributes and events), for users who do not allow it."""
    attrs = {
        k: v
        for k, v in (span.attributes or {}).items()
        if k not in cv.CONTENT_ATTRIBUTES and not k.startswith(cv.FLAT_PREFIXES)
    }
    content_events = {*cv.CONTENT_EVENTS, cv.OPERATION_DETAILS_EVENT}
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attrs,
        events=[e for e in span.events if e.name not in content_events],
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class Forwarder:
    """Queues ``(target, spans)`` and sends them with one OTLP/HTTP exporter per target."""

    def __init__(
        self,
        count: Count,
        *,
        timeout_s: float = 10.0,
        queue_batches: int = 256,
        pending_s: float = 120.0,
        pending_max_spans: int = 20_000,
        max_targets: int = 256,
    ) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # extra "forward"

        self._exporter_class = OTLPSpanExporter
        self._count = count
        self._timeout_s = timeout_s
        self._queue: queue.Queue[tuple[ForwardTarget, list[ReadableSpan]] | None] = queue.Queue(queue_batches)
        self._exporters: OrderedDict[ForwardTarget, Any] = OrderedDict()
        #: targets that failed: (rest until, current rest length); only the worker thread uses it
        self._resting: dict[ForwardTarget, tuple[float, float]] = {}
        self._max_targets = max_targets
        self._pending: OrderedDict[uuid.UUID, tuple[float, list[ReadableSpan]]] = OrderedDict()
        self._pending_spans = 0
        self._pending_s = pending_s
        self._pending_max = pending_max_spans
        self._lock = threading.Lock()
        self._inflight = 0  # batches queued or being sent
        self._worker = threading.Thread(target=self._run, name="otel-pg-exporter-forward", daemon=True)
        self._worker.start()
        self._closed = False

    # -- routing -----------------------------------------------------------------------------------

    def route(
        self,
        spans_by_trace: dict[uuid.UUID, list[ReadableSpan]],
        targets_of: Callable[[uuid.UUID], tuple[tuple[ForwardTarget, ...], bool] | None],
    ) -> None:
        """Queue each trace's spans for its user's targets. ``targets_of(trace_id)`` gives
        ``(targets, content_allowed)``, or None while the trace's user is unknown (the spans wait)."""
        if self._closed:
            return
        grouped: dict[tuple[ForwardTarget, bool], list[ReadableSpan]] = {}
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            for tid, spans in spans_by_trace.items():
                decision = targets_of(tid)
                if decision is None:
                    if any(s.parent is None for s in spans):  # the root is here and names nobody
                        self._drop_pending(tid, Counter.FORWARD_UNATTRIBUTED)
                        self._count(Counter.FORWARD_UNATTRIBUTED, len(spans))
                    else:
                        self._hold(tid, spans, now)
                    continue
                targets, content = decision
                held = self._pending.pop(tid, None)
                if held is not None:
                    self._pending_spans -= len(held[1])
                    spans = held[1] + spans
                for target in targets:
                    grouped.setdefault((target, content), []).extend(spans)
        for (target, content), spans in grouped.items():
            self._enqueue(target, spans if content else [without_content(s) for s in spans])

    def _hold(self, tid: uuid.UUID, spans: list[ReadableSpan], now: float) -> None:
        first, held = self._pending.get(tid, (now, []))
        self._pending[tid] = (first, held + spans)
        self._pending_spans += len(spans)
        while self._pending_spans > self._pending_max and self._pending:
            old, _ = next(iter(self._pending.items()))
            self._drop_pending(old, Counter.FORWARD_UNATTRIBUTED)

    def _drop_pending(self, tid: uuid.UUID, reason: Counter) -> None:
        held = self._pending.pop(tid, None)
        if held is not None:
            self._pending_spans -= len(held[1])
            self._count(reason, len(held[1]))

    def _expire(self, now: float) -> None:
        while self._pending:
            tid, (first, _) = next(iter(self._pending.items()))
            if now - first < self._pending_s:
                break
            self._drop_pending(tid, Counter.FORWARD_UNATTRIBUTED)

    def _enqueue(self, target: ForwardTarget, spans: list[ReadableSpan]) -> None:
        with self._lock:
            self._inflight += 1
        while True:
            try:
                self._queue.put_nowait((target, spans))
                return
            except queue.Full:
                try:
                    dropped = self._queue.get_nowait()
                except queue.Empty:
                    continue
                if dropped is not None:
                    with self._lock:
                        self._inflight -= 1
                    self._count(Counter.FORWARD_DROPPED, len(dropped[1]))

    def fresh(self) -> Forwarder:
        """A new forwarder with the same settings, for a forked child (the worker thread and the
        HTTP sessions are the parent's)."""
        return Forwarder(
            self._count,
            timeout_s=self._timeout_s,
            queue_batches=self._queue.maxsize,
            pending_s=self._pending_s,
            pending_max_spans=self._pending_max,
            max_targets=self._max_targets,
        )

    # -- sending -----------------------------------------------------------------------------------

    def _exporter_for(self, target: ForwardTarget) -> Any:
        exporter = self._exporters.get(target)
        if exporter is None:
            exporter = self._exporter_class(
                endpoint=target.endpoint, headers=dict(target.headers), timeout=self._timeout_s
            )
            self._exporters[target] = exporter
            while len(self._exporters) > self._max_targets:
                _, old = self._exporters.popitem(last=False)
                old.shutdown()
        self._exporters.move_to_end(target)
        return exporter

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            target, spans = item
            if time.monotonic() < self._resting.get(target, (0.0, 0.0))[0]:
                outcome = Counter.FORWARD_SPANS_SKIPPED  # failed moments ago: do not hold up the others
            else:
                outcome = (
                    Counter.FORWARD_SPANS_SENT if self._send(target, spans) else Counter.FORWARD_SPANS_FAILED
                )
            self._count(outcome, len(spans))
            with self._lock:
                self._inflight -= 1

    def _send(self, target: ForwardTarget, spans: list[ReadableSpan]) -> bool:
        """One export to one target. A failure rests the target (30 s, doubling up to 10 min), so a
        user's dead endpoint or revoked key costs the shared worker one attempt per rest."""
        try:
            ok = getattr(self._exporter_for(target).export(spans), "name", "") == "SUCCESS"
        except Exception as exc:  # never let one target stop the worker
            ok = False
            logger.warning(
                "otel-pg-exporter: forwarding to %s failed: %s", target.service, type(exc).__name__
            )
        if ok:
            self._resting.pop(target, None)
        else:
            delay = min(REST_MAX_S, self._resting.get(target, (0.0, REST_MIN_S / 2))[1] * 2)
            self._resting[target] = (time.monotonic() + delay, delay)
            while len(self._resting) > self._max_targets:
                self._resting.pop(next(iter(self._resting)))
        return ok

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued has been sent (or the timeout passes)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._inflight == 0:
                    return True
            time.sleep(0.02)
        return False

    def shutdown(self, timeout_s: float) -> None:
        """Send what is queued (up to ``timeout_s``), then stop; spans still waiting for their
        user are counted as unattributed."""
        self._closed = True
        with self._lock:
            for tid in list(self._pending):
                self._drop_pending(tid, Counter.FORWARD_UNATTRIBUTED)
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=max(0.1, timeout_s))
        self._worker.join(timeout=max(0.1, timeout_s))
        for exporter in self._exporters.values():
            exporter.shutdown()


def spans_by_trace(
    spans: Iterable[ReadableSpan], trace_of: Callable[[ReadableSpan], uuid.UUID]
) -> dict[uuid.UUID, list[ReadableSpan]]:
    out: dict[uuid.UUID, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(trace_of(span), []).append(span)
    return out
