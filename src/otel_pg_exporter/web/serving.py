"""How both local servers (``otel-pg-ui``, ``otel-pg-gateway``) are run: a connection that must send
its request headers within a deadline, uvicorn's connection cap and idle timeout, the ``Host``
allow-list of ``auth`` in front when no token is set, and secrets read from files.

``serve(app, host, port, ...)`` runs an ASGI app with all of it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .auth import HostAllowList, allowed_hosts

logger = logging.getLogger("otel_pg_exporter")

#: A connection must have sent complete request headers within this many seconds.
HEADER_TIMEOUT_S = 10.0
#: An idle keep-alive connection is closed after this many seconds.
KEEP_ALIVE_S = 5
#: Open connections (and requests in progress) a server takes; more are answered 503.
MAX_CONNECTIONS = 128


def _guarded_protocol() -> type:
    """uvicorn's h11 protocol with a deadline for request headers (uvicorn has none: a client that
    sends half a request line keeps its connection for as long as it likes)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineProtocol(H11Protocol):  # type: ignore[misc]
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._header_deadline)

        def _header_deadline(self) -> None:
            self._header_timer = None
            # still waiting for (the rest of) a request's headers: give the connection up
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self._arm()  # a new request started arriving on a kept-alive connection

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().connection_lost(exc)

    return HeaderDeadlineProtocol


def server_config(
    app: Any,
    host: str,
    port: int,
    *,
    token: str | None,
    allow_hosts: Iterable[str] = (),
    max_connections: int = MAX_CONNECTIONS,
) -> Any:
    """A ``uvicorn.Config`` serving ``app`` behind the ``Host`` allow-list (when there is no
    token), with a header deadline, a connection cap and a keep-alive timeout."""
    import uvicorn

    guarded = HostAllowList(app, None if token else allowed_hosts(host, allow_hosts))
    return uvicorn.Config(
        guarded,
        host=host,
        port=port,
        log_level="warning",
        http=_guarded_protocol(),
        limit_concurrency=max_connections,
        timeout_keep_alive=KEEP_ALIVE_S,
        lifespan="on",
    )


def serve(app: Any, host: str, port: int, **options: Any) -> None:
    """Run ``app`` (see ``server_config`` for ``options``) until interrupted."""
    import uvicorn

    uvicorn.Server(server_config(app, host, port, **options)).run()


def read_secret_file(path: str) -> str:
    """The first line of a secret file (a DSN, a token). Warns once when others may read it."""
    p = Path(path)
    st = p.stat()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(
            f"warning: {p} is readable by other users (chmod 600 it)",
            file=sys.stderr,
        )
    text = p.read_text(encoding="utf-8").strip()
    return text.splitlines()[0].strip() if text else ""


def secret_from_env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value and value.strip():
            return value.strip()
    return None
