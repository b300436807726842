"""What is worth retrying, how long to wait, and how to say so once: shared by span delivery, replay
and forwarding."""

from __future__ import annotations

import logging
import random
import threading

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

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


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter: 0.05–0.1 s, doubling, at most ``BACKOFF_MAX_S``."""
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt) * random.uniform(0.5, 1.0)


class StateLog:
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
