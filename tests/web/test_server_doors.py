"""What the servers refuse at the door, and what they stay able to do meanwhile: every gzip member
read (trailing garbage refused), hostile nesting refused with 400, limits taken before a body is
read, slow bodies and half-sent headers cut, ``/readyz`` single-flight and nameless, a forged
``Host`` refused without a token (DNS rebinding), secrets kept out of ``argv``."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from otel_pg_exporter.web import serving
from otel_pg_exporter.web.gateway.app import Gateway, create_app
from tests.helpers.faults import wait_for
from tests.helpers.support import Capture, Served, count_spans, free_port, served_explorer


def _spans(run_id: str, n: int) -> list[Any]:
    capture = Capture()
    for i in range(n):
        with capture.tracer.start_as_current_span(f"door {i}", attributes={"run.id": run_id}):
            pass
    return capture.take()


def _request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST" if body is not None else "GET", headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class _Gw(Served):
    def __init__(self, dsn: str, token: str | None = None, **options: Any) -> None:
        options.setdefault("spool_dir", "off")
        self.gateway = Gateway(dsn, token=token, **options)
        super().__init__(create_app(self.gateway), token=token)


@pytest.fixture
def gateway(db_dsn: str) -> Iterator[_Gw]:
    served = _Gw(db_dsn)
    yield served
    served.close()


PB = {"Content-Type": "application/x-protobuf"}


def test_every_gzip_member_is_stored_and_trailing_garbage_refused(db_dsn: str, gateway: _Gw) -> None:
    run_id = uuid.uuid4().hex
    first = encode_spans(_spans(run_id, 3)).SerializeToString()
    second = encode_spans(_spans(run_id, 4)).SerializeToString()
    # protobuf messages concatenate: gzip(A) + gzip(B) is one request of A's spans and B's
    status, _ = _request(
        f"{gateway.url}/v1/traces",
        gzip.compress(first) + gzip.compress(second),
        {**PB, "Content-Encoding": "gzip"},
    )
    assert status == 200 and count_spans(db_dsn, run_id) == 7
    other = uuid.uuid4().hex
    body = gzip.compress(encode_spans(_spans(other, 2)).SerializeToString()) + b"trailing garbage"
    status, answer = _request(f"{gateway.url}/v1/traces", body, {**PB, "Content-Encoding": "gzip"})
    assert status == 400 and b"not a gzip member" in answer and count_spans(db_dsn, other) == 0


def test_json_nested_thousands_deep_is_a_400(db_dsn: str, gateway: _Gw, caplog) -> None:
    deep = (
        '{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":'
        + '{"arrayValue":{"values":[' * 5000
    )
    deep += "]}}" * 5000 + "}]}}]}"
    status, answer = _request(f"{gateway.url}/v1/traces", deep.encode(), {"Content-Type": "application/json"})
    assert status == 400 and "nested deeper" in json.loads(answer)["message"]
    also = "[" * 100_000 + "]" * 100_000  # deeper than Python's own parser goes
    status, answer = _request(f"{gateway.url}/v1/traces", also.encode(), {"Content-Type": "application/json"})
    assert status == 400 and "Traceback" not in caplog.text
    run_id = uuid.uuid4().hex
    ok, _ = _request(f"{gateway.url}/v1/traces", encode_spans(_spans(run_id, 2)).SerializeToString(), PB)
    assert ok == 200 and count_spans(db_dsn, run_id) == 2


def _stall_upload(url: str, declared: int, sent: int) -> socket.socket:
    """A request that declares ``declared`` bytes and sends ``sent`` of them, then stalls."""
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-protobuf\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"\x00" * sent)
    return sock


def test_big_and_slow_bodies_do_not_hold_up_health_or_a_small_request(db_dsn: str) -> None:
    served = _Gw(db_dsn, body_timeout_s=3, max_inflight=8)
    stalled: list[socket.socket] = []
    try:
        for _ in range(4):  # four 15 MB uploads in flight, a megabyte each so far
            stalled.append(_stall_upload(served.url, 15 * 1024 * 1024, 1024 * 1024))
        assert wait_for(
            lambda: served.gateway._budget.held >= 4 * 15 * 1024 * 1024, 10
        )  # taken before reading
        assert _request(f"{served.url}/healthz")[0] == 200
        run_id = uuid.uuid4().hex
        status, _ = _request(
            f"{served.url}/v1/traces", encode_spans(_spans(run_id, 3)).SerializeToString(), PB
        )
        assert status == 200 and count_spans(db_dsn, run_id) == 3
        # the byte budget (64 MiB) is nearly held: one more big upload is refused before it is read
        big = _stall_upload(served.url, 15 * 1024 * 1024, 0)
        stalled.append(big)
        big.settimeout(10)
        assert b" 429 " in big.recv(4096).split(b"\r\n", 1)[0] + b" "
        # the slow ones are cut at the body deadline with 408, and give their bytes back
        answers = [s.recv(4096) for s in stalled[:4]]
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers)
        assert wait_for(lambda: served.gateway._budget.held == 0, 10)
    finally:
        for s in stalled:
            s.close()
        served.close()


def test_half_sent_headers_are_cut(db_dsn: str, monkeypatch) -> None:
    monkeypatch.setattr(serving, "HEADER_TIMEOUT_S", 1.0)
    served = _Gw(db_dsn)
    try:
        sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and nothing more
        started = time.monotonic()
        assert sock.recv(4096) == b""  # closed by the server
        assert time.monotonic() - started < 8
        sock.close()
        assert _request(f"{served.url}/healthz")[0] == 200
    finally:
        served.close()


def test_readyz_is_single_flight_and_names_nothing(db_dsn: str, gateway: _Gw) -> None:
    answers: list[tuple[int, bytes]] = []
    threads = [
        threading.Thread(target=lambda: answers.append(_request(f"{gateway.url}/readyz"))) for _ in range(45)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 45 and all(a == (200, b'{"ready":true}') for a in answers)
    assert gateway.gateway.ready_checks == 1  # one check, one connection, for 45 probes
    dbname = psycopg.conninfo.conninfo_to_dict(db_dsn)["dbname"]
    assert dbname not in json.dumps(gateway.gateway.stats()["ready"])


def test_a_forged_host_is_refused_without_a_token(db_dsn: str) -> None:
    plain = _Gw(db_dsn)
    guarded = _Gw(db_dsn, token="t0ken")
    listed = Served(create_app(Gateway(db_dsn, spool_dir="off")), allow_hosts=["traces.internal"])
    try:
        with served_explorer(db_dsn) as ui:
            for url in (plain.url, ui.url):
                assert _request(f"{url}/healthz", headers={"Host": "attacker.example"})[0] == 421
                assert _request(f"{url}/healthz", headers={"Host": "attacker.example:80"})[0] == 421
                assert _request(f"{url}/healthz")[0] == 200  # 127.0.0.1:port
                assert _request(f"{url}/healthz", headers={"Host": "localhost"})[0] == 200
                assert _request(f"{url}/healthz", headers={"Host": "[::1]:8400"})[0] == 200
            status, body = _request(f"{ui.url}/", headers={"Host": "rebound.attacker.example:8400"})
            assert status == 421 and b"trace" not in body.lower()
            assert _request(f"{listed.url}/healthz", headers={"Host": "traces.internal:4318"})[0] == 200
            # with a token the Host is not the guard: the token is
            assert _request(f"{guarded.url}/healthz", headers={"Host": "gateway.example"})[0] == 200
    finally:
        for served in (plain, guarded, listed):
            served.close()


def _command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from otel_pg_exporter.commands.cli import " + args[0] + " as m; sys.exit(m(sys.argv[1:]))",
            *args[1:],
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_secrets_come_from_files_and_argv_ones_are_warned_about(db_dsn: str, tmp_path: Path, capsys) -> None:
    with_password = psycopg.conninfo.make_conninfo(db_dsn, password="hunter2-secret")
    out = _command("spool_main", "list", "--dsn", with_password, "--spool-dir", str(tmp_path))
    assert out.returncode == 0
    assert "holds a password" in out.stderr and "hunter2-secret" not in out.stdout + out.stderr
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(db_dsn + "\n")
    os.chmod(dsn_file, 0o600)
    out = _command("doctor_main", "--dsn-file", str(dsn_file), "--spool-dir", str(tmp_path))
    assert "connection" in out.stdout and "warning" not in out.stderr
    # the gateway's token from a file: required on /stats, never on the command line
    token_file = tmp_path / "token"
    token_file.write_text("file-t0ken\n")
    os.chmod(token_file, 0o600)
    port = free_port()
    env = {**os.environ, "OTEL_EXPORTER_POSTGRES_DSN": db_dsn, "OTEL_EXPORTER_POSTGRES_SPOOL_DIR": "off"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from otel_pg_exporter.commands.cli import gateway_main as m; sys.exit(m(sys.argv[1:]))",
            "--port",
            str(port),
            "--grpc-port",
            str(free_port()),
            "--token-file",
            str(token_file),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: _ping(f"{url}/healthz"), 30)
        assert _request(f"{url}/stats")[0] == 401
        assert _request(f"{url}/stats", headers={"Authorization": "Bearer file-t0ken"})[0] == 200
        assert "file-t0ken" not in " ".join(proc.args)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "file-t0ken" not in err
    # a token on the command line still works, with a warning
    import argparse

    from otel_pg_exporter.commands import arguments

    parser = argparse.ArgumentParser(prog="otel-pg-gateway")
    arguments.add_server(parser, port=4318, token_env="OTEL_PG_GATEWAY_TOKEN", token_help="")
    args = arguments.parse(parser, ["--token", "argv-t0ken"])
    err = capsys.readouterr().err
    assert args.token == "argv-t0ken" and "visible to every local user" in err and "argv-t0ken" not in err
    assert arguments.parse(parser, ["--token-file", str(token_file)]).token == "file-t0ken"
    assert capsys.readouterr().err == ""


def _ping(url: str) -> bool:
    try:
        return _request(url)[0] == 200
    except OSError:
        return False
