"""Connections for one write transaction: where they come from, and a watchdog that bounds them."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import psycopg

from .failures import TransactionTimedOut

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
