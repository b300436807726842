"""What every doctor check returns (``Finding``), what it is given (``DoctorOptions``), and the small
read-only query helpers the checks share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

OK, WARN, FAIL = "ok", "warn", "fail"
SEVERITY = {OK: 0, WARN: 1, FAIL: 2}


@dataclass(frozen=True)
class Finding:
    """One line of the diagnosis."""

    name: str
    status: str  # ok | warn | fail
    detail: str
    action: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DoctorOptions:
    grace: timedelta = timedelta(hours=24)  # a running trace or a placeholder older than this is stuck
    recent: timedelta = timedelta(days=7)  # the window for "unpriced models seen recently"
    statement_timeout_ms: int = 10_000  # the doctor's own
    retention_days: int = 90  # "old enough to be swept" when retention has never run (cleanup's default)
    #: the exporters' spool root on this machine (None: ``$OTEL_EXPORTER_POSTGRES_SPOOL_DIR``, else the
    #: default location); "off": not looked at
    spool_dir: str | None = None


Check = Callable[[psycopg.Connection, DoctorOptions], list[Finding]]
#: Query parameters, positional or named.
Params = Sequence[Any] | dict[str, Any]


def select_rows(conn: psycopg.Connection, query: str, params: Params = ()) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall()


def select_one(conn: psycopg.Connection, query: str, params: Params = ()) -> Any:
    row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    return row[0] if row else None


def relation_exists(conn: psycopg.Connection, relation: str) -> bool:
    return bool(select_one(conn, "SELECT to_regclass(%s) IS NOT NULL", (relation,)))


def mib(n: int | None) -> str:
    return f"{(n or 0) / 1024 / 1024:,.1f} MiB"
