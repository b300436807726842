"""CPU accounting for the benchmark: the application process, the PostgreSQL server, an OTLP sink.

* Application: ``time.process_time()`` (every thread of this process: the SDK, the batch
  processor's export thread, the exporter, the psycopg client).
* PostgreSQL: ``/proc`` of the postmaster and every live child (backends, checkpointer, WAL
  writer, autovacuum), ``utime + stime``, plus the postmaster's ``cutime + cstime``, which holds
  the CPU of children that exited during the run (a backend that closed its connection). So the
  figure is all server processes for the whole window, read from the kernel, not sampled; it needs
  the server on this machine (``available`` is False otherwise). ``pg_stat_statements`` was not
  used: it sees statement execution only, not parsing of the wire protocol, WAL writing or
  background work, which are part of what a stored span costs the database.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[1]) == pid:  # field 4 (ppid), 0-based 1 after comm
                out.append(int(entry))
    return out


class PostgresCpu:
    """Seconds of CPU the local PostgreSQL server has used so far (see the module's docstring)."""

    def __init__(self, dsn: str) -> None:
        self.postmaster: int | None = None
        try:
            with psycopg.connect(dsn) as conn:
                backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                fields = _stat_fields(backend)  # our own backend: its parent is the postmaster
                if fields is not None:
                    self.postmaster = int(fields[1])
        except psycopg.Error:
            self.postmaster = None

    @property
    def available(self) -> bool:
        return self.postmaster is not None and _stat_fields(self.postmaster) is not None

    def seconds(self) -> float:
        if self.postmaster is None:
            return 0.0
        fields = _stat_fields(self.postmaster)
        if fields is None:
            return 0.0
        # utime, stime, cutime, cstime are fields 14-17 (1-based), i.e. 11-14 after comm
        total = sum(int(fields[i]) for i in (11, 12, 13, 14))
        for child in _children(self.postmaster):
            f = _stat_fields(child)
            if f is not None:
                total += int(f[11]) + int(f[12])
        return total / _TICKS


def process_seconds() -> float:
    return time.process_time()


_SINK = r"""
import http.server, sys

class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)
print("ready", flush=True)
server.serve_forever()
"""


class OtlpSink:
    """A local OTLP/HTTP endpoint in another process that reads each body and answers 200 at once
    (an empty ``ExportTraceServiceResponse``): the cost of shipping, not of storing."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SINK, str(self.port)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.proc.stdout.readline()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def pid_seconds(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far, from ``/proc``."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICKS if fields is not None else 0.0


class GatewayProcess:
    """``otel-pg-gateway`` in another process (its CPU read from ``/proc``), on a free local port."""

    def __init__(self, dsn: str, *, grpc_port: int = 0) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.grpc_port = grpc_port
        extra = ("--grpc-port", str(grpc_port))
        code = "from otel_pg_exporter.commands.cli import gateway_main as m; raise SystemExit(m())"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "--dsn", dsn, "--port", str(self.port), "--max-inflight", "16", *extra],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # its "storing into ..." line: listening
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def cpu_seconds(self) -> float:
        return pid_seconds(self.proc.pid)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
