"""Read-only SQL for agents (the MCP server's ``query_sql``), safe by construction, not by parsing.

What makes it safe is PostgreSQL itself:
- the statement runs as ``DECLARE … CURSOR FOR <statement>``, prepared with the extended protocol:
  the server's own grammar accepts one query there (SELECT, VALUES, TABLE, WITH … SELECT) and
  nothing else: no second statement, no ``SET``/``RESET``, no ``COPY``, no DDL, no DML;
- in a ``READ ONLY`` transaction whose snapshot is taken before the statement (so it cannot turn
  itself read-write), always rolled back: a ``set_config(…, false)`` inside does not outlive the call;
- on a fresh connection (``connection.connect``), closed after the call, under ``statement_timeout``
  and a client-side watchdog, with a row cap and a byte cap on what comes back;
- as a session role that cannot write the trace tables (checked before every call; a superuser or
  a writer is refused), so even a function with side effects runs without the rights to have any;
- with ``as_user``, as the seed's ``authenticated`` role under RLS, which must be enabled; the
  session role must not bypass RLS either, and a query that calls ``set_config`` (which could
  change the user the policies read) is refused.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import pq, sql

from ..config.dsn import resolve_dsn, safe_message
from ..connection import connect, set_local, watchdog
from .outline import plain
from .trace_store import TraceStoreError

#: Defaults: statement timeout, rows and bytes returned at most.
TIMEOUT_MS = 5_000
MAX_ROWS = 200
MAX_BYTES = 64_000
#: The tables a reader must not be able to write.
TRACE_TABLES = ("traces", "spans", "profiles")
_CURSOR = "otel_pg_sql"


class SqlRefused(TraceStoreError):
    """The statement or the role was refused before anything ran (400)."""


@dataclass(frozen=True)
class SqlResult:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = False
    reason: str | None = None  # why rows were left out (the row or byte cap)
    notes: list[str] = field(default_factory=list)


def _refuse_writer(conn: psycopg.Connection, under_rls: bool) -> None:
    """The session role must not be able to write the trace tables (nor bypass RLS when reads are
    made as a user)."""
    row = conn.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = session_user").fetchone()
    writes = conn.execute(
        """SELECT coalesce(bool_or(has_table_privilege(session_user, to_regclass(t), p)
                                   OR pg_get_userbyid(c.relowner) = session_user), false)
           FROM unnest(%s::text[]) AS t, unnest(ARRAY['INSERT','UPDATE','DELETE','TRUNCATE']) AS p,
                pg_class c WHERE c.oid = to_regclass(t)""",
        (list(TRACE_TABLES),),
    ).fetchone()
    if row is None or row[0] or (writes and writes[0]):
        raise SqlRefused(
            "query_sql runs only as a role that cannot write the trace tables; this connection's role "
            "can. Give the server a read-only role (sql/roles/otel_reader_role.sql, then --sql-dsn)."
        )
    if under_rls and row[1]:
        raise SqlRefused("as_user needs a read-only role that does not bypass row level security")


#: Reads as a user rest on ``request.jwt.claim.sub``, a setting any query could change with
#: ``set_config``: as a user, such a query is refused.
_IMPERSONATION = re.compile(r"set_config", re.IGNORECASE)
#: Always refused, on top of the role's rights: signalling other sessions of the same role (allowed
#: to any role for its own sessions, even read-only), and Unicode-escaped names, which could spell
#: either.
_FORBIDDEN = re.compile(r"pg_terminate_backend|pg_cancel_backend|u&\s*['\"]", re.IGNORECASE)


def _as_user(conn: psycopg.Connection, user: str, role: str) -> None:
    try:
        uid = str(uuid.UUID(user))
    except ValueError:
        raise SqlRefused("as_user must be a profile id (UUID)") from None
    enabled = conn.execute(
        "SELECT count(*) FROM pg_class "
        "WHERE oid IN (to_regclass('traces'), to_regclass('spans')) AND relrowsecurity"
    ).fetchone()
    if not enabled or enabled[0] != 2:
        raise SqlRefused(
            "as_user needs row level security on traces and spans (otel-pg-install-schema --rls)"
        )
    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
    set_local(conn, {"request.jwt.claim.sub": uid})


def _fetch(conn: psycopg.Connection, max_rows: int, max_bytes: int) -> SqlResult:
    cur = conn.execute(sql.SQL("FETCH {} FROM {}").format(sql.Literal(max_rows + 1), sql.Identifier(_CURSOR)))
    columns = [d.name for d in cur.description or ()]
    rows: list[list[Any]] = []
    size = 0
    for record in cur.fetchall():
        values = plain(list(record))
        size += len(json.dumps(values, ensure_ascii=False, default=str))
        if len(rows) >= max_rows:
            return SqlResult(columns, rows, True, f"more than {max_rows} rows: add a LIMIT or aggregate")
        if size > max_bytes:
            return SqlResult(columns, rows, True, f"over {max_bytes} bytes: select fewer or shorter columns")
        rows.append(values)
    return SqlResult(columns, rows)


def run_read_only(
    dsn: str | None,
    statement: str,
    *,
    schema: str | None = None,
    as_user: str | None = None,
    as_role: str = "authenticated",
    timeout_ms: int = TIMEOUT_MS,
    max_rows: int = MAX_ROWS,
    max_bytes: int = MAX_BYTES,
) -> SqlResult:
    """Run one read-only query (see the module's list of guarantees); rows as JSON-ready lists."""
    text = statement.strip().rstrip(";").strip()
    if not text or "\x00" in text:
        raise SqlRefused("an empty statement (or one with a NUL character)")
    if _FORBIDDEN.search(text):
        raise SqlRefused("signalling other sessions (or a Unicode-escaped name) is not allowed here")
    resolved, _ = resolve_dsn(dsn)
    with connect(dsn, schema=schema) as conn:  # a fresh connection, closed after the call
        try:
            return _run(conn, text, as_user, as_role, timeout_ms, max_rows, max_bytes)
        except psycopg.errors.QueryCanceled:
            raise SqlRefused(f"the statement ran over {timeout_ms} ms and was cancelled") from None
        except psycopg.Error as exc:
            raise SqlRefused(safe_message(exc, resolved)) from None


def _run(
    conn: psycopg.Connection,
    text: str,
    as_user: str | None,
    as_role: str,
    timeout_ms: int,
    max_rows: int,
    max_bytes: int,
) -> SqlResult:
    """The guarded transaction on ``conn`` (see the module's list)."""
    with watchdog(conn, timeout_ms / 1000 + 2):
        conn.execute("BEGIN READ ONLY")
        set_local(
            conn,
            {
                "statement_timeout": str(int(timeout_ms)),
                "lock_timeout": "1000",
            },
        )  # a query: the snapshot is taken, the transaction can no longer turn read-write
        _refuse_writer(conn, under_rls=as_user is not None)
        if as_user is not None:
            if _IMPERSONATION.search(text):
                raise SqlRefused(
                    "as a user, a query may not call set_config (it could change who it reads as)"
                )
            _as_user(conn, as_user, as_role)
        declared = f"DECLARE {_CURSOR} NO SCROLL CURSOR FOR {text}".encode()
        result = conn.pgconn.prepare(b"", declared)
        if result.status == pq.ExecStatus.COMMAND_OK:
            result = conn.pgconn.exec_prepared(b"", [])
        if result.status != pq.ExecStatus.COMMAND_OK:
            message = (result.error_message or b"").decode("utf-8", "replace").strip()
            raise SqlRefused(
                "only one read-only query is accepted (SELECT, VALUES, TABLE, WITH … SELECT): "
                + message.removeprefix("ERROR:").strip()
            )
        return _fetch(conn, max(1, max_rows), max(1, max_bytes))
