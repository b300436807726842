"""``TraceStore``: read stored traces back, for application code and the explorer.

Every call is one read-only transaction with a statement timeout (``SET LOCAL``, so it holds
behind transaction-mode poolers too). With ``as_user`` the transaction runs as ``as_role``
(default ``authenticated``, Supabase's role for signed-in users) with ``request.jwt.claim.sub`` set
to that user, so the seed's row level security policies decide what is visible, exactly as for a
Supabase API call. Results are dataclasses; JSON columns come back as Python values.

Lists are keyset-paged: a page carries opaque ``older`` / ``newer`` cursors, so paging costs the
same on the millionth trace as on the first.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ..config.dsn import resolve_dsn, safe_message
from ..connection import local_search_path, schema_name, set_local
from ..errors import ConfigurationError, OtelPgError
from ..failures import Failure, classify
from ..pipeline.annotations import (
    THUMBS_NAME,
    Annotation,
    AnnotatorKind,
    Target,
    TargetKind,
    rows_json,
    target_of,
)
from ..schema.tables import TRACE_STATUSES
from ..store.annotations import stored_target, upsert_annotations
from . import read_statements as statements
from .trace_tree import SpanNode, TraceDetail, build_tree, nest, span_node, start_key, tree_order

#: Sort keys of ``list_traces``: name → SQL expression over ``traces t`` (NULLs sort as 0).
SORTS: dict[str, str] = {
    "started_at": "t.started_at",
    "duration": "coalesce(t.total_duration_ms, 0)",
    "cost": "coalesce(t.total_cost, 0)",
    "tokens": "coalesce((t.total_tokens ->> 'total')::bigint, 0)",
}
STATUSES = TRACE_STATUSES
#: The "judged" filter of the list (explorer, otel-pg-export): value → (text, list_traces arguments).
JUDGED: dict[str, tuple[str, dict[str, Any]]] = {
    "any": ("has a judgement", {"annotated": True}),
    "down": ("thumbs down", {"annotation": THUMBS_NAME, "label": "down"}),
    "up": ("thumbs up", {"annotation": THUMBS_NAME, "label": "up"}),
}
PREVIEW_CHARS = 200
MAX_LIMIT = 500


@dataclass(frozen=True)
class TraceSummary:
    """One row of a trace list."""

    trace_id: uuid.UUID
    execution_id: str
    workflow_id: str
    user_id: uuid.UUID | None
    status: str
    started_at: datetime
    completed_at: datetime | None
    duration_ms: int | None
    tokens: dict[str, Any]
    cost: Decimal
    error: str | None
    query_preview: str | None
    session_id: str | None
    user_raw: str | None = None  # the user attribute as sent (also when it is no profiles UUID)
    models: tuple[str, ...] = ()
    span_count: int = 0
    failed_spans: int = 0
    #: judgements of the trace or its spans, grouped: ``{name, label, score, annotator_kind, n}``
    annotations: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class TracePage:
    traces: list[TraceSummary]
    older: str | None  # cursor of the next page of older traces (in the page's sort order)
    newer: str | None  # cursor of the previous page


@dataclass(frozen=True)
class SessionSummary:
    session_id: str
    traces: int
    first_started_at: datetime
    last_started_at: datetime
    total_cost: Decimal
    total_tokens: int
    users: tuple[uuid.UUID, ...]
    failed: int


@dataclass(frozen=True)
class SessionTurn:
    trace: TraceSummary
    query: str | None
    answer: Any  # the root span's outputs


class TraceStoreError(OtelPgError):
    """A read failed (connection, timeout, bad argument); the message never holds a password.
    ``status``: the HTTP status a server answers it with (400: the request was wrong)."""

    status = 400


class TraceStoreNotFound(TraceStoreError):
    """No such trace, span or session (or not visible to this role) (404)."""

    status = 404


class TraceStoreForbidden(TraceStoreError):
    """The database refused a write for this role (403): RLS, or no grant."""

    status = 403


class TraceStoreUnavailable(TraceStoreError):
    """The database cannot be reached now (503)."""

    status = 503


class TraceStoreTimeout(TraceStoreError):
    """The read took longer than the statement timeout (504)."""

    status = 504


def _encode_cursor(sort: str, value: Any, trace_id: uuid.UUID) -> str:
    if isinstance(value, datetime):
        raw: Any = {"t": value.isoformat()}
    elif isinstance(value, Decimal):
        raw = {"d": str(value)}
    else:
        raw = {"i": value}
    payload = json.dumps({"s": sort, "v": raw, "id": str(trace_id)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


#: A cursor longer than this is not one of ours.
MAX_CURSOR_CHARS = 512


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, uuid.UUID]:
    if len(cursor) > MAX_CURSOR_CHARS:
        raise TraceStoreError("invalid cursor (too long)")
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if data["s"] != sort:
            raise ValueError("cursor of another sort order")
        raw = data["v"]
        value: Any = (
            datetime.fromisoformat(raw["t"])
            if "t" in raw
            else Decimal(raw["d"])
            if "d" in raw
            else int(raw["i"])
        )
        if isinstance(value, Decimal) and not value.is_finite():
            raise ValueError("not a finite number")
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise ValueError("out of range")
        return value, uuid.UUID(data["id"])
    except (ValueError, KeyError, TypeError, ArithmeticError, RecursionError, AttributeError) as exc:
        raise TraceStoreError(f"invalid cursor ({type(exc).__name__})") from None


#: ``list_traces``' filters on the trace row: parameter → condition (given only when set).
TRACE_FILTERS: dict[str, str] = {
    "since": "t.started_at >= %(since)s",
    "until": "t.started_at < %(until)s",
    "workflow": "t.workflow_id = %(workflow)s",
    "status": "t.status = %(status)s",
    "min_cost": "coalesce(t.total_cost, 0) >= %(min_cost)s",
    "min_duration_ms": "coalesce(t.total_duration_ms, 0) >= %(min_duration_ms)s",
    "user_id": "t.user_id = %(user_id)s",
    "model": "EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = t.trace_id AND s.model = %(model)s)",
    "query": "t.query ILIKE %(query)s",
}
#: ... and on its judgements: one judgement (of the trace or a span of it) meets all that are set.
JUDGEMENT_FILTERS: dict[str, str] = {
    "a_name": "a.name = %(a_name)s",
    "a_label": "a.label = %(a_label)s",
    "a_min": "a.score >= %(a_min)s",
    "a_max": "a.score <= %(a_max)s",
}


def _list_conditions(
    on_trace: dict[str, Any], on_judgement: dict[str, Any], annotated: bool
) -> tuple[list[str], dict[str, Any]]:
    """The WHERE conditions of a trace list and their parameters, for the filters that are set."""
    given = {k: v for k, v in {**on_trace, **on_judgement}.items() if v is not None and v != ""}
    where = [TRACE_FILTERS[k] for k in on_trace if k in given]
    judged = [JUDGEMENT_FILTERS[k] for k in on_judgement if k in given]
    if judged or annotated:
        where.append(
            "EXISTS (SELECT 1 FROM otel_annotations a WHERE a.trace_id = t.trace_id"
            + "".join(f" AND {c}" for c in judged)
            + ")"
        )
    return where, given


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _as_uuid(value: uuid.UUID | str, what: str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise TraceStoreError(f"{what} is not a UUID") from None


class TraceStore:
    """Read-only access to the ``traces`` / ``spans`` tables.

    ``dsn``: argument, else ``OTEL_EXPORTER_POSTGRES_DSN``, else ``DATABASE_URL``, else libpq's
    ``PG*`` variables (as for the exporter). ``schema``: the tables' schema (quoted). ``as_user``:
    see the module docstring. Use as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str | None = None,
        statement_timeout_ms: int = 5000,
        as_user: uuid.UUID | str | None = None,
        as_role: str = "authenticated",
        pool_size: int = 4,
    ) -> None:
        self._dsn, _ = resolve_dsn(dsn)
        name = schema_name(schema)
        self._schema = name
        self._search_path = local_search_path(name)
        if statement_timeout_ms <= 0:
            raise ConfigurationError("statement_timeout_ms must be positive")
        self._timeout = f"{int(statement_timeout_ms)}ms"
        self._as_user = str(_as_uuid(as_user, "as_user")) if as_user is not None else None
        self._as_role = as_role
        # per transaction: the timeout, the schema, and (as_user) the claims Supabase's auth.uid() reads
        self._settings: dict[str, str | None] = {
            "statement_timeout": self._timeout,
            "search_path": self._search_path,
            "request.jwt.claim.sub": self._as_user,
            "request.jwt.claims": (
                json.dumps({"sub": self._as_user, "role": as_role}) if self._as_user is not None else None
            ),
        }
        self._pool_size = max(1, int(pool_size))
        self._pool: ConnectionPool | None = None
        self._pool_lock = threading.Lock()
        self._has_annotations: bool | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _connections(self) -> ConnectionPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self._dsn,
                    min_size=1,
                    max_size=self._pool_size,
                    kwargs={"autocommit": True, "connect_timeout": 10, "prepare_threshold": None},
                    timeout=10,
                    open=True,
                    name="otel-pg-trace-store",
                )
            return self._pool

    @contextmanager
    def _read(self, *, write: bool = False) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
        """One read-only transaction on a pooled connection (thread-safe: the explorer serves
        requests from a thread pool); ``write``: a read-write one (``annotate`` only)."""
        try:
            with (
                self._connections().connection() as conn,
                conn.transaction(),
                conn.cursor(row_factory=dict_row) as cur,
            ):
                if not write:
                    cur.execute("SET TRANSACTION READ ONLY")
                if self._as_user is not None:
                    cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(self._as_role)))
                set_local(cur, self._settings)
                yield cur
        except (psycopg.Error, PoolTimeout) as exc:
            failure = classify(exc)
            kind = (
                TraceStoreTimeout
                if failure is Failure.REFUSED and getattr(exc, "sqlstate", None) == "57014"
                else TraceStoreUnavailable
                if failure is Failure.DOWN
                else TraceStoreError
            )
            raise kind(safe_message(exc, self._dsn)) from None

    def _annotated(self, cur: psycopg.Cursor[dict[str, Any]]) -> bool:
        """Whether migration 009 is installed (asked once): span rows then come from the
        ``spans_annotated`` view, and judgements are read and written."""
        if self._has_annotations is None:
            cur.execute(statements.HAS_ANNOTATIONS)
            row = cur.fetchone()
            self._has_annotations = bool(row and next(iter(row.values())))
        return self._has_annotations

    def _badges(self, cur: psycopg.Cursor[dict[str, Any]], ids: list[Any]) -> dict[Any, list[dict[str, Any]]]:
        """trace id → its judgements grouped (name, label, score, kind, n), for a page of traces."""
        badges: dict[Any, list[dict[str, Any]]] = {}
        if self._annotated(cur):
            cur.execute(statements.PAGE_BADGES, {"ids": ids})
            for b in cur.fetchall():
                badges.setdefault(b.pop("trace_id"), []).append(b)
        return badges

    def _spans(self, cur: psycopg.Cursor[dict[str, Any]], statement: str) -> str:
        return statement.format(spans="spans_annotated" if self._annotated(cur) else "spans")

    # -- traces -----------------------------------------------------------------------------------

    def list_traces(
        self,
        *,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        workflow: str | None = None,
        user_id: uuid.UUID | str | None = None,
        status: str | None = None,
        model: str | None = None,
        query: str | None = None,
        sort: str = "started_at",
        cursor: str | None = None,
        limit: int = 50,
        min_cost: float | Decimal | None = None,
        min_duration_ms: int | None = None,
        annotation: str | None = None,
        label: str | None = None,
        min_score: float | None = None,
        max_score: float | None = None,
        annotated: bool = False,
    ) -> TracePage:
        """Newest (or dearest, longest, biggest) first; ``cursor`` is a page's ``older`` or
        ``newer``. ``query`` is a case-insensitive substring of ``traces.query``; ``model`` matches
        any span's model; ``min_cost`` (USD) and ``min_duration_ms`` keep the dear and the slow.
        ``annotation`` (a judgement's name), ``label``, ``min_score`` / ``max_score`` keep the traces
        with one judgement (of the trace or a span of it) matching them all: ``annotation="thumbs",
        label="down"`` are the thumbs-down traces; ``annotated`` keeps the traces with any judgement.
        Times are UTC, as stored."""
        if sort not in SORTS:
            raise TraceStoreError(f"sort must be one of {', '.join(SORTS)}")
        if status is not None and status not in STATUSES:
            raise TraceStoreError(f"status must be one of {', '.join(STATUSES)}")
        limit = max(1, min(int(limit), MAX_LIMIT))
        expr = SORTS[sort]
        where, params = _list_conditions(
            {
                "since": since,
                "until": until,
                "workflow": workflow,
                "status": status,
                "min_cost": min_cost,
                "min_duration_ms": min_duration_ms,
                "user_id": _as_uuid(user_id, "user_id") if user_id else None,
                "model": model or None,
                "query": _like(query) if query else None,
            },
            {"a_name": annotation, "a_label": label, "a_min": min_score, "a_max": max_score},
            annotated,
        )
        params.update(preview=PREVIEW_CHARS, limit=limit + 1)
        direction = "older"
        if cursor:
            direction = "newer" if cursor.startswith("n.") else "older"
            value, tid = _decode_cursor(cursor[2:], sort)
            where.append(f"({expr}, t.trace_id) {'<' if direction == 'older' else '>'} (%(cv)s, %(cid)s)")
            params["cv"], params["cid"] = value, tid
        order = "DESC" if direction == "older" else "ASC"
        statement = (
            f"SELECT {statements.TRACE_COLUMNS}, {expr} AS sort_value FROM traces t"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" ORDER BY {expr} {order}, t.trace_id {order} LIMIT %(limit)s"
        )
        with self._read() as cur:
            cur.execute(statement, params)  # type: ignore[arg-type]
            rows = cur.fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            if direction == "newer":
                rows.reverse()
            extras: dict[Any, dict[str, Any]] = {}
            badges: dict[Any, list[dict[str, Any]]] = {}
            if rows:
                ids = [r["trace_id"] for r in rows]
                cur.execute(statements.PAGE_EXTRAS, {"ids": ids})
                extras = {r["trace_id"]: r for r in cur.fetchall()}
                badges = self._badges(cur, ids)
        traces = [self._summary(r, extras.get(r["trace_id"]), badges.get(r["trace_id"])) for r in rows]
        older = newer = None
        if rows:
            first, last = rows[0], rows[-1]
            has_older = more if direction == "older" else True
            has_newer = bool(cursor) if direction == "older" else more
            if has_older:
                older = "o." + _encode_cursor(sort, last["sort_value"], last["trace_id"])
            if has_newer:
                newer = "n." + _encode_cursor(sort, first["sort_value"], first["trace_id"])
        return TracePage(traces, older, newer)

    @staticmethod
    def _summary(
        row: dict[str, Any], extra: dict[str, Any] | None, badges: list[dict[str, Any]] | None = None
    ) -> TraceSummary:
        return TraceSummary(
            trace_id=row["trace_id"],
            execution_id=row["execution_id"],
            workflow_id=row["workflow_id"],
            user_id=row["user_id"],
            status=row["status"],
            started_at=row["started_at"],
            completed_at=row["completed_at"],
            duration_ms=row["total_duration_ms"],
            tokens=row["total_tokens"] or {},
            cost=row["total_cost"] if row["total_cost"] is not None else Decimal(0),
            error=row["error"],
            query_preview=row["query_preview"],
            session_id=row["session_id"],
            user_raw=row.get("user_raw"),
            models=tuple(extra["models"]) if extra else (),
            span_count=int(extra["span_count"]) if extra else 0,
            failed_spans=int(extra["failed_spans"]) if extra else 0,
            annotations=tuple(badges or ()),
        )

    def get_trace(
        self, trace_id: uuid.UUID | str, *, offset: int = 0, limit: int | None = None
    ) -> TraceDetail | None:
        """The trace row (every column, as a dict) and its spans as a tree; None if not visible.

        With ``limit``, only a window of the spans is read whole: ``limit`` spans from ``offset``
        in depth-first order (the order is planned from ids, parents and start times alone), so a
        trace of 50,000 spans costs a page of them, not all of them."""
        tid = _as_uuid(trace_id, "trace_id")
        offset = max(0, offset)
        with self._read() as cur:
            cur.execute(statements.TRACE, {"id": tid})
            trace = cur.fetchone()
            if trace is None:
                return None
            trace["annotations"] = []
            if self._annotated(cur):
                cur.execute(statements.TRACE_ANNOTATIONS, {"id": tid, "session": trace.get("session_id")})
                trace["annotations"] = cur.fetchall()
            if limit is None:
                cur.execute(self._spans(cur, statements.SPANS_OF_TRACE), {"id": tid})
                rows = cur.fetchall()
                return TraceDetail(trace=trace, roots=build_tree(rows), total_spans=len(rows))
            cur.execute(statements.SPAN_LINKS_OF_TRACE, {"id": tid})
            links = {
                r["span_id"]: (r["parent_span_id"], start_key(r["span_id"], r["started_at"])) for r in cur
            }
            order = tree_order(links)
            window = order[offset : offset + max(0, limit)]
            cur.execute(
                self._spans(cur, statements.SPANS_BY_ID), {"ids": [span_id for span_id, _, _ in window]}
            )
            nodes = {r["span_id"]: span_node(r) for r in cur}
        return TraceDetail(trace=trace, roots=nest(nodes, window), total_spans=len(order), offset=offset)

    def get_span(self, span_id: uuid.UUID | str) -> SpanNode | None:
        with self._read() as cur:
            cur.execute(self._spans(cur, statements.SPAN), {"id": _as_uuid(span_id, "span_id")})
            row = cur.fetchone()
        return span_node(row) if row else None

    # -- judgements ------------------------------------------------------------------------------

    def annotations(
        self,
        *,
        trace_id: uuid.UUID | str | None = None,
        span_id: uuid.UUID | str | None = None,
        session_id: str | None = None,
        name: str | None = None,
        label: str | None = None,
        kind: str | None = None,
        since: datetime | date | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Judgements, newest first: of a trace (and its spans), a span, a session, or all; with a
        name, label, annotator kind; updated since. Empty when migration 009 is not installed."""
        where: list[str] = []
        params: dict[str, Any] = {"limit": max(1, min(int(limit), MAX_LIMIT))}
        if trace_id is not None:
            where.append("a.trace_id = %(trace_id)s")
            params["trace_id"] = _as_uuid(trace_id, "trace_id")
        if span_id is not None:
            where.append("a.span_id = %(span_id)s")
            params["span_id"] = _as_uuid(span_id, "span_id")
        for key, value, clause in (
            ("session_id", session_id, "a.session_id = %(session_id)s"),
            ("name", name, "a.name = %(name)s"),
            ("label", label, "a.label = %(label)s"),
            ("kind", kind, "a.annotator_kind = %(kind)s"),
            ("since", since, "a.updated_at >= %(since)s"),
        ):
            if value is not None and value != "":
                where.append(clause)
                params[key] = value
        statement = (
            f"SELECT {statements.ANNOTATION_COLUMNS} FROM otel_annotations a"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY a.updated_at DESC, a.annotation_id LIMIT %(limit)s"
        )
        with self._read() as cur:
            if not self._annotated(cur):
                return []
            cur.execute(statement, params)  # type: ignore[arg-type]
            return list(cur.fetchall())

    def resolve_target(self, target: Any) -> Target:
        """What ``target`` names (``pipeline.annotations.target_of``); a bare UUID is looked up, as
        a span, else a trace, visible to this reader."""
        where = target_of(target)
        if isinstance(where, Target):
            return where
        with self._read() as cur:
            found = stored_target(cur, where)
        if found is None:
            raise TraceStoreNotFound(f"no span or trace {where} (or not visible to you)")
        return found

    def annotate(self, annotation: Annotation) -> None:
        """Write one judgement (the explorer's and otel-pg-mcp's forms). With ``as_user`` it is
        written as that user, under RLS: kind ``user``, annotator the user's id (the policies of
        migration 010 refuse anything else, and any trace not theirs)."""
        if self._as_user is not None:
            annotation = dataclasses.replace(annotation, kind=AnnotatorKind.USER, annotator=self._as_user)
        with self._read(write=True) as cur:
            if not self._annotated(cur):
                raise TraceStoreError("annotations need migration 009: run otel-pg-install-schema")
            target = annotation.target
            if target.kind is TargetKind.SPAN and target.trace_id is None and target.span_id is not None:
                found = stored_target(cur, target.span_id)
                if found is None or found.kind is not TargetKind.SPAN:
                    raise TraceStoreNotFound("no such span (or not visible to you)")
                annotation = dataclasses.replace(annotation, target=found)
            try:
                upsert_annotations(cur, rows_json([annotation.row()]))
            except psycopg.errors.InsufficientPrivilege:
                raise TraceStoreForbidden("not allowed to write this judgement") from None

    def export_rows(self, trace_ids: list[uuid.UUID], selection: str = "root") -> list[dict[str, Any]]:
        """The export's rows for some traces (``query.export`` pages through a filter with it):
        the chosen spans, each with its judgements and its trace's (``trace_annotations``)."""
        if selection not in statements.EXPORT_SELECTIONS:
            raise TraceStoreError(f"spans must be one of {', '.join(statements.EXPORT_SELECTIONS)}")
        with self._read() as cur:
            annotated = self._annotated(cur)
            where = statements.EXPORT_SELECTIONS[selection]
            if selection == "judged" and not annotated:
                return []
            statement = statements.EXPORT_SPANS.format(
                spans="spans_annotated" if annotated else "spans", selection=where
            )
            cur.execute(statement, {"ids": trace_ids})  # type: ignore[arg-type]
            rows = cur.fetchall()
            of_trace: dict[Any, Any] = {}
            if annotated and rows:
                cur.execute(statements.EXPORT_TRACE_ANNOTATIONS, {"ids": trace_ids})
                of_trace = {r["trace_id"]: r["annotations"] for r in cur.fetchall()}
        for row in rows:
            row["trace_annotations"] = of_trace.get(row["trace_id"], [])
        return rows

    # -- sessions ---------------------------------------------------------------------------------

    def sessions(
        self, *, since: datetime | date, until: datetime | date | None = None, limit: int = 50
    ) -> list[SessionSummary]:
        """Traces grouped by the session id the exporter records (``metadata.session_id``), most
        recent first, within a time window."""
        params = {"since": since, "until": until or datetime.max, "limit": max(1, min(int(limit), MAX_LIMIT))}
        with self._read() as cur:
            cur.execute(statements.SESSIONS, params)
            rows = cur.fetchall()
        return [
            SessionSummary(
                session_id=r["session_id"],
                traces=int(r["traces"]),
                first_started_at=r["first_started_at"],
                last_started_at=r["last_started_at"],
                total_cost=r["total_cost"],
                total_tokens=int(r["total_tokens"]),
                users=tuple(r["users"] or ()),
                failed=int(r["failed"]),
            )
            for r in rows
        ]

    def session(self, session_id: str, *, limit: int = 200) -> list[SessionTurn]:
        """The traces of one session in order, each with its question and the root's answer."""
        params = {
            "session": json.dumps({"session_id": session_id}),
            "preview": PREVIEW_CHARS,
            "limit": max(1, min(int(limit), MAX_LIMIT)),
        }
        with self._read() as cur:
            cur.execute(statements.SESSION_TRACES, params)
            rows = cur.fetchall()
            answers: dict[Any, Any] = {}
            badges: dict[Any, list[dict[str, Any]]] = {}
            if rows:
                ids = [r["trace_id"] for r in rows]
                cur.execute(statements.ROOT_OUTPUTS, {"ids": ids})
                answers = {r["trace_id"]: r["outputs"] for r in cur.fetchall()}
                badges = self._badges(cur, ids)
        return [
            SessionTurn(
                self._summary(r, None, badges.get(r["trace_id"])), r["query"], answers.get(r["trace_id"])
            )
            for r in rows
        ]

    # -- costs ------------------------------------------------------------------------------------

    def failures(
        self,
        *,
        since: datetime | date,
        until: datetime | date | None = None,
        limit: int = 10,
        examples: int = 5,
    ) -> list[dict[str, Any]]:
        """The most frequent ``error_type`` of failed or cancelled spans in ``[since, until)``, most
        frequent first: spans, traces, last seen, the latest spans showing it, the latest message."""
        params = {
            "since": since,
            "until": until or datetime(9999, 1, 1),
            "limit": max(1, min(limit, MAX_LIMIT)),
            "examples": max(1, min(examples, 20)),
        }
        with self._read() as cur:
            cur.execute(statements.FAILURES, params)
            return list(cur.fetchall())

    def cost_report(self, *, days: int = 30, horizon: int = 14, as_of: date | None = None) -> dict[str, Any]:
        """What ``otel-pg-report`` shows (history, forecast and band, month to date and projection,
        top workflows / models / users, unpriced models, calls without usage, budgets), as data."""
        from .report import report_data

        if self._as_user is not None:
            raise TraceStoreError("cost reports are for the whole database: not available with as_user")
        with self._read() as cur:
            return report_data(cur, days=days, horizon=horizon, as_of=as_of)


__all__ = [
    "SORTS",
    "STATUSES",
    "SessionSummary",
    "SessionTurn",
    "SpanNode",
    "TraceDetail",
    "TracePage",
    "TraceStore",
    "TraceStoreError",
    "TraceStoreForbidden",
    "TraceStoreNotFound",
    "TraceStoreTimeout",
    "TraceStoreUnavailable",
    "TraceSummary",
    "build_tree",
    "tree_order",
]
