"""``Engine``: the one core every adapter holds.

The span exporter, the log exporter, the live processor and the gateway each hold an ``Engine`` (one
per process and database, shared through ``retain``/``release``) and only compose: what to encode,
what became of it. The engine owns what they share: the resolved settings, the size limits and the
secret scrubber, the pricer, ``delivery.Delivery`` (retries, spool, replay, the pool), the
telemetry, per-user decisions (content and forwarding) and fork handling.

``export_spans`` takes each span through the pure stages in one pass: ``pipeline.mapping.map_span``
(OTel span → record), ``pipeline.pricing`` (a cost for model calls that report none), the user's
``redact`` hook, and ``pipeline.encoding.encode_span`` (the row, sanitized and scrubbed); a span
that breaks a stage still gets a minimal row. ``export_logs`` does the same for log records
(``pipeline.log_fragments``). Neither raises: the adapters hand their answer to the SDK.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from .._fork import on_fork_in_child
from ..config.dsn import safe_message
from ..config.settings import ExporterSettings, resolve_settings
from ..config.user_settings import (
    ForwardTarget,
    UserObservability,
    UserSettingsCache,
    content_allowed,
    user_uuid,
)
from ..delivery import Delivered, Delivery, ExporterTelemetry, Outcome
from ..delivery.spool import Spool
from ..delivery.spool_codec import SpoolItem
from ..delivery.telemetry import Counter, DropReason
from ..errors import ConfigurationError
from ..pipeline import coding_agents
from ..pipeline.conventions import MODEL_CALL_TYPES
from ..pipeline.encoding import EncodedSpan, Limits, encode_span
from ..pipeline.ids import trace_uuid
from ..pipeline.log_fragments import map_log_records, protect_fragment
from ..pipeline.mapping import SpanRecord, fallback_record, map_span
from ..pipeline.pricing import Pricer, apply_cost, load_custom_prices
from ..pipeline.privacy import build_scrubber, parse_patterns
from .forward import Forwarder, spans_by_trace

logger = logging.getLogger("otel_pg_exporter")

#: How many trace → user associations are remembered across batches (for per-user settings).
TRACE_USERS_MAX = 65_536


def _no_loading(user_ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    raise TimeoutError("the database is down: no settings lookup")


class Engine:
    """The core the SDK adapters and the gateway hold: settings, limits, pricer, delivery,
    telemetry, per-user decisions, fork handling. ``dsn`` and options as ``PostgresSpanExporter``.

    One engine serves every adapter of a process that writes to the same database: each adapter
    takes a token with ``retain()`` and gives it back with ``release(token)``; the last release
    drains the spool (up to ``shutdown_timeout_s``) and closes the pool."""

    def __init__(self, dsn: str | None = None, **options: Any) -> None:
        self.settings: ExporterSettings = resolve_settings(dsn, **options)
        s = self.settings
        scrubber = (
            build_scrubber(parse_patterns(s.redact_patterns), own_dsn=s.dsn, defaults=s.scrub_secrets)
            if s.scrub_secrets or s.redact_patterns or s.dsn
            else None
        )
        self.limits = Limits(
            max_payload_chars=s.max_payload_chars, scrub=scrubber, capture_content=s.capture_content
        )
        self._limits_flipped = replace(self.limits, capture_content=not s.capture_content)
        self.pricer = Pricer(load_custom_prices(s.prices))
        self._trace_users: OrderedDict[uuid.UUID, uuid.UUID] = OrderedDict()
        self._trace_users_lock = threading.Lock()
        self.telemetry = ExporterTelemetry()
        self.delivery = Delivery(
            s,
            self.limits,
            self.telemetry,
            content_policy=self._forbidden_users if s.user_settings else None,
        )
        self._user_settings = (
            UserSettingsCache(self.delivery.load_observability, ttl_s=s.user_settings_ttl_s)
            if s.user_settings
            else None
        )
        self._forwarder: Forwarder | None = None
        if s.forward:
            try:
                self._forwarder = Forwarder(self.telemetry.add, timeout_s=s.timeout_s)
            except ImportError:
                raise ConfigurationError(
                    "forward=True needs opentelemetry-exporter-otlp-proto-http: "
                    "pip install 'otel-pg-exporter[forward]'"
                ) from None
        self._shutdown_lock = threading.Lock()
        self._holders: set[object] = set()
        self._shutting_down = False
        self._fork_orphans: list[Any] = []
        on_fork_in_child(self._after_fork_in_child)

    # -- what the adapters share ----------------------------------------------------------------------

    @property
    def spool(self) -> Spool | None:
        """The durable spool (None when it is off or its directory is not usable)."""
        return self.delivery.spool

    @property
    def closed(self) -> bool:
        return self.delivery.closed

    @property
    def database_down(self) -> bool:
        """The last write found the database unreachable (batches go to the spool until it answers)."""
        return self.delivery.database_down

    def spool_cannot_take(self, size: int) -> bool:
        """While the database is down a batch goes to the spool: True when it would not fit (the
        spool would drop older data to make room) or when there is no spool."""
        if not self.delivery.database_down:
            return False
        spool = self.delivery.spool
        return spool is None or spool.size_bytes() + size > spool.max_bytes

    def retain(self) -> object:
        """Register one more user of this engine; returns the token to ``release``."""
        token = object()
        with self._shutdown_lock:
            self._holders.add(token)
        return token

    def release(self, token: object) -> None:
        """A user of this engine is done; the last one drains the spool and closes the pool."""
        with self._shutdown_lock:
            self._holders.discard(token)
            if self._holders or self._shutting_down:
                return
            self._shutting_down = True
        deadline = self.delivery.begin_close(self.settings.shutdown_timeout_s)
        if self._forwarder is not None:
            self._forwarder.shutdown(max(0.5, deadline - time.monotonic()))
        self.delivery.finish_close()

    def flush(self, timeout_s: float) -> bool:
        """Nothing is buffered in memory: every export has committed or spooled (fsynced).
        Forwarded batches still queued are sent first."""
        if self._forwarder is not None:
            return self._forwarder.flush(timeout_s)
        return True

    def stats(self) -> dict[str, Any]:
        """Counters since start: exported, spooled, replayed, retried, dropped (+ by reason),
        sanitized, degraded, failed batches, export latency, and the spool's backlog."""
        out = self.telemetry.snapshot()
        out.update(self.delivery.stats())
        if self._user_settings is not None:
            out["user_settings_queries"] = self._user_settings.queries
            out["user_settings_failures"] = self._user_settings.failures
        return out

    def _after_fork_in_child(self) -> None:
        """In a forked child (gunicorn, multiprocessing): the parent's threads do not exist here, and
        its pooled connections, spool segment and forwarding sessions are the parent's. Start with
        our own. The parent's objects are kept referenced, never closed: closing a connection from
        here would end the parent's session."""
        self._fork_orphans.append(self._forwarder)
        self._trace_users_lock = threading.Lock()
        self._shutdown_lock = threading.Lock()
        self.telemetry.after_fork()
        if self._user_settings is not None:
            self._user_settings.after_fork()
        if self._forwarder is not None:
            self._forwarder = self._forwarder.fresh()
        self.delivery.after_fork()

    # -- spans -----------------------------------------------------------------------------------------

    def export_spans(self, spans: Sequence[ReadableSpan]) -> Delivered:
        """Encode, forward and deliver a batch; what became of it (``delivery.Delivered``):
        ``stored`` (committed), ``spooled`` (in the durable spool, the database being down),
        ``empty`` or ``failure`` (lost, counted); ``refused`` counts the spans the database refused
        even alone (set aside in the quarantine, or dropped without a spool). Never raises."""
        if self.delivery.closed:
            return Delivered(SpanExportResult.FAILURE, Outcome.FAILURE)
        started = time.perf_counter()
        count = len(spans)
        self.telemetry.inflight(count)
        outcome = Outcome.FAILURE
        try:
            delivered = self._export(spans)
            outcome = delivered.outcome
            return delivered
        except Exception as exc:  # never raise into the SDK
            self.telemetry.add(Counter.FAILED_BATCHES, 1)
            self.telemetry.add(Counter.DROPPED, count, reason=DropReason.INTERNAL_ERROR)
            self.delivery.state.set("export failed", safe_message(exc, self.settings.dsn))
            return Delivered(SpanExportResult.FAILURE, Outcome.FAILURE)
        finally:
            self.telemetry.inflight(-count)
            self.telemetry.export_duration(time.perf_counter() - started, outcome.value)

    def _export(self, spans: Sequence[ReadableSpan]) -> Delivered:
        encoded, users, settings = self._encode(spans)
        if self._forwarder is not None:
            self._forward(spans, users, settings)
        if not encoded:
            return Delivered(SpanExportResult.SUCCESS, Outcome.EMPTY)
        return self.delivery.deliver(list(encoded))

    def write_live(self, spans: Sequence[ReadableSpan], timeout_s: float) -> int:
        """Best-effort ``running`` rows for spans still open (``LiveSpanProcessor``): written
        straight to the database, never spooled; 0 when the engine is closed or the database down.
        A span that cannot be mapped now is skipped (its real row comes when it ends). Raises
        what the write raises."""
        if self.delivery.closed or self.delivery.database_down:
            self.telemetry.add(Counter.LIVE_SKIPPED, len(spans))
            return 0
        rows = []
        for span in spans:
            record, error = self._mapped(span)  # the one mapping path: priced, the user's redact hook
            try:
                if record is None:
                    raise error or ValueError("not mapped")
                record.status = "running"
                record.completed_at = None
                record.duration_ms = 0
                record.metadata["live"] = True
                rows.append(encode_span(record, self.limits))
            except Exception as exc:
                logger.debug("otel-pg-exporter: no live row for %r: %s", span.name, type(exc).__name__)
        if not rows:
            return 0
        try:
            written = self.delivery.writer.write(rows, timeout=timeout_s).written
        except Exception:
            self.telemetry.add(Counter.LIVE_SKIPPED, len(rows))
            raise
        self.telemetry.add(Counter.LIVE_ROWS, written)
        return written

    # -- log records ------------------------------------------------------------------------------------

    def export_logs(self, records: Sequence[Any]) -> Delivered:
        """Map, protect and merge a batch of log records into their span rows, through the same
        retries, spool and replay as spans. Records that are not ours are counted and ignored.
        Never raises."""
        if self.delivery.closed:
            return Delivered(SpanExportResult.FAILURE, Outcome.FAILURE)
        try:
            self.telemetry.add(Counter.LOG_RECORDS, len(records))
            # coding agents' events (no spans of their own) become spans, written with the fragments
            agents = coding_agents.split(records)
            rows: list[SpoolItem] = self._encode(agents.spans)[0] if agents.spans else []
            self.telemetry.add(Counter.CODING_AGENT_SPANS, len(agents.spans))
            self.telemetry.add(Counter.CODING_AGENT_SKIPPED, agents.skipped)
            mapped = map_log_records(agents.others)
            for reason, count in mapped.ignored.items():
                self.telemetry.add(Counter.LOG_RECORDS_IGNORED, count)
                self.telemetry.add(Counter.LOG_RECORDS_IGNORED, count, detail=reason)
            fragments = [protect_fragment(f, self.limits, self.settings.redact) for f in mapped.fragments]
            rows += [f for f in fragments if not f.is_empty() or f.omitted]
            if not rows:
                return Delivered(SpanExportResult.SUCCESS, Outcome.EMPTY)
            return self.delivery.deliver(rows)
        except Exception as exc:  # never raise into the SDK
            logger.warning("otel-pg-exporter: log batch not stored: %s", type(exc).__name__)
            self.telemetry.add(Counter.FAILED_BATCHES, 1)
            self.delivery.state.set("log export failed", safe_message(exc, self.settings.dsn))
            return Delivered(SpanExportResult.FAILURE, Outcome.FAILURE)

    # -- encoding ---------------------------------------------------------------------------------------

    def encode(self, spans: Sequence[ReadableSpan]) -> list[EncodedSpan]:
        """Map and encode a batch; a span that breaks the mapping gets a minimal row instead.
        Content is kept or dropped per trace, by its user's settings when the user is known."""
        return self._encode(spans)[0]

    def _encode(
        self, spans: Sequence[ReadableSpan]
    ) -> tuple[list[EncodedSpan], dict[uuid.UUID, uuid.UUID], dict[uuid.UUID, UserObservability]]:
        """``encode``, plus each trace's user and the users' settings (for forwarding).

        One pass per span: mapped, priced, redacted and encoded at once with the global content
        setting, so nothing built for a span outlives it but its row. With per-user settings, the
        spans of a trace whose user decides otherwise are then mapped and encoded again (rare)."""
        encoded: list[EncodedSpan] = []
        origin: list[ReadableSpan] = []  # the span each row came from (a span yields 0 or 1 rows)
        for span in spans:
            record, error = self._mapped(span)
            if self._encode_one(span, record, error, self.limits, encoded):
                origin.append(span)
        users: dict[uuid.UUID, uuid.UUID] = {}
        settings: dict[uuid.UUID, UserObservability] = {}
        if self._user_settings is not None:
            users = self.trace_users(encoded)
            settings = self.user_observability(set(users.values()))
            glob = self.limits.capture_content
            flipped = {tid for tid, uid in users.items() if content_allowed(glob, settings.get(uid)) != glob}
            for i, row in enumerate(encoded if flipped else ()):
                if row.trace_id in flipped:
                    again: list[EncodedSpan] = []
                    record, error = self._mapped(origin[i])
                    if self._encode_one(origin[i], record, error, self._limits_flipped, again):
                        encoded[i] = again[0]
        self.telemetry.add(Counter.SANITIZED, sum(1 for e in encoded if e.sanitized))
        return encoded, users, settings

    def _mapped(self, span: ReadableSpan) -> tuple[SpanRecord | None, Exception | None]:
        try:
            record = self._priced(map_span(span))
            if self.settings.redact is not None:
                record = self.settings.redact(record)
            return record, None
        except Exception as exc:
            return None, exc

    def _encode_one(
        self,
        span: ReadableSpan,
        record: SpanRecord | None,
        error: Exception | None,
        limits: Limits,
        out: list[EncodedSpan],
    ) -> bool:
        """Encode one mapped span into ``out``; a span that broke the mapping or the encoding gets a
        minimal row instead (or is counted as dropped when it has no context at all: False)."""
        if record is not None:
            try:
                out.append(encode_span(record, limits))
                return True
            except Exception as exc:
                error = exc
        assert error is not None
        fallback = fallback_record(span, error)
        if fallback is not None and (self.settings.redact is not None or not self.settings.capture_content):
            fallback.metadata.pop("attributes_raw", None)  # unredacted content must not leak
        self.telemetry.add(Counter.MAPPING_FALLBACKS, 1)
        logger.warning(
            "otel-pg-exporter: span %r mapped minimally: %s",
            span.name,
            f"{type(error).__name__}: {error}"[:300],
        )
        if fallback is not None:
            out.append(encode_span(fallback, self.limits))
            return True
        self.telemetry.add(Counter.DROPPED, 1, reason=DropReason.INVALID_SPAN)
        return False

    # -- per-user settings -------------------------------------------------------------------------

    def trace_users(self, records: Sequence[SpanRecord | EncodedSpan]) -> dict[uuid.UUID, uuid.UUID]:
        """The user (a UUID) of each trace in ``records``: the best-ranked user attribute of the
        batch, else what an earlier batch of the same trace said (remembered, bounded)."""
        found: dict[uuid.UUID, tuple[int, uuid.UUID]] = {}
        for r in records:
            user = r.hints.user
            uid = user_uuid(user[1]) if user is not None else None
            if uid is not None and (r.trace_id not in found or user[0] < found[r.trace_id][0]):  # type: ignore[index]
                found[r.trace_id] = (user[0], uid)  # type: ignore[index]
        out: dict[uuid.UUID, uuid.UUID] = {}
        with self._trace_users_lock:
            for r in records:
                tid = r.trace_id
                if tid in found:
                    out[tid] = found[tid][1]
                    self._trace_users[tid] = found[tid][1]
                    self._trace_users.move_to_end(tid)
                elif tid in self._trace_users:
                    out[tid] = self._trace_users[tid]
            while len(self._trace_users) > TRACE_USERS_MAX:
                self._trace_users.popitem(last=False)
        return out

    def user_observability(self, user_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, UserObservability]:
        """Cached per-user settings (empty when ``user_settings`` is off)."""
        if self._user_settings is None or not user_ids:
            return {}
        if self.delivery.database_down:  # cached values only: the writer's transaction checks again later
            return self._user_settings.get_many(user_ids, loader=_no_loading)
        return self._user_settings.get_many(user_ids)

    def _forward(
        self,
        spans: Sequence[ReadableSpan],
        users: dict[uuid.UUID, uuid.UUID],
        settings: dict[uuid.UUID, UserObservability],
    ) -> None:
        """Each trace's spans to its user's LangSmith / Langfuse (queued; never raises)."""
        assert self._forwarder is not None
        try:
            glob = self.limits.capture_content

            def targets_of(tid: uuid.UUID) -> tuple[tuple[ForwardTarget, ...], bool] | None:
                uid = users.get(tid)
                obs = settings.get(uid) if uid is not None else None
                if obs is None:
                    return None  # user not known (yet): the spans wait
                if not obs.enabled:
                    return (), False
                return obs.targets, content_allowed(glob, obs)

            by_trace = spans_by_trace(
                (s for s in spans if s.context is not None), lambda s: trace_uuid(s.context.trace_id)
            )
            self._forwarder.route(by_trace, targets_of)
        except Exception as exc:
            self.delivery.state.set("forwarding failed", type(exc).__name__)

    def _forbidden_users(self, user_ids: Collection[Any], loader: Any) -> set[Any]:
        """For the writer: users (of traces it just wrote) whose content must not be stored."""
        assert self._user_settings is not None
        settings = self._user_settings.get_many(user_ids, loader)
        glob = self.limits.capture_content
        return {u for u in user_ids if not content_allowed(glob, settings.get(u))}

    # -- internals ----------------------------------------------------------------------------------

    def _priced(self, record: SpanRecord) -> SpanRecord:
        """Model calls get a computed cost when they report none (``pricing``)."""
        if record.span_type in MODEL_CALL_TYPES:
            record.cost = apply_cost(
                record.metadata,
                record.tokens,
                record.cost,
                record.provider,
                record.model,
                record.metadata.get("request_model"),
                record.started_at,
                self.pricer,
            )
        return record
