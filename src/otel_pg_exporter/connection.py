"""Connections: how every command, the store and the read side connect (``connect``), the schema
they address (``schema_name``, per transaction with ``set_local``), where a write transaction's
connection comes from (``ConnectionSource``) and the watchdog that bounds it."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from .config.dsn import describe, resolve_dsn, safe_message
from .errors import ConfigurationError, ConnectionFailed, PermissionDenied, SchemaError
from .failures import TransactionTimedOut

#: Environment variable naming the schema that holds the tables (default: the server's search_path).
SCHEMA_ENV = "OTEL_EXPORTER_POSTGRES_SCHEMA"
#: PostgreSQL truncates longer identifiers silently, which would address another schema.
MAX_IDENTIFIER_BYTES = 63


def schema_name(value: str | None) -> str | None:
    """A configured schema name, checked: the argument, else ``OTEL_EXPORTER_POSTGRES_SCHEMA``, else
    None. Any name PostgreSQL can hold is accepted, because it is only ever used quoted
    (``psycopg.sql.Identifier``); a name PostgreSQL would truncate or cannot store is refused."""
    name = value if value is not None else (os.environ.get(SCHEMA_ENV) or None)
    if name is None:
        return None
    if not name or "\x00" in name or len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise ConfigurationError(
            f"schema: not a usable PostgreSQL identifier (empty, NUL, or over {MAX_IDENTIFIER_BYTES} bytes)"
        )
    return name


def local_search_path(schema: str | None) -> str | None:
    """``schema`` quoted as a ``search_path`` value, to be bound into ``set_local`` (per
    transaction, so it holds behind transaction-mode poolers); None: the server's default."""
    return sql.Identifier(schema).as_string(None) if schema else None


def set_local(conn: psycopg.Connection | psycopg.Cursor[Any], settings: dict[str, str | None]) -> None:
    """Set each (non-None) setting for the current transaction only, in one statement:
    ``set_config(name, value, true)``, values bound as parameters."""
    chosen = {k: v for k, v in settings.items() if v is not None}
    if chosen:
        conn.execute(
            "SELECT set_config(n, v, true) FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS s(n, v, i) "
            "ORDER BY i",
            (list(chosen), list(chosen.values())),
        )


def search_path_sql(schema: str) -> sql.Composed:
    """``SET search_path TO "<schema>"``: the one place a configured name meets SQL, quoted."""
    return sql.SQL("SET search_path TO {}").format(sql.Identifier(schema))


@contextmanager
def connect(
    dsn: str | None = None, *, autocommit: bool = True, schema: str | None = None, create_schema: bool = False
) -> Iterator[psycopg.Connection]:
    """Open a connection, turning libpq failures into one password-free ``ConnectionFailed``.

    ``schema`` (or ``OTEL_EXPORTER_POSTGRES_SCHEMA``) becomes the session's search_path, created
    first with ``create_schema``."""
    resolved, source = resolve_dsn(dsn)
    name = schema_name(schema)
    try:
        # no prepared statements: the commands run few, and a transaction-mode pooler keeps none
        conn = psycopg.connect(resolved, autocommit=autocommit, connect_timeout=10, prepare_threshold=None)
    except psycopg.Error as exc:
        raise ConnectionFailed(
            f"cannot connect to PostgreSQL {describe(resolved)} (DSN from {source}): "
            f"{safe_message(exc, resolved)}"
        ) from None
    try:
        if name is not None:
            try:
                if create_schema:
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name)))
                conn.execute(search_path_sql(name))
            except psycopg.Error as exc:
                raise translate_error(exc, f"using schema {name!r}", resolved) from None
        yield conn
    finally:
        conn.close()


def translate_error(exc: psycopg.Error, what: str, dsn: str) -> SchemaError:
    message = safe_message(exc, dsn)
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return PermissionDenied(f"permission denied while {what}: {message}")
    return SchemaError(f"{what} failed: {message}")


#: Hands out a connection for one transaction, waiting at most ``timeout`` seconds (a pool's
#: ``connection`` method fits).
ConnectionSource = Callable[[float | None], AbstractContextManager[psycopg.Connection]]


def sever(conn: psycopg.Connection) -> None:
    """Shut the connection's socket down under libpq, so a read blocked on a silent network
    (no RST, no FIN: a partition, a dead NAT entry) fails now instead of never."""
    try:
        dup = socket.socket(fileno=os.dup(conn.pgconn.socket))
    except (OSError, psycopg.Error):
        return
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        dup.close()


@contextmanager
def watchdog(conn: psycopg.Connection, seconds: float) -> Iterator[None]:
    """Sever ``conn`` if the block takes longer than ``seconds``: the block then fails with
    ``TransactionTimedOut`` (a connection error that says the watchdog fired)."""
    fired = threading.Event()

    def cut() -> None:
        fired.set()
        sever(conn)

    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        if fired.is_set() and not isinstance(exc, TransactionTimedOut):
            raise TransactionTimedOut(f"transaction cut after {seconds:g} s (export timeout)") from exc
        raise
    finally:
        timer.cancel()
