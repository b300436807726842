"""``PostgresSpanExporter`` and ``configure()``: thin orchestration around mapping, writer and spool.

``export()`` maps each span (a span that breaks the mapping still gets a minimal row) and writes the
batch in one transaction. Connection-class errors are retried with exponential backoff and jitter
within the export timeout; past it the batch goes to the durable spool and ``export()`` returns
SUCCESS, so the SDK queue keeps draining. While the database is known to be down, batches go to the
spool at once (no waiting), and a background replayer probes the database and drains the spool,
oldest first, through the same idempotent writer. ``export()`` never raises into the SDK, and each
state change is logged once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from .conventions import MODEL_CALL_TYPES
from .dsn import describe, safe_message
from .errors import ConfigurationError
from .forward import Forwarder, spans_by_trace
from .ids import trace_uuid
from .logs import LogFragment
from .mapping import SpanRecord, fallback_record, map_span
from .pricing import Pricer, apply_cost, load_custom_prices
from .privacy import build_scrubber, parse_patterns
from .records import EncodedSpan, Limits, encode_span
from .settings import ExporterSettings, resolve_settings
from .spool import Spool, SpoolItem, decode_payload, default_spool_root, iter_records
from .telemetry import ExporterTelemetry
from .user_settings import ForwardTarget, UserObservability, UserSettingsCache, content_allowed, user_uuid
from .writer import SpanWriter, WriteReport

logger = logging.getLogger("otel_pg_exporter")

#: Errors worth retrying: the server is down, restarting, failing over, or the pool is exhausted.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    PoolTimeout,
)
#: Errors of a database that answers but cannot take the rows yet (schema not installed, grants
#: missing): no point retrying now, but the batch is kept (spooled) until an operator fixes it.
SETUP_ERRORS: tuple[type[BaseException], ...] = (
    pg_errors.UndefinedTable,
    pg_errors.UndefinedColumn,
    pg_errors.UndefinedFunction,
    pg_errors.InsufficientPrivilege,
)
#: What a transaction pooler that cannot keep prepared statements (PgBouncer before 1.21 in
#: transaction mode; any pooler whose server connections change between transactions) answers to
#: psycopg's automatic prepared statements. The exporter then turns them off and writes again.
PREPARED_STATEMENT_ERRORS: tuple[type[BaseException], ...] = (
    pg_errors.DuplicatePreparedStatement,
    pg_errors.InvalidSqlStatementName,
)
BACKOFF_BASE_S = 0.1
BACKOFF_MAX_S = 5.0
#: Shortest wait for a pooled connection per attempt (a quarter of the export timeout otherwise).
ATTEMPT_MIN_S = 0.5
#: How often the replayer looks for spool segments left by other (crashed) processes.
RESCAN_S = 30.0

#: How many trace → user associations are remembered across batches (for per-user settings).
TRACE_USERS_MAX = 65_536

#: configure()'s BatchSpanProcessor settings: (our value, the SDK's env var that overrides it).
RECOMMENDED_BSP: dict[str, tuple[int, str]] = {
    "max_queue_size": (8192, "OTEL_BSP_MAX_QUEUE_SIZE"),
    "schedule_delay_millis": (1000, "OTEL_BSP_SCHEDULE_DELAY"),
    "max_export_batch_size": (512, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
    "export_timeout_millis": (30000, "OTEL_BSP_EXPORT_TIMEOUT"),
}


class _StateLog:
    """Logs a state change once ("database lost", "recovered"), never once per batch."""

    def __init__(self, target: str) -> None:
        self._target = target
        self._state = "ok"
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        return self._state

    def set(self, state: str, message: str = "") -> None:
        with self._lock:
            if state == self._state:
                return
            previous, self._state = self._state, state
        if state == "ok":
            logger.warning("otel-pg-exporter: writing to %s again (was: %s)", self._target, previous)
        else:
            logger.error("otel-pg-exporter: %s (%s): %s", state, self._target, message)


def _call_if_alive(method: weakref.WeakMethod[Any]) -> None:
    bound = method()
    if bound is not None:
        bound()


def _no_loading(user_ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    raise TimeoutError("the database is down: no settings lookup")


def _backoff(attempt: int) -> float:
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt) * random.uniform(0.5, 1.0)


class PostgresSpanExporter(SpanExporter):
    """An OpenTelemetry ``SpanExporter`` that stores spans in the seed's ``traces``/``spans`` tables.

    ``dsn``: argument, else ``OTEL_EXPORTER_POSTGRES_DSN``, else ``DATABASE_URL``, else libpq's
    ``PG*`` variables. Options (or ``OTEL_EXPORTER_POSTGRES_<NAME>``): ``timeout_s``,
    ``max_payload_chars``, ``prepared_statements`` (False behind PgBouncer/Supabase transaction
    poolers), ``pool_min_size``, ``pool_max_size``, ``application_name``, ``spool_dir`` ("off" to
    disable), ``spool_max_bytes``, ``shutdown_timeout_s``. See the README for defaults.
    """

    def __init__(self, dsn: str | None = None, **options: Any) -> None:
        self.settings: ExporterSettings = resolve_settings(dsn, **options)
        s = self.settings
        scrubber = (
            build_scrubber(parse_patterns(s.redact_patterns), own_dsn=s.dsn, defaults=s.scrub_secrets)
            if s.scrub_secrets or s.redact_patterns or s.dsn
            else None
        )
        self._limits = Limits(
            max_payload_chars=s.max_payload_chars, scrub=scrubber, capture_content=s.capture_content
        )
        self.pricer = Pricer(load_custom_prices(s.prices))
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": s.application_name,
            # a server that accepts TCP but never answers (partition, overloaded proxy) must not
            # hold a pool worker forever
            "connect_timeout": max(2, round(s.timeout_s)),
            # notice a dead peer on an idle pooled connection within about a minute
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
        if not s.prepared_statements:
            self._connect_kwargs["prepare_threshold"] = None
        self._limits_flipped = replace(self._limits, capture_content=not s.capture_content)
        self._pool_lock = threading.Lock()
        self._pool = self._new_pool()
        self._trace_users: OrderedDict[uuid.UUID, uuid.UUID] = OrderedDict()
        self._trace_users_lock = threading.Lock()
        self._writer = SpanWriter(
            lambda timeout: self._pool.connection(timeout=timeout),
            self._limits,
            transaction_timeout_s=s.timeout_s,
            schema=s.schema,
            content_policy=self._forbidden_users if s.user_settings else None,
        )
        self._user_settings = (
            UserSettingsCache(self._writer.load_observability, ttl_s=s.user_settings_ttl_s)
            if s.user_settings
            else None
        )
        self._state = _StateLog(describe(s.dsn))
        self._telemetry = ExporterTelemetry()
        self._forwarder: Forwarder | None = None
        if s.forward:
            try:
                self._forwarder = Forwarder(self._telemetry.add, timeout_s=s.timeout_s)
            except ImportError:
                raise ConfigurationError(
                    "forward=True needs opentelemetry-exporter-otlp-proto-http: "
                    "pip install 'otel-pg-exporter[forward]'"
                ) from None
        self._closing = threading.Event()  # shutdown() started: replayer drains until its deadline
        self._closed = threading.Event()  # shutdown() done: export() refuses
        self._shutdown_lock = threading.Lock()
        self._own_token = object()
        self._holders: set[object] = {self._own_token}  # see retain()
        self._shutdown_deadline = float("inf")
        self._db_down = threading.Event()  # set while batches go straight to the spool
        self._wake = threading.Event()
        self._replayer: threading.Thread | None = None
        self._replayer_lock = threading.Lock()
        self._fork_orphans: list[Any] = []
        if hasattr(os, "register_at_fork"):
            method = weakref.WeakMethod(self._after_fork_in_child)
            os.register_at_fork(after_in_child=lambda: _call_if_alive(method))
        self.spool: Spool | None = None
        if s.spool_enabled:
            root = Path(s.spool_dir) if s.spool_dir else default_spool_root()
            try:
                self.spool = Spool(root, s.dsn, s.spool_max_bytes)
            except OSError as exc:  # a read-only or missing volume must not stop the application
                logger.error(
                    "otel-pg-exporter: spool directory %s is not usable (%s); running without a spool: "
                    "batches that cannot be written are lost",
                    root,
                    safe_message(exc),
                )
                self._telemetry.add("spool_unavailable", 1)
            if self.spool is not None and self.spool.has_data():  # left by an earlier process: replay it
                self._start_replayer()

    def _new_pool(self) -> ConnectionPool:
        s = self.settings
        pool = ConnectionPool(
            s.dsn,
            min_size=s.pool_min_size,
            max_size=s.pool_max_size,
            kwargs=self._connect_kwargs,
            timeout=s.timeout_s,
            open=False,
            name="otel-pg-exporter",
        )
        pool.open(wait=False)
        return pool

    def _disable_prepared_statements(self, exc: BaseException) -> bool:
        """A pooler refused a prepared statement: from now on prepare nothing (a new pool). False
        when they were off already (the error is something else)."""
        with self._pool_lock:
            if self._connect_kwargs.get("prepare_threshold", 5) is None:
                return False
            self._connect_kwargs["prepare_threshold"] = None
        logger.warning(
            "otel-pg-exporter: the server refused a prepared statement (%s: a transaction-mode pooler?); "
            "prepared statements are off from now on (set prepared_statements=false to start that way)",
            type(exc).__name__,
        )
        self._telemetry.add("prepared_statements_disabled", 1)
        self._reset_pool()
        return True

    def _reset_pool(self) -> None:
        """Replace a pool stuck in its reconnect backoff (which doubles up to minutes) once the
        database answers again; the old one closes in the background."""
        with self._pool_lock:
            old, self._pool = self._pool, self._new_pool()
        threading.Thread(target=old.close, kwargs={"timeout": 1.0}, daemon=True).start()

    # -- SpanExporter API --------------------------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed.is_set():
            return SpanExportResult.FAILURE
        started = time.perf_counter()
        count = len(spans)
        self._telemetry.inflight(count)
        outcome = "failure"
        try:
            result, outcome = self._export(spans)
            return result
        except Exception as exc:  # never raise into the SDK
            self._telemetry.add("failed_batches", 1)
            self._telemetry.add("dropped", count, reason="internal_error")
            self._state.set("export failed", safe_message(exc, self.settings.dsn))
            return SpanExportResult.FAILURE
        finally:
            self._telemetry.inflight(-count)
            self._telemetry.export_duration(time.perf_counter() - started, outcome)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing is buffered in memory: every ``export()`` has committed or spooled (fsynced).
        Forwarded batches still queued are sent first."""
        if self._forwarder is not None:
            return self._forwarder.flush(timeout_millis / 1000)
        return True

    def retain(self) -> object:
        """Register one more user of this exporter (a ``PostgresLogExporter`` sharing its pool and
        spool); returns the token to ``release``. The real shutdown waits for every user."""
        token = object()
        with self._shutdown_lock:
            self._holders.add(token)
        return token

    def shutdown(self) -> None:
        """Drain the spool to the database for up to ``shutdown_timeout_s``, keep the rest on disk,
        close the pool. Idempotent; later ``export()`` calls return FAILURE. With users registered
        by ``retain``, this happens when the last of them is released."""
        self.release(self._own_token)

    def release(self, token: object) -> None:
        """A user of this exporter is done; the last one shuts it down."""
        with self._shutdown_lock:
            self._holders.discard(token)
            if self._holders or self._closing.is_set():
                return
            self._shutdown_deadline = time.monotonic() + self.settings.shutdown_timeout_s
            self._closing.set()
        self._wake.set()
        replayer = self._replayer
        if replayer is not None:
            replayer.join(timeout=max(0.0, self._shutdown_deadline - time.monotonic()) + 1.0)
        self._closed.set()
        if self._forwarder is not None:
            self._forwarder.shutdown(max(0.5, self._shutdown_deadline - time.monotonic()))
        if self.spool is not None:
            self.spool.close()
        self._pool.close(timeout=max(0.5, self._shutdown_deadline - time.monotonic()))

    def _after_fork_in_child(self) -> None:
        """In a forked child (gunicorn, multiprocessing): the parent's threads do not exist here, and
        its pooled connections, spool segment and forwarding sessions are the parent's. Start with
        our own. The parent's objects are kept referenced, never closed: closing a connection from
        here would end the parent's session."""
        self._fork_orphans.append((self._pool, self._forwarder))
        self._pool_lock = threading.Lock()
        self._trace_users_lock = threading.Lock()
        self._shutdown_lock = threading.Lock()
        self._replayer_lock = threading.Lock()
        self._replayer = None
        self._wake = threading.Event()
        self._telemetry.after_fork()
        if self._user_settings is not None:
            self._user_settings.after_fork()
        if self.spool is not None:
            self.spool.after_fork()
        if self._forwarder is not None:
            self._forwarder = self._forwarder.fresh()
        self._pool = self._new_pool()

    # -- introspection ------------------------------------------------------------------------------

    @property
    def limits(self) -> Limits:
        """Size caps, scrubber and content switch applied to everything this exporter stores."""
        return self._limits

    @property
    def telemetry(self) -> ExporterTelemetry:
        return self._telemetry

    def stats(self) -> dict[str, Any]:
        """Counters since start: exported, spooled, replayed, retried, dropped (+ by reason),
        sanitized, degraded, failed batches, export latency, and the spool's backlog."""
        out = self._telemetry.snapshot()
        out["state"] = self._state.state
        if self._user_settings is not None:
            out["user_settings_queries"] = self._user_settings.queries
            out["user_settings_failures"] = self._user_settings.failures
        if self.spool is not None:
            out["spool_dir"] = str(self.spool.directory)
            out["spool_bytes"] = self.spool.size_bytes()
        return out

    def encode(self, spans: Sequence[ReadableSpan]) -> list[EncodedSpan]:
        """Map and encode a batch; a span that breaks the mapping gets a minimal row instead.
        Content is kept or dropped per trace, by its user's settings when the user is known."""
        return self._encode(spans)[0]

    def _encode(
        self, spans: Sequence[ReadableSpan]
    ) -> tuple[list[EncodedSpan], dict[uuid.UUID, uuid.UUID], dict[uuid.UUID, UserObservability]]:
        """``encode``, plus each trace's user and the users' settings (for forwarding)."""
        mapped: list[tuple[ReadableSpan, SpanRecord | None, Exception | None]] = []
        for span in spans:
            try:
                record = self._priced(map_span(span))
                if self.settings.redact is not None:
                    record = self.settings.redact(record)
                mapped.append((span, record, None))
            except Exception as exc:
                mapped.append((span, None, exc))
        users: dict[uuid.UUID, uuid.UUID] = {}
        if self._user_settings is not None:
            users = self.trace_users([r for _, r, _ in mapped if r is not None])
        settings = self.user_observability(set(users.values()))
        glob = self._limits.capture_content
        allowed = {tid: content_allowed(glob, settings.get(uid)) for tid, uid in users.items()}
        encoded: list[EncodedSpan] = []
        for span, record, error in mapped:
            if record is not None:
                try:
                    limits = self._limits_for(allowed.get(record.trace_id))
                    encoded.append(encode_span(record, limits))
                    continue
                except Exception as exc:
                    error = exc
            assert error is not None
            fallback = fallback_record(span, error)
            if fallback is not None and (
                self.settings.redact is not None or not self.settings.capture_content
            ):
                fallback.metadata.pop("attributes_raw", None)  # unredacted content must not leak
            self._telemetry.add("mapping_fallbacks", 1)
            logger.warning(
                "otel-pg-exporter: span %r mapped minimally: %s",
                span.name,
                f"{type(error).__name__}: {error}"[:300],
            )
            if fallback is not None:
                encoded.append(encode_span(fallback, self._limits))
            else:
                self._telemetry.add("dropped", 1, reason="invalid_span")
        self._telemetry.add("sanitized", sum(1 for e in encoded if e.sanitized))
        return encoded, users, settings

    # -- per-user settings -------------------------------------------------------------------------

    def trace_users(self, records: Sequence[SpanRecord]) -> dict[uuid.UUID, uuid.UUID]:
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
        if self._db_down.is_set():  # cached values only: the writer's transaction checks again later
            return self._user_settings.get_many(user_ids, loader=_no_loading)
        return self._user_settings.get_many(user_ids)

    def _limits_for(self, allowed: bool | None) -> Limits:
        if allowed is None or allowed == self._limits.capture_content:
            return self._limits
        return self._limits_flipped

    def _forward(
        self,
        spans: Sequence[ReadableSpan],
        users: dict[uuid.UUID, uuid.UUID],
        settings: dict[uuid.UUID, UserObservability],
    ) -> None:
        """Each trace's spans to its user's LangSmith / Langfuse (queued; never raises)."""
        assert self._forwarder is not None
        try:
            glob = self._limits.capture_content

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
            self._state.set("forwarding failed", type(exc).__name__)

    def _forbidden_users(self, user_ids: Collection[Any], loader: Any) -> set[Any]:
        """For the writer: users (of traces it just wrote) whose content must not be stored."""
        assert self._user_settings is not None
        settings = self._user_settings.get_many(user_ids, loader)
        glob = self._limits.capture_content
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

    def _record(self, report: WriteReport, replayed: bool = False) -> None:
        t = self._telemetry
        t.add("exported", report.written)
        if replayed:
            t.add("replayed", report.written)
        t.add("degraded", report.degraded)
        t.add("dropped", report.dropped, reason="rejected_by_database")
        t.add("log_fragments_merged", report.merged)
        t.add("log_fragments_dropped", report.merge_dropped)

    def _export(self, spans: Sequence[ReadableSpan]) -> tuple[SpanExportResult, str]:
        encoded, users, settings = self._encode(spans)
        if self._forwarder is not None:
            self._forward(spans, users, settings)
        if not encoded:
            return SpanExportResult.SUCCESS, "empty"
        return self._deliver(encoded)

    def deliver_log_fragments(self, fragments: Sequence[LogFragment]) -> bool:
        """Merge log fragments (``PostgresLogExporter``) through the same retries, spool and
        replay as spans. Never raises; False when the fragments are lost."""
        if self._closed.is_set():
            return False
        try:
            result, _ = self._deliver(list(fragments))
            return result is SpanExportResult.SUCCESS
        except Exception as exc:
            self._telemetry.add("failed_batches", 1)
            self._state.set("log export failed", safe_message(exc, self.settings.dsn))
            return False

    def _deliver(self, encoded: list[SpoolItem]) -> tuple[SpanExportResult, str]:
        """Write with retries within the export timeout; spool what cannot be written."""
        if self.spool is not None and self._db_down.is_set():
            return self._to_spool(encoded)
        deadline = time.monotonic() + self.settings.timeout_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                # wait for a pooled connection for part of the budget, so there is time to retry
                wait = max(0.1, min(remaining, max(ATTEMPT_MIN_S, self.settings.timeout_s / 4)))
                report = self._writer.write(encoded, timeout=wait)
            except SETUP_ERRORS as exc:
                return self._unreachable(encoded, exc, "database not ready (schema or grants)")
            except PREPARED_STATEMENT_ERRORS as exc:
                if not self._disable_prepared_statements(exc):
                    raise
                continue  # the same batch, at once, on connections that prepare nothing
            except CONNECTION_ERRORS as exc:
                delay = _backoff(attempt)
                if deadline - time.monotonic() <= delay or self._closed.is_set():
                    return self._unreachable(encoded, exc)
                attempt += 1
                self._telemetry.add("retried", 1)
                self._closed.wait(delay)
                continue
            if self._state.state != "ok" and not self._db_down.is_set():
                self._state.set("ok")
            self._record(report)
            return SpanExportResult.SUCCESS, "stored"

    def _unreachable(
        self, encoded: list[SpoolItem], exc: BaseException, what: str = "database unreachable"
    ) -> tuple[SpanExportResult, str]:
        message = safe_message(exc, self.settings.dsn)
        if self.spool is None:
            self._state.set(f"{what}, spool off: batches are lost", message)
            self._telemetry.add("failed_batches", 1)
            self._telemetry.add("dropped", len(encoded), reason=what.split(" (")[0].replace(" ", "_"))
            return SpanExportResult.FAILURE, "failure"
        self._state.set(f"{what}, spooling to {self.spool.directory}", message)
        self._db_down.set()
        return self._to_spool(encoded)

    def _to_spool(self, encoded: list[SpoolItem]) -> tuple[SpanExportResult, str]:
        assert self.spool is not None
        try:
            dropped = self.spool.append(encoded)
        except OSError as exc:
            self._state.set("spool not writable: batches are lost", safe_message(exc))
            self._telemetry.add("failed_batches", 1)
            self._telemetry.add("dropped", len(encoded), reason="spool_error")
            return SpanExportResult.FAILURE, "failure"
        self._telemetry.add("spooled", len(encoded))
        self._telemetry.add("dropped", dropped, reason="spool_full")
        self._start_replayer()
        self._wake.set()
        return SpanExportResult.SUCCESS, "spooled"

    # -- replay -------------------------------------------------------------------------------------

    def _start_replayer(self) -> None:
        with self._replayer_lock:
            if self._replayer is None or not self._replayer.is_alive():
                self._replayer = threading.Thread(
                    target=self._replay_loop, name="otel-pg-exporter-replay", daemon=True
                )
                self._replayer.start()

    def _stop_replaying(self) -> bool:
        return self._closing.is_set() and time.monotonic() >= self._shutdown_deadline

    def _probe(self) -> bool:
        """Is the database back? Asked with a direct connection, so the answer does not wait for the
        pool's reconnect backoff; if the database answers but the pool does not, renew the pool."""
        try:
            with psycopg.connect(self.settings.dsn, **{**self._connect_kwargs, "connect_timeout": 2}) as conn:
                conn.execute("SELECT 1")
        except Exception:
            return False
        try:
            with self._pool.connection(timeout=0.5) as conn:
                conn.execute("SELECT 1")
        except Exception:
            self._reset_pool()
        return True

    def _replay_loop(self) -> None:
        assert self.spool is not None
        attempt = 0
        while not self._stop_replaying():
            if not self.spool.has_data():
                self._db_down.clear()
                if self._closing.is_set():
                    return
                self._wake.wait(RESCAN_S)
                self._wake.clear()
                continue
            if not self._probe():
                # Still down. During shutdown keep trying until its deadline; what is left then
                # stays on disk for the next process.
                self._db_down.set()
                if self._closing.is_set():
                    time.sleep(min(0.5, max(0.0, self._shutdown_deadline - time.monotonic())))
                else:
                    self._closing.wait(_backoff(attempt + 1))  # new spool data does not cut this short
                attempt += 1
                continue
            attempt = 0
            self.spool.seal()  # our active segment becomes replayable
            try:
                outcome = self._replay_segments()
            except Exception as exc:  # e.g. the schema is not installed yet: keep the data, try later
                self._state.set("replay failed, spool kept", safe_message(exc, self.settings.dsn))
                outcome = "failed"
                if not self._closing.is_set():
                    self._closing.wait(BACKOFF_MAX_S)
            if outcome == "failed":
                self._db_down.set()
                continue
            if outcome == "done" and not self.spool.has_data():
                self._db_down.clear()
                self._state.set("ok")
            elif outcome == "busy":  # the rest is held by live processes that replay it themselves
                self._db_down.clear()
                self._wake.wait(RESCAN_S)
                self._wake.clear()

    def _count_corrupt(self, spans: int) -> None:
        self._telemetry.add("dropped", spans, reason="spool_corrupt")

    def _replay_segments(self) -> str:
        """Replay every segment we can claim, oldest first: "done", "failed" or "busy"."""
        assert self.spool is not None
        replayed = 0
        busy = False
        for path in self.spool.segments():
            if self._stop_replaying():
                return "failed"
            with self.spool.claim(path) as f:
                if f is None:
                    busy = True
                    continue
                for record in iter_records(f, path.name, skipped=self._count_corrupt):
                    try:
                        spans = decode_payload(record.payload)
                    except (ValueError, KeyError, TypeError) as exc:
                        logger.warning(
                            "otel-pg-exporter: spool %s: unreadable record skipped: %s", path.name, exc
                        )
                        self._telemetry.add("dropped", record.span_count, reason="spool_corrupt")
                        continue
                    try:
                        report = self._writer.write(spans, timeout=self.settings.timeout_s)
                    except CONNECTION_ERRORS:
                        return "failed"
                    except PREPARED_STATEMENT_ERRORS as exc:  # the record stays: replayed again
                        self._disable_prepared_statements(exc)
                        return "failed"
                    self._record(report, replayed=True)
                    replayed += report.written
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if replayed:
            logger.warning(
                "otel-pg-exporter: replay done: %d spooled spans stored (pid %d)", replayed, os.getpid()
            )
        return "busy" if busy else "done"


