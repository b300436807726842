"""``Delivery``: encoded batches → the store, with retries, the durable spool and its replay.

``deliver()`` writes a batch through ``store.SpanWriter``. Connection-class errors are retried with
exponential backoff and jitter within the export timeout; past it the batch goes to the durable
spool and the call reports success, so the SDK queue keeps draining. While the database is known to
be down, batches go to the spool at once (no waiting), and a background replayer probes the database
and drains the spool, oldest first, through the same idempotent writer. It never raises for a
database problem, and each state change is logged once.

It owns the connection pool (renewed when it is stuck in its reconnect backoff, or when a pooler
refuses prepared statements), the spool and the replayer thread; ``close()`` drains the spool until
a deadline and closes them; ``after_fork()`` gives a forked child its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from opentelemetry.sdk.trace.export import SpanExportResult
from psycopg_pool import ConnectionPool

from ..dsn import describe, safe_message
from ..records import Limits
from ..settings import ExporterSettings
from ..store import ContentPolicy, SpanWriter, WriteReport
from .retry import (
    ATTEMPT_MIN_S,
    BACKOFF_MAX_S,
    CONNECTION_ERRORS,
    PREPARED_STATEMENT_ERRORS,
    SETUP_ERRORS,
    StateLog,
    backoff,
)
from .spool import Spool, SpoolItem, decode_payload, default_spool_root, iter_records
from .telemetry import ExporterTelemetry

logger = logging.getLogger("otel_pg_exporter")

#: How often the replayer looks for spool segments left by other (crashed) processes.
RESCAN_S = 30.0


class Delivery:
    """Writes encoded batches to the database, or to the spool when it cannot; replays the spool."""

    def __init__(
        self,
        settings: ExporterSettings,
        limits: Limits,
        telemetry: ExporterTelemetry,
        content_policy: ContentPolicy | None = None,
    ) -> None:
        s = self.settings = settings
        self._telemetry = telemetry
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
        self._pool_lock = threading.Lock()
        self._pool = self._new_pool()
        self.writer = SpanWriter(
            lambda timeout: self._pool.connection(timeout=timeout),
            limits,
            transaction_timeout_s=s.timeout_s,
            schema=s.schema,
            content_policy=content_policy,
        )
        self.state = StateLog(describe(s.dsn))
        self._closing = threading.Event()  # close() started: the replayer drains until its deadline
        self._closed = threading.Event()  # close() done: nothing more is delivered
        self._deadline = float("inf")
        self._db_down = threading.Event()  # set while batches go straight to the spool
        self._wake = threading.Event()
        self._replayer: threading.Thread | None = None
        self._replayer_lock = threading.Lock()
        self._fork_orphans: list[Any] = []
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

    # -- state -------------------------------------------------------------------------------------

    @property
    def database_down(self) -> bool:
        """True while batches go straight to the spool (the database did not answer)."""
        return self._db_down.is_set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def pool(self) -> ConnectionPool:
        """The current connection pool (for diagnostics: ``get_stats()``; it may be replaced)."""
        return self._pool

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``; returns early when the delivery is closed."""
        self._closed.wait(seconds)

    # -- the pool ----------------------------------------------------------------------------------

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

    def load_observability(self, user_ids: list[Any]) -> dict[Any, Any]:
        """Raw per-user settings, read on a pooled connection (``UserSettingsCache``'s loader)."""
        return self.writer.load_observability(user_ids)

    # -- delivering --------------------------------------------------------------------------------

    def record(self, report: WriteReport, replayed: bool = False) -> None:
        t = self._telemetry
        t.add("exported", report.written)
        if replayed:
            t.add("replayed", report.written)
        t.add("degraded", report.degraded)
        t.add("dropped", report.dropped, reason="rejected_by_database")
        t.add("log_fragments_merged", report.merged)
        t.add("log_fragments_dropped", report.merge_dropped)

    def deliver(self, items: list[SpoolItem]) -> tuple[SpanExportResult, str]:
        """Write with retries within the export timeout; spool what cannot be written. Returns the
        result for the SDK and the outcome (``stored``, ``spooled``, ``failure``)."""
        if self.spool is not None and self._db_down.is_set():
            return self._to_spool(items)
        timeout_s = self.settings.timeout_s
        deadline = time.monotonic() + timeout_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                # wait for a pooled connection for part of the budget, so there is time to retry
                wait = max(0.1, min(remaining, max(ATTEMPT_MIN_S, timeout_s / 4)))
                report = self.writer.write(items, timeout=wait)
            except SETUP_ERRORS as exc:
                return self._unreachable(items, exc, "database not ready (schema or grants)")
            except PREPARED_STATEMENT_ERRORS as exc:
                if not self._disable_prepared_statements(exc):
                    raise
                continue  # the same batch, at once, on connections that prepare nothing
            except CONNECTION_ERRORS as exc:
                delay = backoff(attempt)
                if deadline - time.monotonic() <= delay or self._closed.is_set():
                    return self._unreachable(items, exc)
                attempt += 1
                self._telemetry.add("retried", 1)
                self._closed.wait(delay)
                continue
            if self.state.state != "ok" and not self._db_down.is_set():
                self.state.set("ok")
            self.record(report)
            return SpanExportResult.SUCCESS, "stored"

    def _unreachable(
        self, items: list[SpoolItem], exc: BaseException, what: str = "database unreachable"
    ) -> tuple[SpanExportResult, str]:
        message = safe_message(exc, self.settings.dsn)
        if self.spool is None:
            self.state.set(f"{what}, spool off: batches are lost", message)
            self._telemetry.add("failed_batches", 1)
            self._telemetry.add("dropped", len(items), reason=what.split(" (")[0].replace(" ", "_"))
            return SpanExportResult.FAILURE, "failure"
        self.state.set(f"{what}, spooling to {self.spool.directory}", message)
        self._db_down.set()
        return self._to_spool(items)

    def _to_spool(self, items: list[SpoolItem]) -> tuple[SpanExportResult, str]:
        assert self.spool is not None
        try:
            dropped = self.spool.append(items)
        except OSError as exc:
            self.state.set("spool not writable: batches are lost", safe_message(exc))
            self._telemetry.add("failed_batches", 1)
            self._telemetry.add("dropped", len(items), reason="spool_error")
            return SpanExportResult.FAILURE, "failure"
        self._telemetry.add("spooled", len(items))
        self._telemetry.add("dropped", dropped, reason="spool_full")
        self._start_replayer()
        self._wake.set()
        return SpanExportResult.SUCCESS, "spooled"

    # -- replay ------------------------------------------------------------------------------------

    def _start_replayer(self) -> None:
        with self._replayer_lock:
            if self._replayer is None or not self._replayer.is_alive():
                self._replayer = threading.Thread(
                    target=self._replay_loop, name="otel-pg-exporter-replay", daemon=True
                )
                self._replayer.start()

    def _stop_replaying(self) -> bool:
        return self._closing.is_set() and time.monotonic() >= self._deadline

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
                # Still down. While closing keep trying until the deadline; what is left then
                # stays on disk for the next process.
                self._db_down.set()
                if self._closing.is_set():
                    time.sleep(min(0.5, max(0.0, self._deadline - time.monotonic())))
                else:
                    self._closing.wait(backoff(attempt + 1))  # new spool data does not cut this short
                attempt += 1
                continue
            attempt = 0
            self.spool.seal()  # our active segment becomes replayable
            try:
                outcome = self._replay_segments()
            except Exception as exc:  # e.g. the schema is not installed yet: keep the data, try later
                self.state.set("replay failed, spool kept", safe_message(exc, self.settings.dsn))
                outcome = "failed"
                if not self._closing.is_set():
                    self._closing.wait(BACKOFF_MAX_S)
            if outcome == "failed":
                self._db_down.set()
                continue
            if outcome == "done" and not self.spool.has_data():
                self._db_down.clear()
                self.state.set("ok")
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
                        items = decode_payload(record.payload)
                    except (ValueError, KeyError, TypeError) as exc:
                        logger.warning(
                            "otel-pg-exporter: spool %s: unreadable record skipped: %s", path.name, exc
                        )
                        self._telemetry.add("dropped", record.span_count, reason="spool_corrupt")
                        continue
                    try:
                        report = self.writer.write(items, timeout=self.settings.timeout_s)
                    except CONNECTION_ERRORS:
                        return "failed"
                    except PREPARED_STATEMENT_ERRORS as exc:  # the record stays: replayed again
                        self._disable_prepared_statements(exc)
                        return "failed"
                    self.record(report, replayed=True)
                    replayed += report.written
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if replayed:
            logger.warning(
                "otel-pg-exporter: replay done: %d spooled spans stored (pid %d)", replayed, os.getpid()
            )
        return "busy" if busy else "done"

    # -- lifecycle ---------------------------------------------------------------------------------

    def begin_close(self, timeout_s: float) -> float:
        """Start closing: the replayer drains the spool for up to ``timeout_s``. Returns the deadline
        (``time.monotonic()``) by which ``finish_close`` gives up."""
        self._deadline = time.monotonic() + timeout_s
        self._closing.set()
        self._wake.set()
        replayer = self._replayer
        if replayer is not None:
            replayer.join(timeout=max(0.0, self._deadline - time.monotonic()) + 1.0)
        self._closed.set()
        return self._deadline

    def finish_close(self) -> None:
        """Keep what is left in the spool on disk; close the pool."""
        if self.spool is not None:
            self.spool.close()
        self._pool.close(timeout=max(0.5, self._deadline - time.monotonic()))

    def after_fork(self) -> None:
        """In a forked child: the parent's threads do not exist here, and its pooled connections and
        spool segment are the parent's. Start with our own; the parent's pool is kept referenced,
        never closed (closing a connection from here would end the parent's session)."""
        self._fork_orphans.append(self._pool)
        self._pool_lock = threading.Lock()
        self._replayer_lock = threading.Lock()
        self._replayer = None
        self._wake = threading.Event()
        if self.spool is not None:
            self.spool.after_fork()
        self._pool = self._new_pool()

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state.state}
        if self.spool is not None:
            out["spool_dir"] = str(self.spool.directory)
            out["spool_bytes"] = self.spool.size_bytes()
        return out

