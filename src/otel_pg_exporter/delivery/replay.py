"""The replayer: a named background task of ``Delivery`` that drains the spool.

One thread per process: it probes the database (``Delivery.probe``) with backoff while it is down;
as soon as it answers, new batches go to the database again (``Delivery`` clears its "down" state)
and the spool drains behind them, oldest segment first, record by record, through the same
idempotent writer. A record refused, or one that keeps failing while the database answers, is split
and what fails alone is set aside in the quarantine: the replay never stops the line. Segments held
by another live process are left to it. ``quarantine()`` drains the quarantine once, on request.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..config.dsn import safe_message
from ..failures import Failure, classify
from ..store import SetAside, WriteReport
from .retry import backoff
from .spool import Spool, SpoolItem, decode_payload, iter_records, summarize
from .telemetry import Counter, DropReason

if TYPE_CHECKING:
    from ..config.settings import ExporterSettings
    from ..store import SpanWriter
    from .retry import StateLog
    from .telemetry import ExporterTelemetry

logger = logging.getLogger("otel_pg_exporter")

#: How often the replayer looks for spool segments left by other (crashed) processes.
RESCAN_S = 30.0
#: A record's place: its segment's file name and its offset in it.
RecordKey = tuple[str, int]
#: A spool record that failed this many times in a row while the database answered its probe is set
#: aside (quarantined) instead of being tried again: it must not hold up the records behind it.
REPLAY_ATTEMPTS_MAX = 3


@dataclass
class QuarantineReplay:
    """What ``Replayer.quarantine`` did: spans stored, refused again (back in the quarantine), left
    in place (the database went away: ``error``)."""

    stored: int = 0
    refused: int = 0
    left: int = 0
    error: str | None = None


class ReplayTarget(Protocol):
    """What the replayer needs of its ``Delivery``: the writer, the spools, the state, and the few
    decisions that stay the delivery's (is it down, may prepared statements stay on, set aside)."""

    settings: ExporterSettings
    writer: SpanWriter
    state: StateLog
    telemetry: ExporterTelemetry
    spool: Spool | None
    quarantine: Spool | None

    @property
    def closing(self) -> bool: ...
    def stop_replaying(self) -> bool: ...
    def probe(self) -> bool: ...
    def mark_down(self, down: bool) -> None: ...
    def wait_while_down(self, seconds: float) -> None: ...
    def disable_prepared_statements(self, exc: BaseException) -> bool: ...
    def record(self, report: WriteReport, replayed: bool = False) -> None: ...
    def set_aside(self, set_aside: list[SetAside]) -> tuple[int, str | None]: ...


class Drained(enum.Enum):
    """How a pass over a spool's segments ended."""

    DONE = "done"  # every segment we could claim was written and removed
    FAILED = "failed"  # a record must stay (the database went away), or the close deadline passed
    BUSY = "busy"  # done, except segments another live process holds (it replays them itself)


