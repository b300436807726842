"""Forwarding users' spans to their own LangSmith / Langfuse, against a local OTLP/HTTP receiver."""

from __future__ import annotations

import base64
import gzip
import http.server
import json
import logging
import threading
import uuid
from typing import Any

import psycopg
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_pg_exporter import PostgresSpanExporter
from tests.helpers.support import Capture, messages


class OtlpReceiver:
    """An OTLP/HTTP (protobuf) traces endpoint on 127.0.0.1 that records every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                spans = [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
                receiver.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "trace_ids": {s.trace_id.hex() for s in spans},
                        "names": [s.name for s in spans],
                        "attributes": [{a.key for a in s.attributes} for s in spans],
                    }
                )
                self.send_response(401 if self.path.startswith("/dead") else 200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Any:
    r = OtlpReceiver()
    yield r
    r.close()


def make_user(dsn: str, observability: dict[str, Any]) -> uuid.UUID:
    uid = uuid.uuid4()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO profiles (id, settings) VALUES (%s, %s)",
            (uid, json.dumps({"observability": observability})),
        )
    return uid


def user_trace(capture: Capture, uid: uuid.UUID, n_children: int = 2) -> str:
    with capture.tracer.start_as_current_span("request", attributes={"user.id": str(uid)}) as root:
        for i in range(n_children):
            with capture.tracer.start_as_current_span(
                f"chat {i}",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.input.messages": messages(("user", f"question of {uid}")),
                },
            ):
                pass
    return f"{root.get_span_context().trace_id:032x}"


def test_each_users_spans_go_to_their_own_service_with_their_own_keys(
    db_dsn: str, receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    alice_key, bob_public, bob_secret = "lsv2_pt_alice_" + "a" * 24, "pk-lf-bob", "sk-lf-bob-" + "b" * 20
    alice = make_user(
        db_dsn,
        {"langsmith": {"api_key": alice_key, "project": "alice-proj", "endpoint": receiver.url + "/ls"}},
    )
    bob = make_user(
        db_dsn,
        {"langfuse": {"public_key": bob_public, "secret_key": bob_secret, "host": receiver.url + "/lf"}},
    )
    carol = make_user(db_dsn, {})  # no credentials: stored, never forwarded
    capture = Capture()
    exporter = PostgresSpanExporter(db_dsn, spool_dir="off", forward=True)
    caplog.set_level(logging.DEBUG)
    try:
        expected: dict[uuid.UUID, set[str]] = {alice: set(), bob: set(), carol: set()}
        for _ in range(3):  # batches mixing the three users' traces
            for uid in (alice, bob, carol):
                expected[uid].add(user_trace(capture, uid))
            assert exporter.export(capture.take()).name == "SUCCESS"
        assert exporter.force_flush(10_000)
        stats = exporter.stats()
    finally:
        exporter.shutdown()
    assert stats["forward_spans_sent"] == 18 and stats.get("forward_spans_failed", 0) == 0
    by_path: dict[str, list[dict[str, Any]]] = {}
    for req in receiver.requests:
        by_path.setdefault(req["path"], []).append(req)
    assert set(by_path) == {"/ls/v1/traces", "/lf/api/public/otel/v1/traces"}
    for req in by_path["/ls/v1/traces"]:
        assert (
            req["headers"]["x-api-key"] == alice_key and req["headers"]["langsmith-project"] == "alice-proj"
        )
        assert "authorization" not in req["headers"]
        assert req["trace_ids"] <= expected[alice]  # never another user's spans under alice's key
    for req in by_path["/lf/api/public/otel/v1/traces"]:
        token = base64.b64encode(f"{bob_public}:{bob_secret}".encode()).decode()
        assert req["headers"]["authorization"] == f"Basic {token}" and "x-api-key" not in req["headers"]
        assert req["trace_ids"] <= expected[bob]
    assert sum(len(r["names"]) for r in by_path["/ls/v1/traces"]) == 9  # 3 traces x 3 spans
    assert sum(len(r["names"]) for r in by_path["/lf/api/public/otel/v1/traces"]) == 9
    assert not any(r["trace_ids"] & expected[carol] for r in receiver.requests)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (alice_key, bob_secret):
        assert secret not in logged  # keys are never logged
        with psycopg.connect(db_dsn) as conn:  # nor stored in a span
            row = conn.execute(
                "SELECT count(*) FROM spans WHERE metadata::text LIKE %s", (f"%{secret}%",)
            ).fetchone()
        assert row == (0,)


def test_children_wait_for_the_root_that_names_the_user(db_dsn: str, receiver: OtlpReceiver) -> None:
    """Children are exported before their root; only the root carries user.id."""
    uid = make_user(db_dsn, {"langsmith": {"api_key": "lsv2_pt_wait", "endpoint": receiver.url}})
    stranger_capture = Capture()
    capture = Capture()
    exporter = PostgresSpanExporter(db_dsn, spool_dir="off", forward=True)
    try:
        tid = user_trace(capture, uid, n_children=3)
        spans = capture.take()
        exporter.export([s for s in spans if s.parent is not None])  # user unknown yet: held
        exporter.force_flush(5_000)
        assert receiver.requests == []
        exporter.export([s for s in spans if s.parent is None])
        # a trace whose root names no user is never forwarded (its held children are dropped)
        with stranger_capture.tracer.start_as_current_span("anonymous"):
            with stranger_capture.tracer.start_as_current_span("child"):
                pass
        anonymous = stranger_capture.take()
        exporter.export(anonymous[:1])
        exporter.export(anonymous[1:])
        assert exporter.force_flush(10_000)
        stats = exporter.stats()
    finally:
        exporter.shutdown()
    assert {t for r in receiver.requests for t in r["trace_ids"]} == {tid}
    assert sum(len(r["names"]) for r in receiver.requests) == 4
    assert stats["forward_unattributed"] == 2


def test_forwarding_honours_enabled_and_capture_content(db_dsn: str, receiver: OtlpReceiver) -> None:
    muted = make_user(
        db_dsn, {"enabled": False, "langsmith": {"api_key": "lsv2_pt_m", "endpoint": receiver.url + "/m"}}
    )
    private = make_user(
        db_dsn,
        {"capture_content": False, "langsmith": {"api_key": "lsv2_pt_p", "endpoint": receiver.url + "/p"}},
    )
    capture = Capture()
    exporter = PostgresSpanExporter(db_dsn, spool_dir="off", forward=True)
    try:
        user_trace(capture, muted)
        user_trace(capture, private)
        exporter.export(capture.take())
        assert exporter.force_flush(10_000)
    finally:
        exporter.shutdown()
    assert {r["path"] for r in receiver.requests} == {"/p/v1/traces"}
    for req in receiver.requests:
        assert all("gen_ai.input.messages" not in attrs for attrs in req["attributes"])
        assert any("gen_ai.operation.name" in attrs for attrs in req["attributes"])


def test_forward_needs_user_settings(db_dsn: str) -> None:
    from otel_pg_exporter import ConfigurationError

    with pytest.raises(ConfigurationError, match="user_settings"):
        PostgresSpanExporter(db_dsn, spool_dir="off", forward=True, user_settings=False)


def test_keys_can_live_in_supabase_vault(make_database: Any, receiver: OtlpReceiver) -> None:
    from otel_pg_exporter import install_schema

    dsn = make_database()
    install_schema(dsn)
    key = "lsv2_pt_from_vault_" + "v" * 20
    no_vault_user = make_user(
        dsn, {"langsmith": {"api_key": {"vault": "missing"}, "endpoint": receiver.url + "/x"}}
    )
    capture = Capture()
    exporter = PostgresSpanExporter(dsn, spool_dir="off", forward=True, user_settings_ttl_s=0.01)
    try:
        user_trace(capture, no_vault_user)  # no vault schema at all: the target is skipped, nothing fails
        assert exporter.export(capture.take()).name == "SUCCESS"
        with psycopg.connect(dsn, autocommit=True) as conn:  # what Supabase's Vault exposes
            conn.execute("CREATE SCHEMA vault")
            conn.execute("CREATE TABLE vault.decrypted_secrets (id uuid, name text, decrypted_secret text)")
            secret_id = uuid.uuid4()
            conn.execute(
                "INSERT INTO vault.decrypted_secrets VALUES (%s, 'alice-langsmith', %s)", (secret_id, key)
            )
        by_name = make_user(
            dsn, {"langsmith": {"api_key": {"vault": "alice-langsmith"}, "endpoint": receiver.url + "/n"}}
        )
        by_id = make_user(
            dsn, {"langsmith": {"api_key": {"vault": str(secret_id)}, "endpoint": receiver.url + "/i"}}
        )
        user_trace(capture, by_name)
        user_trace(capture, by_id)
        assert exporter.export(capture.take()).name == "SUCCESS"
        assert exporter.force_flush(10_000)
        stats = exporter.stats()
    finally:
        exporter.shutdown()
    assert {r["path"] for r in receiver.requests} == {"/n/v1/traces", "/i/v1/traces"}
    assert all(r["headers"]["x-api-key"] == key for r in receiver.requests)
    assert stats["failed_batches"] == 0
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM spans WHERE metadata::text LIKE %s", (f"%{key}%",)
        ).fetchone()
    assert row == (0,)


def test_a_failing_target_rests_and_does_not_hold_up_the_others(db_dsn: str, receiver: OtlpReceiver) -> None:
    revoked = make_user(
        db_dsn, {"langsmith": {"api_key": "lsv2_pt_revoked", "endpoint": receiver.url + "/dead"}}
    )
    fine = make_user(db_dsn, {"langsmith": {"api_key": "lsv2_pt_fine", "endpoint": receiver.url + "/ok"}})
    capture = Capture()
    exporter = PostgresSpanExporter(db_dsn, spool_dir="off", forward=True)
    try:
        for _ in range(2):
            user_trace(capture, revoked)
            user_trace(capture, fine)
            exporter.export(capture.take())
            assert exporter.force_flush(10_000)
        stats = exporter.stats()
    finally:
        exporter.shutdown()
    dead = [r for r in receiver.requests if r["path"].startswith("/dead")]
    assert len(dead) == 1  # refused once (401), then left alone for a while
    assert stats["forward_spans_failed"] == 3 and stats["forward_spans_skipped"] == 3
    assert stats["forward_spans_sent"] == 6
