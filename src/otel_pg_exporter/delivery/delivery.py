"""``Delivery``: encoded batches → the store, with retries, the durable spool and its replay.

``deliver()`` writes a batch through ``store.SpanWriter`` and reacts to a failure by its class
(``failures.classify``, one SQLSTATE table): the database down, or a transaction conflict, is
retried with exponential backoff and jitter within the export timeout; past it the batch goes to the
durable spool and the call reports success, so the SDK queue keeps draining. While the database is
known to be down, batches go to the spool at once (no waiting), and a background replayer probes the
database and drains the spool, oldest first, through the same idempotent writer; new batches go to
the database again as soon as it answers, whatever the spool still holds. A refusal that will recur
(out of shared memory, a statement timeout) is split by the writer; what it refuses even alone is
set aside in the quarantine (``otel-pg-spool`` replays it), never retried in line. A spool record
that keeps failing while the database answers is set aside too, so the replay never stops the
line. It never raises for a database problem, and each state change is logged once.

It owns the connection pool (renewed when it is stuck in its reconnect backoff, or when a pooler
refuses prepared statements), the spool and the replayer thread; ``close()`` drains the spool until
a deadline and closes them; ``after_fork()`` gives a forked child its own.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from opentelemetry.sdk.trace.export import SpanExportResult
from psycopg_pool import ConnectionPool

from ..config.dsn import describe, safe_message
from ..config.settings import ExporterSettings
from ..failures import Failure, classify
from ..pipeline.encoding import Limits
from ..store import ContentPolicy, SetAside, SpanWriter, WriteReport
from .replay import QuarantineReplay, Replayer
from .retry import ATTEMPT_MIN_S, StateLog, backoff
from .spool import (
    QUARANTINE,
    SegmentCounts,
    Spool,
    SpoolItem,
    spool_root,
    summarize,
)
from .telemetry import Counter, DropReason, ExporterTelemetry

logger = logging.getLogger("otel_pg_exporter")

#: The spool holds data, the database answers, and nothing was replayed for this long: "not advancing".
REPLAY_STALLED_S = 60.0


class Outcome(str, enum.Enum):
    """What became of a batch."""

    STORED = "stored"  # committed (minus what was set aside, see ``Delivered.refused``)
    SPOOLED = "spooled"  # in the durable spool: the database is down
    EMPTY = "empty"  # nothing to write
    FAILURE = "failure"  # lost, and counted


@dataclass(frozen=True)
class Delivered:
    """The answer for the SDK (``result``), what became of the batch, and how many of its items
    the database refused even alone (``refused``: quarantined, or dropped without a spool), with
    the first reason."""

    result: SpanExportResult
    outcome: Outcome
    refused: int = 0
    reason: str | None = None

    @property
    def durable(self) -> bool:
        """Every item is committed, spooled or quarantined (a success answer may be given)."""
        return self.result is SpanExportResult.SUCCESS


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
        self.telemetry = telemetry
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
            max_traces_per_transaction=s.max_traces_per_transaction,
        )
        self.state = StateLog(describe(s.dsn))
        self._closing = threading.Event()  # close() started: the replayer drains until its deadline
        self._closed = threading.Event()  # close() done: nothing more is delivered
        self._deadline = float("inf")
        self._db_down = threading.Event()  # set while batches go straight to the spool
        self._fork_orphans: list[Any] = []
        self._replayer = Replayer(self)
        self._quarantine_counts: SegmentCounts = {}  # for stats(): segments already counted
        self._quarantine_counts_lock = threading.Lock()
        self.spool: Spool | None = None
        self.quarantine: Spool | None = None
        if s.spool_enabled:
            root: Any = s.spool_dir or "the default spool directory"
            try:
                root = spool_root(s.spool_dir)
                self.spool = Spool(root, s.dsn, s.spool_max_bytes)
                self.quarantine = Spool(root, s.dsn, s.spool_max_bytes, folder=QUARANTINE)
            except OSError as exc:  # a read-only or missing volume must not stop the application
                logger.error(
                    "otel-pg-exporter: spool directory %s is not usable (%s); running without a spool: "
                    "batches that cannot be written are lost",
                    root,
                    safe_message(exc),
                )
                self.telemetry.add(Counter.SPOOL_UNAVAILABLE, 1)
                self.spool = self.quarantine = None
            if self.spool is not None and self.spool.has_data():  # left by an earlier process: replay it
                self._replayer.start()

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

    def disable_prepared_statements(self, exc: BaseException) -> bool:
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
        self.telemetry.add(Counter.PREPARED_STATEMENTS_DISABLED, 1)
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
        t = self.telemetry
        t.add(Counter.EXPORTED, report.written)
        if replayed:
            t.add(Counter.REPLAYED, report.written)
        t.add(Counter.DEGRADED, report.degraded)
        t.add(Counter.DROPPED, report.dropped, reason=DropReason.REJECTED_BY_DATABASE)
        t.add(Counter.LOG_FRAGMENTS_MERGED, report.merged)
        t.add(Counter.LOG_FRAGMENTS_DROPPED, report.merge_dropped)
        t.add(Counter.SPLIT_BATCHES, report.splits)

    def deliver(self, items: list[SpoolItem]) -> Delivered:
        """Write with retries within the export timeout; spool what cannot be written now, set
        aside what the database refuses even alone. Never raises for a database problem."""
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
                report = self.writer.write(items, timeout=wait, deadline=deadline)
            except Exception as exc:
                failure = classify(exc)
                if failure is Failure.NOT_READY:
                    return self._unreachable(
                        items, exc, "database not ready (schema or grants)", DropReason.DATABASE_NOT_READY
                    )
                if failure is Failure.POOLER and self.disable_prepared_statements(exc):
                    continue  # the same batch, at once, on connections that prepare nothing
                if failure in (Failure.DOWN, Failure.RETRY):
                    delay = backoff(attempt)
                    if deadline - time.monotonic() <= delay or self._closed.is_set():
                        return self._unreachable(items, exc)
                    attempt += 1
                    self.telemetry.add(Counter.RETRIED, 1)
                    self._closed.wait(delay)
                    continue
                if failure is Failure.BUG:
                    raise
                # a refusal the writer could not split (or a pooler still refusing): set aside whole
                report = WriteReport(set_aside=[SetAside(list(items), safe_message(exc, self.settings.dsn))])
            if self.state.state != "ok" and not self._db_down.is_set():
                self.state.set("ok")
            self.record(report)
            refused, reason = self.set_aside(report.set_aside)
            return Delivered(SpanExportResult.SUCCESS, Outcome.STORED, refused, reason)

    def set_aside(self, set_aside: list[SetAside]) -> tuple[int, str | None]:
        """Batches the database refused even alone: into the quarantine (or dropped and counted
        without a spool). Logged once per call, with the first error. Returns (items, first error)."""
        if not set_aside:
            return 0, None
        count = sum(len(a.items) for a in set_aside)
        traces = len({i.trace_id for a in set_aside for i in a.items})
        first = set_aside[0].error
        where = "dropped (no spool)"
        if self.quarantine is not None:
            try:
                for aside in set_aside:
                    dropped = self.quarantine.append(aside.items, aside.error)
                    self.telemetry.add(Counter.DROPPED, dropped, reason=DropReason.QUARANTINE_FULL)
                    self.quarantine.seal()  # readable by otel-pg-spool at once
                self.telemetry.add(Counter.QUARANTINED, count)
                where = f"set aside in {self.quarantine.directory}"
            except OSError as exc:
                self.telemetry.add(Counter.DROPPED, count, reason=DropReason.SPOOL_ERROR)
                where = f"lost: the quarantine is not writable ({safe_message(exc)})"
        else:
            self.telemetry.add(Counter.DROPPED, count, reason=DropReason.REFUSED_BY_DATABASE)
        logger.error(
            "otel-pg-exporter: the database refused %d items of %d traces even alone; %s: %s",
            count,
            traces,
            where,
            first,
        )
        return count, first

    def _unreachable(
        self,
        items: list[SpoolItem],
        exc: BaseException,
        what: str = "database unreachable",
        reason: DropReason = DropReason.DATABASE_UNREACHABLE,
    ) -> Delivered:
        message = safe_message(exc, self.settings.dsn)
        if self.spool is None:
            self.state.set(f"{what}, spool off: batches are lost", message)
            self.telemetry.add(Counter.FAILED_BATCHES, 1)
            self.telemetry.add(Counter.DROPPED, len(items), reason=reason)
            return Delivered(SpanExportResult.FAILURE, Outcome.FAILURE)
        self.state.set(f"{what}, spooling to {self.spool.directory}", message)
        self._db_down.set()
        return self._to_spool(items)

    def _to_spool(self, items: list[SpoolItem]) -> Delivered:
        assert self.spool is not None
        try:
            dropped = self.spool.append(items)
        except OSError as exc:
            self.state.set("spool not writable: batches are lost", safe_message(exc))
            self.telemetry.add(Counter.FAILED_BATCHES, 1)
            self.telemetry.add(Counter.DROPPED, len(items), reason=DropReason.SPOOL_ERROR)
            return Delivered(SpanExportResult.FAILURE, Outcome.FAILURE)
        self.telemetry.add(Counter.SPOOLED, len(items))
        self.telemetry.add(Counter.DROPPED, dropped, reason=DropReason.SPOOL_FULL)
        self._replayer.start()
        self._replayer.wake()
        return Delivered(SpanExportResult.SUCCESS, Outcome.SPOOLED)

    # -- replay (``replay.Replayer``) ----------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def mark_down(self, down: bool) -> None:
        """The replayer's verdict: the database is down (batches go straight to the spool) or back."""
        if down:
            self._db_down.set()
        else:
            self._db_down.clear()

    def wait_while_down(self, seconds: float) -> None:
        """The replayer's pause between probes: cut short only by closing (new spool data does not),
        and never past the close deadline once closing."""
        if self._closing.is_set():
            time.sleep(min(0.5, max(0.0, self._deadline - time.monotonic())))
        else:
            self._closing.wait(seconds)

    def stop_replaying(self) -> bool:
        """Closing, and past the close deadline: the replayer stops where it is."""
        return self._closing.is_set() and time.monotonic() >= self._deadline

    def probe(self) -> bool:
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

    def replay_quarantine(self) -> QuarantineReplay:
        """Write what the quarantine holds, once (``otel-pg-spool replay``): ``Replayer.quarantine``."""
        return self._replayer.quarantine()

    def replay_stalled_s(self) -> float:
        """Seconds the spool has held data without the replay advancing while the database
        answered (0 when the spool is empty or the database is down: waiting is expected then)."""
        if self.spool is None or self._db_down.is_set() or not self.spool.has_data():
            return 0.0
        return max(0.0, time.monotonic() - self._replayer.progress_at)

    # -- lifecycle ---------------------------------------------------------------------------------

    def begin_close(self, timeout_s: float) -> float:
        """Start closing: the replayer drains the spool for up to ``timeout_s``. Returns the deadline
        (``time.monotonic()``) by which ``finish_close`` gives up."""
        self._deadline = time.monotonic() + timeout_s
        self._closing.set()
        self._replayer.wake()
        self._replayer.join(timeout=max(0.0, self._deadline - time.monotonic()) + 1.0)
        self._closed.set()
        return self._deadline

    def finish_close(self) -> None:
        """Keep what is left in the spool on disk; close the pool."""
        if self.spool is not None:
            self.spool.close()
        if self.quarantine is not None:
            self.quarantine.close()
        self._pool.close(timeout=max(0.5, self._deadline - time.monotonic()))

    def after_fork(self) -> None:
        """In a forked child: the parent's threads do not exist here, and its pooled connections and
        spool segment are the parent's. Start with our own; the parent's pool is kept referenced,
        never closed (closing a connection from here would end the parent's session)."""
        self._fork_orphans.append(self._pool)
        self._pool_lock = threading.Lock()
        self._quarantine_counts_lock = threading.Lock()
        self._replayer.after_fork()
        if self.spool is not None:
            self.spool.after_fork()
        if self.quarantine is not None:
            self.quarantine.after_fork()
        self._pool = self._new_pool()

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state.state}
        if self.spool is not None:
            out["spool_dir"] = str(self.spool.directory)
            out["spool_bytes"] = self.spool.size_bytes()
            stalled = self.replay_stalled_s()
            out["replay_stalled"] = stalled >= REPLAY_STALLED_S
            out["replay_stalled_s"] = round(stalled, 1)
        if self.quarantine is not None:
            with self._quarantine_counts_lock:
                held = summarize(self.quarantine.directory, counted=self._quarantine_counts)
            out["quarantine_dir"] = str(self.quarantine.directory)
            out["quarantine_spans"] = held.spans
            out["quarantine_bytes"] = held.bytes
        return out