class Replayer:
    """Drains ``delivery``'s spool on a thread of its own (started when there is something to do)."""

    def __init__(self, delivery: ReplayTarget) -> None:
        self.delivery = delivery
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._record_failures: dict[RecordKey, int] = {}
        #: when the replay last advanced, or the spool was last seen empty (``time.monotonic()``)
        self.progress_at = time.monotonic()

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="otel-pg-exporter-replay", daemon=True)
                self._thread.start()

    def wake(self) -> None:
        """New data, or closing: look now instead of at the next rescan."""
        self._wake.set()

    def join(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout=timeout)

    def after_fork(self) -> None:
        """In a forked child the parent's thread does not exist: start afresh when needed."""
        self._lock = threading.Lock()
        self._thread = None
        self._wake = threading.Event()

    # -- the loop ------------------------------------------------------------------------------------

    def _run(self) -> None:
        d = self.delivery
        spool = d.spool
        assert spool is not None
        attempt = 0  # probes that failed in a row
        failed = 0  # replay passes that failed in a row while the database answered
        while not d.stop_replaying():
            if not spool.has_data():
                d.mark_down(False)
                self.progress_at = time.monotonic()
                if d.closing:
                    return
                self._wake.wait(RESCAN_S)
                self._wake.clear()
                continue
            if not d.probe():
                # Still down. While closing keep trying until the deadline; what is left then
                # stays on disk for the next process.
                d.mark_down(True)
                d.wait_while_down(backoff(attempt + 1))
                attempt += 1
                continue
            attempt = 0
            # The database answers: new batches go to it again at once, whatever the spool holds
            # (every write is idempotent and order-independent); the spool drains behind them.
            d.mark_down(False)
            spool.seal()  # our active segment becomes replayable
            try:
                outcome = self._replay_spool(spool)
            except Exception as exc:  # not a database answer (those are classified per record)
                d.state.set("replay failed, spool kept", safe_message(exc, d.settings.dsn))
                outcome = Drained.FAILED
            if outcome is Drained.FAILED:
                failed += 1
                d.wait_while_down(backoff(min(failed, 6)))
                continue
            failed = 0
            if outcome is Drained.DONE and not spool.has_data():
                d.state.set("ok")
            elif outcome is Drained.BUSY:
                self._wake.wait(RESCAN_S)
                self._wake.clear()

    def _count_corrupt(self, spans: int) -> None:
        self.delivery.telemetry.add(Counter.DROPPED, spans, reason=DropReason.SPOOL_CORRUPT)

    def _drain(self, spool: Spool, write_record: Callable[[RecordKey, list[SpoolItem]], bool]) -> Drained:
        """Every segment of ``spool`` we can claim, oldest first, record by record through
        ``write_record`` (False: stop here, the segment stays); unreadable records are logged and
        counted, a segment written to the end is removed."""
        busy = False
        for path in spool.segments():
            if self.delivery.stop_replaying():
                return Drained.FAILED
            with spool.claim(path) as f:
                if f is None:
                    busy = True
                    continue
                for record in iter_records(f, path.name, skipped=self._count_corrupt):
                    try:
                        items = decode_payload(record.payload)
                    except (ValueError, KeyError, TypeError, zlib.error) as exc:
                        logger.warning(
                            "otel-pg-exporter: spool %s: unreadable record skipped: %s", path.name, exc
                        )
                        self._count_corrupt(record.span_count)
                        continue
                    if not write_record((path.name, record.offset), items):
                        return Drained.FAILED
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                self._record_failures = {k: v for k, v in self._record_failures.items() if k[0] != path.name}
        return Drained.BUSY if busy else Drained.DONE

    def _replay_spool(self, spool: Spool) -> Drained:
        """Replay the spool (``_drain`` through ``_replay_record``)."""
        replayed = 0

        def write(key: RecordKey, items: list[SpoolItem]) -> bool:
            nonlocal replayed
            written = self._replay_record(key, items)
            replayed += written or 0
            return written is not None

        outcome = self._drain(spool, write)
        if replayed and outcome is not Drained.FAILED:
            logger.warning(
                "otel-pg-exporter: replay done: %d spooled spans stored (pid %d)", replayed, os.getpid()
            )
        return outcome

    def _last_try(self, items: list[SpoolItem], message: str) -> WriteReport:
        """A record that keeps failing: written in halves, down to what fails alone (set aside),
        within a few export timeouts."""
        d = self.delivery
        timeout_s = d.settings.timeout_s
        try:
            return d.writer.write(
                items, timeout=timeout_s, deadline=time.monotonic() + 3 * timeout_s, split_timeouts=True
            )
        except Exception as exc:
            return WriteReport(
                set_aside=[SetAside(items, f"{message}; then {safe_message(exc, d.settings.dsn)}")]
            )

    def _replay_record(self, key: RecordKey, items: list[SpoolItem]) -> int | None:
        """Write one spool record: spans stored (or set aside), or None when it must stay in the
        spool (the database is down or not ready). A record that keeps failing while the database
        answers, or that fails for a reason that will recur, is set aside: it never stops the line."""
        d = self.delivery
        timeout_s = d.settings.timeout_s
        try:
            report = d.writer.write(items, timeout=timeout_s, deadline=time.monotonic() + timeout_s)
        except Exception as exc:
            failure = classify(exc)
            message = safe_message(exc, d.settings.dsn)
            if failure is Failure.POOLER and d.disable_prepared_statements(exc):
                return None  # the record stays: replayed again on connections that prepare nothing
            if failure is Failure.NOT_READY:
                d.state.set("database not ready (schema or grants), spool kept", message)
                return None
            if failure in (Failure.DOWN, Failure.RETRY):
                failures = self._record_failures[key] = self._record_failures.get(key, 0) + 1
                if failures < REPLAY_ATTEMPTS_MAX or not d.probe():
                    return None
                # It keeps failing while the database answers (a transaction our watchdog cuts
                # every time, say): one last try that splits it like a refusal, then set aside.
                report = self._last_try(
                    items, f"failed {failures} times while the database answered: {message}"
                )
            else:
                report = WriteReport(set_aside=[SetAside(items, message)])
        self._record_failures.pop(key, None)
        self.progress_at = time.monotonic()
        d.record(report, replayed=True)
        d.set_aside(report.set_aside)
        return report.written

    # -- the quarantine -------------------------------------------------------------------------------

    def quarantine(self) -> QuarantineReplay:
        """Write what the quarantine holds, once (``otel-pg-spool replay``, after the cause is
        fixed). Records refused again go back to the quarantine (new segments, with the new error);
        when the database is down or not ready the rest stays where it is."""
        d = self.delivery
        out = QuarantineReplay()
        quarantine = d.quarantine
        if quarantine is None:
            return out
        quarantine.seal()
        timeout_s = d.settings.timeout_s

        def write(key: RecordKey, items: list[SpoolItem]) -> bool:
            try:
                report = d.writer.write(items, timeout=timeout_s, deadline=time.monotonic() + timeout_s)
            except Exception as exc:
                if classify(exc) in (Failure.DOWN, Failure.RETRY, Failure.NOT_READY, Failure.POOLER):
                    out.error = safe_message(exc, d.settings.dsn)
                    return False
                report = WriteReport(set_aside=[SetAside(items, safe_message(exc, d.settings.dsn))])
            d.record(report, replayed=True)
            out.stored += report.written
            out.refused += d.set_aside(report.set_aside)[0]
            return True

        self._drain(quarantine, write)  # segments another process holds stay for its next run
        if out.error:
            out.left = summarize(quarantine.directory).spans
        return out
