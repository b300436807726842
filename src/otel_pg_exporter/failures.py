"""What a failed write means, by SQLSTATE: one table, read by the store (split, set aside) and by
delivery (retry, spool, replay). Pure: no I/O.

Five answers, each with its own reaction:

========== ==================================================== =========================================
class      examples                                              reaction
========== ==================================================== =========================================
DOWN       cannot connect, connection lost, server shutting     retry within the export timeout, then
           down (08xxx, 57P01–57P03), pool timeout               spool; the replayer writes it later
RETRY      serialization failure, deadlock, lock timeout        retry the transaction (backoff), then
           (40001, 40P01, 55P03)                                 spool like DOWN
REFUSED    out of memory / shared memory / disk (53xxx),        will fail again as it is: split the batch
           program limits (54xxx), statement timeout (57014),   by trace and write the halves; what still
           any other answer not listed here                     fails alone is quarantined
NOT_READY  table, column, function or schema missing; no grant  spool and wait for an operator (nothing
           (42P01, 42703, 42883, 3F000, 42501)                  else could be written either)
BAD_ROW    invalid data, constraint violation (22xxx, 23xxx)    isolate the row: stored without payload,
                                                                 else dropped and counted
POOLER     prepared statement refused (42P05, 26000)            prepared statements off, write again
BUG        anything that is not a database error                propagate: a bug of ours is not retried
========== ==================================================== =========================================
"""

from __future__ import annotations

import enum

import psycopg
from psycopg_pool import PoolTimeout


class Failure(enum.Enum):
    """What a failed write means (see the module's table)."""

    DOWN = "down"
    RETRY = "retry"
    REFUSED = "refused"
    NOT_READY = "not_ready"
    BAD_ROW = "bad_row"
    POOLER = "pooler"
    BUG = "bug"


#: Exact SQLSTATEs first, then their two-character class; a database error listed in neither is
#: REFUSED (the server answered, and will answer the same to the same request).
SQLSTATE_FAILURES: dict[str, Failure] = {
    # the server is going away or not accepting connections yet
    "57P01": Failure.DOWN,  # admin_shutdown
    "57P02": Failure.DOWN,  # crash_shutdown
    "57P03": Failure.DOWN,  # cannot_connect_now (starting up, recovery)
    "08": Failure.DOWN,  # connection exception
    # the transaction lost a race: the same transaction again succeeds
    "40001": Failure.RETRY,  # serialization_failure
    "40P01": Failure.RETRY,  # deadlock_detected
    "55P03": Failure.RETRY,  # lock_not_available (lock_timeout)
    "25P03": Failure.RETRY,  # idle_in_transaction_session_timeout
    # will recur for this request: make it smaller
    "53": Failure.REFUSED,  # insufficient resources: out of memory, shared memory (locks), disk full
    "54": Failure.REFUSED,  # program limit exceeded: too many columns, statement too complex
    "57014": Failure.REFUSED,  # query_canceled: statement_timeout, or cancelled by an operator
    # the database is not set up for us (yet)
    "42P01": Failure.NOT_READY,  # undefined_table
    "42703": Failure.NOT_READY,  # undefined_column
    "42883": Failure.NOT_READY,  # undefined_function
    "3F000": Failure.NOT_READY,  # invalid_schema_name
    "42501": Failure.NOT_READY,  # insufficient_privilege
    # a transaction pooler that cannot keep prepared statements
    "42P05": Failure.POOLER,  # duplicate_prepared_statement
    "26000": Failure.POOLER,  # invalid_sql_statement_name
    # the rows themselves
    "22": Failure.BAD_ROW,  # data exception
    "23": Failure.BAD_ROW,  # integrity constraint violation
}


class TransactionTimedOut(psycopg.OperationalError):
    """Our own watchdog cut a transaction that outlived the export timeout. Indistinguishable on the
    wire from a silent network, so DOWN; the replayer sets a record aside that keeps doing it while
    the database answers."""


def classify(exc: BaseException) -> Failure:
    """The class of ``exc`` (see ``SQLSTATE_FAILURES``)."""
    if isinstance(exc, PoolTimeout):
        return Failure.DOWN
    if isinstance(exc, UnicodeError):  # a string the driver could not encode: the row's fault
        return Failure.BAD_ROW
    if not isinstance(exc, psycopg.Error):
        return Failure.BUG  # our own TypeError, ValueError, …: a failing test, never a degraded row
    state = exc.sqlstate
    if state:
        found = SQLSTATE_FAILURES.get(state) or SQLSTATE_FAILURES.get(state[:2])
        return found or Failure.REFUSED
    # no SQLSTATE: raised by the client. A lost or refused connection is DOWN; data psycopg cannot
    # send (a NUL character, an unencodable string) is the row's fault.
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return Failure.BAD_ROW
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return Failure.DOWN
    return Failure.BUG  # e.g. a ProgrammingError raised by the client: our statement is wrong


def is_bad_row(exc: BaseException) -> bool:
    """The data itself cannot be stored (isolate the row); never one of our own exceptions."""
    return classify(exc) is Failure.BAD_ROW


def is_refusal(exc: BaseException) -> bool:
    """The server refused the request in a way that will recur for it as it is (split it)."""
    return classify(exc) is Failure.REFUSED
