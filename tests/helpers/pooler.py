"""A real PgBouncer (Debian's ``pgbouncer``) started by the tests on a free port, in front of the
test server; transaction pooling unless asked otherwise. Run as the ``postgres`` OS user when we
are root (PgBouncer refuses to run as root)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer") if os.access(p, os.X_OK)), None
    )


class PgBouncer:
    def __init__(self, server_dsn: str, pool_mode: str = "transaction", pool_size: int = 4) -> None:
        binary = find_pgbouncer()
        if binary is None:
            raise RuntimeError("pgbouncer not found: apt-get install pgbouncer (make test does)")
        parts = conninfo_to_dict(server_dsn)
        self.server_dsn = server_dsn
        self.user = parts.get("user") or "postgres"
        self.dir = Path(tempfile.mkdtemp(prefix="otel-pg-pgbouncer-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        (self.dir / "users.txt").write_text(f'"{self.user}" ""\n')
        host, port = parts.get("host") or "127.0.0.1", parts.get("port") or "5432"
        (self.dir / "pgbouncer.ini").write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host={host} port={port}",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    f"auth_file = {self.dir / 'users.txt'}",
                    f"pool_mode = {pool_mode}",
                    f"default_pool_size = {pool_size}",
                    "max_client_conn = 200",
                    f"logfile = {self.dir / 'pgbouncer.log'}",
                    f"pidfile = {self.dir / 'pgbouncer.pid'}",
                    "ignore_startup_parameters = extra_float_digits",
                    "",
                ]
            )
        )
        cmd = [binary, str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            for f in self.dir.iterdir():
                shutil.chown(f, "postgres", "postgres")
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.proc.stderr.read().decode()[-500:]}")
            time.sleep(0.05)
        self.close()
        raise RuntimeError("pgbouncer did not start listening within 15 s")

    def dsn(self, dbname: str | None = None) -> str:
        """The DSN of ``dbname`` (default: the server DSN's) through the pooler."""
        parts = conninfo_to_dict(self.server_dsn)
        return make_conninfo(
            self.server_dsn, host="127.0.0.1", port=str(self.port), dbname=dbname or parts.get("dbname")
        )

    def log(self) -> str:
        try:
            return (self.dir / "pgbouncer.log").read_text()
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # immediate shutdown (SIGINT waits for clients)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