def _env_int(name: str) -> int | None:
    try:
        return int(os.environ.get(name, ""))
    except ValueError:
        return None


def configure(
    dsn: str | None = None,
    *,
    service_name: str | None = None,
    batch: dict[str, int] | None = None,
    logs: bool = True,
    **options: Any,
) -> TracerProvider:
    """One line of setup: a ``BatchSpanProcessor`` around ``PostgresSpanExporter`` on the global
    ``TracerProvider`` (created, with ``service_name`` if given, unless an SDK one is already set).

    The processor gets the recommended queue settings (``RECOMMENDED_BSP``) unless ``batch`` or the
    SDK's ``OTEL_BSP_*`` variables say otherwise. With ``logs`` (the default), a
    ``PostgresLogExporter`` sharing the exporter goes on the global ``LoggerProvider`` (created the
    same way), so content that instrumentations emit as log records reaches the span rows too."""
    exporter = PostgresSpanExporter(dsn, **options)
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        provider = current
    else:
        attributes = {"service.name": service_name} if service_name else {}
        provider = TracerProvider(resource=Resource.create(attributes))
        trace.set_tracer_provider(provider)
    chosen = dict(batch or {})
    for name, (value, env_var) in RECOMMENDED_BSP.items():
        if name not in chosen and not os.environ.get(env_var):
            chosen[name] = value
    # the SDK refuses a batch larger than the queue (e.g. OTEL_BSP_MAX_QUEUE_SIZE=100)
    queue = chosen.get("max_queue_size") or _env_int("OTEL_BSP_MAX_QUEUE_SIZE") or 2048
    if "max_export_batch_size" in chosen and chosen["max_export_batch_size"] > queue:
        chosen["max_export_batch_size"] = queue
    provider.add_span_processor(BatchSpanProcessor(exporter, **chosen))
    if logs:
        _configure_logs(exporter, provider.resource)
    return provider


def _configure_logs(exporter: PostgresSpanExporter, resource: Resource) -> None:
    from opentelemetry._logs import get_logger_provider, set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    from .log_exporter import PostgresLogExporter

    current = get_logger_provider()
    if isinstance(current, LoggerProvider):
        logger_provider = current
    else:
        logger_provider = LoggerProvider(resource=resource)
        set_logger_provider(logger_provider)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(PostgresLogExporter(span_exporter=exporter))
    )
