"""Fault injection owned by the tests: a TCP proxy that can cut the database off, and a throwaway
PostgreSQL server (the machine's pg_ctl) that can be restarted. The shared server is never touched."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the database. ``cut()`` resets every connection and refuses new
    ones; ``blackhole()`` keeps connections open but silently drops every byte (a partition);
    ``restore()`` forwards again."""

    def __init__(self, target_dsn: str) -> None:
        parts = conninfo_to_dict(target_dsn)
        self.target = (parts.get("host") or "127.0.0.1", int(parts.get("port") or 5432))
        self.target_dsn = target_dsn
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.blackholed = False
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def dsn(self) -> str:
        return make_conninfo(self.target_dsn, host="127.0.0.1", port=str(self.port))

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                _reset(client)
                continue
            if self.blackholed:  # accept, then never answer
                with self._lock:
                    self._conns.append(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if not self.up:  # cut() ran while this connection was being set up
                    _reset(client)
                    _reset(upstream)
                    continue
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self.blackholed:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            _reset(c)

    def blackhole(self) -> None:
        self.blackholed = True

    def restore(self) -> None:
        self.up = True
        self.blackholed = False

    def close(self) -> None:
        self._stopped = True
        self.cut()
        self.listener.close()


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # wakes a pump blocked in recv() on this socket
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        sock.close()


def find_pg_bin() -> Path | None:
    """The machine's PostgreSQL server binaries (pg_ctl, initdb), if installed."""
    for candidate in (shutil.which("pg_config"),):
        if candidate:
            out = subprocess.run([candidate, "--bindir"], capture_output=True, text=True)
            path = Path(out.stdout.strip())
            if (path / "pg_ctl").exists() and (path / "initdb").exists():
                return path
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class ThrowawayPostgres:
    """A private PostgreSQL in a temp directory, run as the ``postgres`` OS user when we are root."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        """``settings``: server settings (``-c name=value``), e.g. a small lock table."""
        self.settings = dict(settings or {})
        bindir = find_pg_bin()
        if bindir is None:
            raise RuntimeError("pg_ctl/initdb not found: install the PostgreSQL server package")
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="otel-pg-throwaway-"))
        self.data = self.dir / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def _ctl(self, action: str, *extra: str) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        opts += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", *extra, action
        )

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
