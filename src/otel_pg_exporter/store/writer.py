"""``SpanWriter``: encoded spans and log fragments → PostgreSQL, one transaction per batch.

The only code that writes spans. Statements live in ``store.statements``, their parameters are built
by ``store.batch``; this module runs them: a transaction per batch on a pooled connection, bounded
by a watchdog, rows the database refuses isolated by bisection (stored without payload, else
dropped and counted), log fragments merged under the same trace locks, content of users who do
not allow it stripped before commit.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from ..config.user_settings import resolve_vault_refs, vault_refs
from ..connection import ConnectionSource, local_search_path, watchdog
from ..failures import TransactionTimedOut, is_bad_row, is_refusal
from ..pipeline.annotations import from_evaluation, rows_json
from ..pipeline.encoding import EncodedSpan, Limits, row_json
from ..pipeline.log_fragments import LogFragment, fragment_hints, merge_fragment, stored_from_row
from ..pipeline.mapping import ns_to_datetime
from ..pipeline.sanitize import clean_text, encode_json
from . import statements as sql
from .annotations import upsert_annotations
from .batch import SpanBatch, chunks_by_trace, dumps, halves, placeholder_row, trace_document

logger = logging.getLogger("otel_pg_exporter")

#: Default bound on the traces one transaction locks (one advisory lock each). PostgreSQL's lock
#: table holds about ``max_locks_per_transaction × max_connections`` locks for the whole cluster
#: (6,400 on the defaults); a larger batch is written as several transactions.
MAX_TRACES_PER_TRANSACTION = 500
#: Which of these users may not have content stored (given a loader that reads their settings).
ContentPolicy = Callable[[Collection[Any], Callable[[list[Any]], dict[Any, Any]]], set[Any]]


@dataclass(frozen=True)
class SetAside:
    """Items the database refused even alone (or past the deadline) for a reason that will recur:
    kept whole, with the error, for the quarantine."""

    items: list[Any]
    error: str


@dataclass
class WriteReport:
    """Outcome of one ``write``: rows stored, degraded (stored minus payload), dropped; log
    fragments merged into span rows, and fragments dropped; what was set aside (refused)."""

    written: int = 0
    degraded: int = 0
    dropped: int = 0
    merged: int = 0
    merge_dropped: int = 0
    errors: list[str] = field(default_factory=list)
    set_aside: list[SetAside] = field(default_factory=list)
    #: chunks the server refused and that were written as halves instead
    splits: int = 0

    @property
    def set_aside_count(self) -> int:
        return sum(len(s.items) for s in self.set_aside)


@dataclass(frozen=True, slots=True)
class _FragmentHints:
    hints: Any
    started_at: datetime | None


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def _isolating(
    items: list[Any], write: Callable[[list[Any]], None], refused: Callable[[Any, str], None]
) -> int:
    """Write ``items``; on a data error split the batch in halves until the offending item is
    alone, and hand it to ``refused``. Returns how many were written as they were. Connection
    errors propagate (the caller retries)."""
    try:
        write(items)
        return len(items)
    except Exception as exc:
        if not is_bad_row(exc):  # the failures table decides; a bug of ours propagates
            raise
        if len(items) > 1:
            mid = len(items) // 2
            return _isolating(items[:mid], write, refused) + _isolating(items[mid:], write, refused)
        error = _one_line(exc)
    refused(items[0], error)
    return 0


def _splitting(
    items: list[Any],
    write: Callable[[list[Any]], None],
    report: WriteReport,
    deadline: float | None,
    split_timeouts: bool = False,
) -> None:
    """Write ``items``; when the server refuses them for a reason that will recur (out of shared
    memory, a statement timeout, a program limit: ``failures.Failure.REFUSED``; with
    ``split_timeouts`` also our own watchdog's cut), write the halves (by trace, then by span).
    What still fails alone, or once ``deadline`` has passed, is set aside in ``report`` with its
    error. Every other error propagates."""
    try:
        write(items)
    except Exception as exc:
        if not (is_refusal(exc) or (split_timeouts and isinstance(exc, TransactionTimedOut))):
            raise
        parts = halves(items)
        if not parts or (deadline is not None and time.monotonic() >= deadline):
            report.set_aside.append(SetAside(list(items), _one_line(exc)))
            return
        report.splits += 1
        for part in parts:
            _splitting(part, write, report, deadline, split_timeouts)


def _fragment_refused(report: WriteReport) -> Callable[[LogFragment, str], None]:
    def refused(fragment: LogFragment, error: str) -> None:
        report.merge_dropped += 1
        report.errors.append(error)
        logger.error("otel-pg-exporter: dropped log records of span %s: %s", fragment.span_hex, error)

    return refused


class SpanWriter:
    """Writes batches of encoded spans in one transaction each; isolates rows the database refuses.

    ``transaction_timeout_s`` bounds one transaction on the client side: past it the socket is
    shut down, which surfaces as a connection error (retried or spooled by the caller)."""

    def __init__(
        self,
        connection: ConnectionSource,
        limits: Limits | None = None,
        transaction_timeout_s: float = 30.0,
        schema: str | None = None,
        content_policy: ContentPolicy | None = None,
        max_traces_per_transaction: int = MAX_TRACES_PER_TRANSACTION,
    ) -> None:
        self._connection = connection
        self._max_traces = max(1, max_traces_per_transaction)
        self._limits = limits or Limits()
        self._transaction_timeout_s = transaction_timeout_s
        self._content_policy = content_policy
        self._vault_warned = False
        self._judgement_refusals: set[str] = set()
        # set per transaction (SET LOCAL), so it also holds behind transaction-mode poolers; the
        # name travels quoted, as a bound parameter
        self._search_path = local_search_path(schema)

    def _begin(self, cur: psycopg.Cursor[Any]) -> None:
        if self._search_path is not None:
            cur.execute(sql.SET_SEARCH_PATH, {"search_path": self._search_path})

    @contextmanager
    def _transaction_cursor(self, timeout: float | None) -> Iterator[psycopg.Cursor[Any]]:
        """One transaction on a pooled connection, bounded by the watchdog, search_path set."""
        with (
            self._connection(timeout) as conn,
            watchdog(conn, self._transaction_timeout_s),
            conn.transaction(),
            conn.cursor() as cur,
        ):
            self._begin(cur)
            yield cur

    def load_observability(
        self, user_ids: list[Any], cur: psycopg.Cursor[Any] | None = None
    ) -> dict[Any, Any]:
        """Raw ``observability`` objects of ``user_ids`` (absent users are missing from the result).
        With ``cur``, inside that transaction (under a savepoint: a failure leaves it usable)."""
        if cur is not None:
            with cur.connection.transaction():
                return self._load_observability(cur, user_ids)
        # a short wait: a lookup must not hold up the batch when the pool is exhausted or down
        wait = min(2.0, self._transaction_timeout_s / 4)
        with (
            self._connection(wait) as conn,
            watchdog(conn, wait * 2),
            conn.transaction(),
            conn.cursor() as own,
        ):
            self._begin(own)
            return self._load_observability(own, user_ids)

    def _load_observability(self, cur: psycopg.Cursor[Any], user_ids: list[Any]) -> dict[Any, Any]:
        cur.execute(sql.LOAD_OBSERVABILITY, {"ids": user_ids})
        raw = dict(cur.fetchall())
        refs = vault_refs(raw)
        if not refs:
            return raw
        try:
            with cur.connection.transaction():  # a savepoint: no vault, or no grant, is not fatal
                cur.execute(sql.VAULT_SECRETS, {"refs": sorted(refs)})
                secrets: dict[str, str] = {}
                for secret_id, name, value in cur.fetchall():
                    if isinstance(value, str):
                        secrets[secret_id] = value
                        if name:
                            secrets[name] = value
        except psycopg.Error as exc:
            secrets = {}
            if not self._vault_warned:
                self._vault_warned = True
                logger.warning(
                    "otel-pg-exporter: vault references in profiles.settings cannot be read (%s); "
                    "those forwarding targets are skipped",
                    type(exc).__name__,
                )
        return {uid: resolve_vault_refs(value, secrets) for uid, value in raw.items()}

    def _strip_forbidden_content(self, cur: psycopg.Cursor[Any], traces: str) -> None:
        """Traces of this transaction (the ``traces`` document) whose user does not allow content
        lose it before commit."""
        if self._content_policy is None:
            return
        cur.execute(sql.TRACE_USERS, {"traces": traces})
        users = dict(cur.fetchall())
        if not users:
            return
        forbidden = self._content_policy(set(users.values()), lambda ids: self.load_observability(ids, cur))
        stripped = sorted(t for t, u in users.items() if u in forbidden)
        if stripped:
            cur.execute(sql.STRIP_CONTENT, {**sql.STRIP_PARAMS, "tid": stripped})
            cur.execute(sql.STRIP_QUERY, {"tid": stripped})

    def write(
        self,
        items: Sequence[EncodedSpan | LogFragment],
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        split_timeouts: bool = False,
    ) -> WriteReport:
        """Store spans and merge log fragments, in transactions of at most
        ``max_traces_per_transaction`` traces each.

        Connection errors and transaction conflicts propagate (the caller retries; every
        transaction is idempotent, so chunks already committed are written again harmlessly). Bad
        rows are isolated by bisection: a span is then stored without its payload, or dropped (and
        counted) if even that fails; a fragment is dropped and counted. Refusals that will recur
        (``failures.Failure.REFUSED``) split the chunk by trace; what still fails alone, or after
        ``deadline`` (``time.monotonic()``), is returned in ``report.set_aside``. With
        ``split_timeouts`` a transaction our watchdog cut is split the same way (the replayer's last
        try of a record that keeps timing out while the database answers)."""
        report = WriteReport()
        spans = [i for i in items if isinstance(i, EncodedSpan)]
        fragments = [i for i in items if isinstance(i, LogFragment)]
        if spans:
            refused = self._span_refused(report, timeout)  # counts what it stores degraded itself

            def store(batch: list[EncodedSpan]) -> None:
                stored = _isolating(batch, lambda b: self._write_batch(b, timeout), refused)
                report.written += stored  # after the call: ``refused`` adds what it degraded

            for chunk in chunks_by_trace(spans, self._max_traces):
                _splitting(chunk, store, report, deadline, split_timeouts)
        if fragments:
            dropped = _fragment_refused(report)

            def merge(batch: list[LogFragment]) -> None:
                merged = _isolating(batch, lambda b: self._merge_transaction(b, timeout), dropped)
                report.merged += merged

            for chunk in chunks_by_trace(fragments, self._max_traces):
                _splitting(chunk, merge, report, deadline, split_timeouts)
        return report

    def _merge_transaction(self, fragments: list[LogFragment], timeout: float | None) -> None:
        """Log fragments into span rows: lock the traces, make sure trace and span rows exist
        (placeholders until the span arrives), merge under the row locks, refresh the traces."""
        hinted = [_FragmentHints(fragment_hints(f), ns_to_datetime(f.first_ns)) for f in fragments]
        traces = trace_document(hinted, self._limits)
        placeholders: list[dict[str, Any]] = []
        by_span: dict[Any, list[LogFragment]] = defaultdict(list)
        for f in fragments:
            if f.span_id not in by_span:
                placeholders.append(placeholder_row(f.trace_id, f.span_id, f.trace_hex, f.span_hex))
            by_span[f.span_id].append(f)
        cap = self._limits.max_payload_chars
        with self._transaction_cursor(timeout) as cur:
            cur.execute(sql.LOCK_TRACES, {"traces": traces})
            cur.execute(sql.UPSERT_TRACES, {"traces": traces})
            cur.execute(sql.INSERT_PLACEHOLDERS, {"placeholders": dumps(placeholders)})
            cur.execute(sql.SELECT_FOR_MERGE, {"sid": sorted(by_span)})
            rows = []
            for span_id, *stored in cur.fetchall():
                content = stored_from_row(stored)
                changed = False
                for fragment in by_span.get(span_id, ()):
                    content, did = merge_fragment(content, fragment)
                    changed = changed or did
                if changed:
                    rows.append(
                        "{"
                        + f'"span_id":"{span_id}",'
                        + f'"inputs":{encode_json(content.inputs, cap)[0]},'
                        + f'"outputs":{encode_json(content.outputs, cap)[0]},'
                        + f'"evaluation":{encode_json(content.evaluation, cap)[0]},'
                        + f'"error":{dumps(content.error)},'
                        + f'"error_stack":{dumps(content.error_stack)},'
                        + f'"logs":{encode_json(content.logs, cap)[0]}'
                        + "}"
                    )
            if rows:
                cur.execute(sql.UPDATE_MERGED, {"rows": "[" + ",".join(rows) + "]"})
            judged = self._logged_judgements(fragments)
            if judged:
                self._store_judgements(cur, rows_json(judged))
            cur.execute(sql.RECOMPUTE_TRACES, {"traces": traces})
            self._strip_forbidden_content(cur, traces)

    def _logged_judgements(self, fragments: list[LogFragment]) -> list[dict[str, Any]]:
        """The judgements of log records (``gen_ai.evaluation.result`` events) as annotation rows."""
        rows: list[dict[str, Any]] = []
        for f in fragments:
            if f.evaluations:
                rows += from_evaluation(
                    [item[2] for item in f.evaluations],
                    span_id=f.span_id,
                    trace_id=f.trace_id,
                    scrub=self._limits.scrub,
                    capture_content=self._limits.capture_content,
                )
        return rows

    def _span_refused(self, report: WriteReport, timeout: float | None) -> Callable[[EncodedSpan, str], None]:
        """A span the database refused: store it without its payload, else drop it (counted)."""

        def refused(span: EncodedSpan, error: str) -> None:
            try:
                self._write_batch([_degraded(span, error)], timeout)
                report.degraded += 1
                report.written += 1
                logger.warning("otel-pg-exporter: span %s stored without payload: %s", span.name[:80], error)
            except Exception as exc:
                if not is_bad_row(exc):
                    raise
                report.dropped += 1
                report.errors.append(error)
                logger.error(
                    "otel-pg-exporter: dropped span %s: %s / %s", span.name[:80], error, _one_line(exc)
                )

        return refused

    def _write_batch(self, spans: list[EncodedSpan], timeout: float | None) -> None:
        try:
            self._transaction(spans, timeout, explicit_ids=True)
        except pg_errors.UniqueViolation as exc:
            if exc.diag.constraint_name != "traces_execution_id_key":
                raise
            # Two traces raced for one explicit execution id: keep the trace hex ids instead.
            self._transaction(spans, timeout, explicit_ids=False)

    def _transaction(self, spans: list[EncodedSpan], timeout: float | None, explicit_ids: bool) -> None:
        batch = SpanBatch.of(spans, self._limits, explicit_ids)
        params = batch.params
        with self._transaction_cursor(timeout) as cur:
            cur.execute(sql.LOCK_TRACES, params)
            cur.execute(sql.WRITE_BATCH, params)
            existed = {row[0] for row in cur.fetchall()}
            if batch.children is not None:
                cur.execute(sql.MERGE_CHILDREN, {"children": batch.children})
            if existed:  # traces stored before: their totals come from all their stored spans
                cur.execute(sql.RECOMPUTE_TRACES, {"traces": batch.traces_among(existed)})
            judged = [s.annotations for s in spans if s.annotations]
            if judged:
                self._store_judgements(cur, "[" + ",".join(j[1:-1] for j in judged) + "]")
            self._strip_forbidden_content(cur, params["traces"])

    def _store_judgements(self, cur: psycopg.Cursor[Any], rows: str) -> None:
        """The spans' judgements into ``otel_annotations``, in the spans' transaction but under a
        savepoint: a refusal (the table not installed yet: migration 009) costs the judgements, never
        the spans. Logged once per kind of refusal."""
        try:
            with cur.connection.transaction():
                upsert_annotations(cur, rows)
        except psycopg.Error as exc:
            if exc.sqlstate is None:  # the connection, not the statement: the batch's failure
                raise
            if exc.sqlstate not in self._judgement_refusals:
                self._judgement_refusals.add(exc.sqlstate)
                logger.warning(
                    "otel-pg-exporter: judgements on spans not stored (%s); the spans are. "
                    "Is migration 009 installed? (otel-pg-install-schema)",
                    _one_line(exc),
                )


def _degraded(span: EncodedSpan, error: str) -> EncodedSpan:
    """The span without its payload columns, for a row the database refused as it was."""
    name, _ = clean_text(span.name.encode("ascii", "replace").decode(), 255)
    meta, _ = encode_json(
        {
            "otel": {"trace_id": span.hints.trace_hex},
            "write_error": error,
            "dropped_columns": [
                "inputs",
                "outputs",
                "metadata",
                "evaluation",
                "api_limits",
                "error",
                "error_stack",
            ],
        },
        10_000,
    )
    try:
        columns = span.columns()
    except ValueError:  # the row itself is not JSON: keep only what the writer holds
        columns = {"status": "completed", "duration_ms": 0, "tokens": {}, "cost": "0", "retry_count": 0}

    def ascii_or_none(value: Any) -> str | None:
        return str(value).encode("ascii", "replace").decode() if value else None

    values = {
        **columns,
        "span_id": span.span_id,
        "trace_id": span.trace_id,
        "parent_span_id": span.parent_span_id,
        "span_type": ascii_or_none(span.span_type) or "other",
        "name": name or "(unnamed)",
        "started_at": span.started_at,
        "tokens": encode_json(columns.get("tokens") or {}, 10_000)[0],
        "inputs": "{}",
        "outputs": "{}",
        "api_limits": "{}",
        "evaluation": "{}",
        "metadata": meta,
        "error": None,
        "error_stack": None,
        "model": ascii_or_none(columns.get("model")),
        "provider": ascii_or_none(columns.get("provider")),
        "error_type": ascii_or_none(columns.get("error_type")),
    }
    for column in ("completed_at", "status", "duration_ms", "cost", "retry_count", "timeout"):
        values.setdefault(column, None)
    return replace(span, name=values["name"], row=row_json(values), api_limits_obj={})
