"""``otel-pg-gateway``: OTLP/HTTP in (the official exporters, protobuf and JSON, gzip, chunked), the
exporter's own pipeline behind it, acknowledgements only for what is durable."""

from __future__ import annotations

import base64
import gzip
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import Link, Status, StatusCode
from psycopg.rows import dict_row

from otel_pg_exporter import PostgresSpanExporter, install_schema, trace_uuid
from otel_pg_exporter.schema.tables import SEED_COLUMNS
from otel_pg_exporter.web.gateway.app import Gateway, create_app
from tests.helpers.faults import TcpProxy, wait_for
from tests.helpers.support import Capture, Served, chat_attributes, free_port, messages


class Running(Served):
    """A gateway served on 127.0.0.1, in a thread of the test process."""

    def __init__(self, gateway: Gateway, token: str | None = None) -> None:
        self.gateway = gateway
        super().__init__(create_app(gateway), token=token)


@pytest.fixture
def serve() -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def start(dsn: str, **kwargs: Any) -> Running:
        kwargs.setdefault("spool_dir", "off")
        served = Running(Gateway(dsn, **kwargs), token=kwargs.get("token"))
        running.append(served)
        return served

    yield start
    for served in running:
        served.close()


def _post(url: str, body: bytes, content_type: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type, **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _traces(capture: Capture, n: int, tag: str) -> tuple[list[Any], list[int]]:
    """``n`` GenAI traces made by the real SDK: a root, a chat call with messages and usage, a
    failing tool with an exception event, a link."""
    tracer = capture.tracer
    ids = []
    for i in range(n):
        with tracer.start_as_current_span(
            f"agent {tag} {i}", attributes={"gen_ai.workflow.name": f"gw-{tag}", "user.id": f"user-{i % 3}"}
        ) as root:
            ids.append(root.get_span_context().trace_id)
            with tracer.start_as_current_span(
                "chat gpt-4o-mini",
                attributes=chat_attributes(100 + i, 20, **{"gen_ai.input.messages": messages(("user", f"q{i}"))}),
                links=[Link(root.get_span_context(), {"why": "test"})],
            ) as chat:
                chat.add_event("gen_ai.choice", {"index": 0, "finish_reason": "stop"})
            with tracer.start_as_current_span("execute_tool lookup", attributes={"gen_ai.tool.name": "lookup"}) as tool:
                tool.record_exception(RuntimeError("no such city"))
                tool.set_status(Status(StatusCode.ERROR, "no such city"))
    return capture.take(), ids


def _rows(dsn: str, trace_ids: list[int]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    tids = [trace_uuid(t) for t in trace_ids]
    span_columns = [c for c in SEED_COLUMNS["spans"]]
    trace_columns = [c for c in SEED_COLUMNS["traces"]]
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        spans = conn.execute(
            f"SELECT {', '.join(span_columns)} FROM spans WHERE trace_id = ANY(%s) ORDER BY span_id", (tids,)
        ).fetchall()
        traces = conn.execute(
            f"SELECT {', '.join(trace_columns)} FROM traces WHERE trace_id = ANY(%s) ORDER BY trace_id", (tids,)
        ).fetchall()
    return spans, traces


def _new_db(make_database: Callable[[], str]) -> str:
    dsn = make_database()
    install_schema(dsn)
    return dsn


def test_official_protobuf_exporter_stores_what_the_in_process_exporter_stores(
    make_database: Callable[[], str], serve: Callable[..., Running]
) -> None:
    spans, ids = _traces(Capture("gw-svc", **{"host.name": "h1"}), 3, "pb")
    direct, received = _new_db(make_database), _new_db(make_database)
    exporter = PostgresSpanExporter(direct, spool_dir="off")
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    gateway = serve(received)
    otlp = OTLPSpanExporter(endpoint=f"{gateway.url}/v1/traces")
    assert otlp.export(spans) is SpanExportResult.SUCCESS
    otlp.shutdown()
    expected, got = _rows(direct, ids), _rows(received, ids)
    assert len(expected[0]) == 9 and len(expected[1]) == 3
    assert got == expected  # column by column, spans and traces
    stats = gateway.gateway.stats()
    assert stats["spans_accepted"] == 9 and stats["requests_ok"] == 1


def _otlp_json(spans: list[Any]) -> bytes:
    """The spec's OTLP/JSON mapping of the official encoder's request: hex ids, int64 as strings."""
    document = json_format.MessageToDict(encode_spans(spans))

    def hex_ids(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") else hex_ids(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [hex_ids(v) for v in node]
        return node

    return json.dumps(hex_ids(document)).encode()


def test_json_gzip_and_chunked_bodies(make_database: Callable[[], str], serve: Callable[..., Running]) -> None:
    spans, ids = _traces(Capture("gw-json"), 2, "json")
    direct, received = _new_db(make_database), _new_db(make_database)
    exporter = PostgresSpanExporter(direct, spool_dir="off")
    exporter.export(spans)
    exporter.shutdown()
    gateway = serve(received)
    body = _otlp_json(spans[:3])
    status, headers, answer = _post(f"{gateway.url}/v1/traces", body, "application/json; charset=utf-8")
    assert status == 200 and json.loads(answer) == {} and headers["content-type"].startswith("application/json")
    # gzip, through the official exporter
    otlp = OTLPSpanExporter(endpoint=f"{gateway.url}/v1/traces", compression=Compression.Gzip)
    assert otlp.export(spans[3:4]) is SpanExportResult.SUCCESS
    otlp.shutdown()
    # chunked: no Content-Length, as streaming SDKs send it
    import httpx

    def pieces() -> Iterator[bytes]:
        data = encode_spans(spans[4:]).SerializeToString()
        for start in range(0, len(data), 100):
            yield data[start : start + 100]

    response = httpx.post(
        f"{gateway.url}/v1/traces", content=pieces(), headers={"Content-Type": "application/x-protobuf"}
    )
    assert response.status_code == 200 and "content-length" not in response.request.headers
    assert _rows(received, ids) == _rows(direct, ids)


def test_bad_requests_get_a_reason_and_harm_nothing(db_dsn: str, serve: Callable[..., Running]) -> None:
    gateway = serve(db_dsn, max_body_bytes=64 * 1024)
    url = f"{gateway.url}/v1/traces"
    good = encode_spans(_traces(Capture(), 1, "bad")[0]).SerializeToString()
    cases = [
        (b"\xff\x00garbage" * 10, "application/x-protobuf", {}, 400),
        (good[: len(good) // 2], "application/x-protobuf", {}, 400),  # truncated
        (b"{not json", "application/json", {}, 400),
        (good, "text/plain", {}, 415),
        (b"x" * (65 * 1024), "application/x-protobuf", {}, 413),
        (gzip.compress(b"\x00" * (2 * 1024 * 1024)), "application/x-protobuf", {"Content-Encoding": "gzip"}, 413),
        (b"not gzip at all", "application/x-protobuf", {"Content-Encoding": "gzip"}, 400),
        (gzip.compress(good)[:-8], "application/x-protobuf", {"Content-Encoding": "gzip"}, 400),
        (json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}).encode(),
         "application/json", {}, 400),
    ]
    for body, content_type, headers, expected in cases:
        status, _, answer = _post(url, body, content_type, **headers)
        assert status == expected, (expected, answer[:200])
        assert answer  # a reason, as google.rpc.Status
    status, _, _ = _post(url, good, "application/x-protobuf")
    assert status == 200  # still serving, nothing else affected
    status, _, answer = _post(url, gzip.compress(good), "application/x-protobuf", **{"Content-Encoding": "gzip"})
    assert status == 200


def test_a_span_without_ids_is_rejected_in_partial_success(db_dsn: str, serve: Callable[..., Running]) -> None:
    gateway = serve(db_dsn)
    spans, ids = _traces(Capture(), 1, "partial")
    document = json.loads(_otlp_json(spans))
    bad = dict(document["resourceSpans"][0]["scopeSpans"][0]["spans"][0], traceId="", name="no ids")
    document["resourceSpans"][0]["scopeSpans"][0]["spans"].append(bad)
    status, _, answer = _post(f"{gateway.url}/v1/traces", json.dumps(document).encode(), "application/json")
    assert status == 200
    assert json.loads(answer)["partialSuccess"]["rejectedSpans"] == "1"
    assert len(_rows(db_dsn, ids)[0]) == 3  # the valid ones are stored


def test_a_retried_request_is_stored_once(db_dsn: str, serve: Callable[..., Running]) -> None:
    gateway = serve(db_dsn)
    spans, ids = _traces(Capture(), 2, "dup")
    body = encode_spans(spans).SerializeToString()
    for _ in range(3):
        assert _post(f"{gateway.url}/v1/traces", body, "application/x-protobuf")[0] == 200
    stored, traces = _rows(db_dsn, ids)
    assert len(stored) == 6
    assert sorted(t["total_tokens"]["input"] for t in traces) == [100, 101]


def test_bearer_token(db_dsn: str, serve: Callable[..., Running]) -> None:
    gateway = serve(db_dsn, token="s3cret-token")
    body = encode_spans(_traces(Capture(), 1, "auth")[0]).SerializeToString()
    url = f"{gateway.url}/v1/traces"
    assert _post(url, body, "application/x-protobuf")[0] == 401
    assert _post(url, body, "application/x-protobuf", Authorization="Bearer wrong")[0] == 401
    assert _post(url, body, "application/x-protobuf", Authorization="Bearer s3cret-token")[0] == 200
    otlp = OTLPSpanExporter(endpoint=url, headers={"Authorization": "Bearer s3cret-token"})
    assert otlp.export(_traces(Capture(), 1, "auth2")[0]) is SpanExportResult.SUCCESS
    otlp.shutdown()


def test_health_and_readiness(db_dsn: str, empty_db: str, serve: Callable[..., Running]) -> None:
    ready = serve(db_dsn)
    assert _get(f"{ready.url}/healthz") == (200, {"status": "ok"})
    status, answer = _get(f"{ready.url}/readyz")
    assert status == 200 and answer["ready"] is True
    assert answer == {"ready": True}  # no reason for anyone: it is in /stats
    not_ready = serve(empty_db)  # no schema installed
    status, answer = _get(f"{not_ready.url}/readyz")
    assert status == 503 and answer == {"ready": False}
    assert "not applied" in _get(f"{not_ready.url}/stats")[1]["ready"]["reason"]
    assert _get(f"{not_ready.url}/healthz")[0] == 200
    # with a token, /readyz gives the reason to whoever holds it, and names no database
    guarded = serve(empty_db, token="s3cret-token")
    status, answer = _get(f"{guarded.url}/readyz")
    assert status == 503 and answer == {"ready": False}
    request = urllib.request.Request(f"{guarded.url}/readyz", headers={"Authorization": "Bearer s3cret-token"})
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("expected 503")
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read())
    assert "not applied" in detail["reason"] and detail["quarantine_spans"] == 0
    unreachable = serve("postgresql://nobody@127.0.0.1:1/secretdb")
    assert _get(f"{unreachable.url}/readyz") == (503, {"ready": False})
    reason = _get(f"{unreachable.url}/stats")[1]["ready"]["reason"]
    assert reason == "database unreachable" and "secretdb" not in reason and "nobody" not in reason


def test_outage_spooled_then_replayed_or_refused_for_a_retry(
    db_dsn: str, tmp_path: Any, serve: Callable[..., Running]
) -> None:
    proxy = TcpProxy(db_dsn)
    try:
        spooling = serve(proxy.dsn, spool_dir=str(tmp_path), timeout_s=2)
        no_spool = serve(proxy.dsn, timeout_s=2)
        spans, ids = _traces(Capture(), 2, "outage")
        body = encode_spans(spans).SerializeToString()
        proxy.cut()
        status, _, _ = _post(f"{spooling.url}/v1/traces", body, "application/x-protobuf")
        assert status == 200  # durable in the spool: the sender may forget it
        assert spooling.gateway.stats()["spans_spooled"] == 6
        status, headers, _ = _post(f"{no_spool.url}/v1/traces", body, "application/x-protobuf")
        assert status == 503 and headers["retry-after"]  # not durable: the sender keeps and retries
        assert _get(f"{spooling.url}/readyz")[0] == 503
        proxy.restore()
        assert wait_for(lambda: len(_rows(db_dsn, ids)[0]) == 6, 30)  # the spool replayed
        traces = _rows(db_dsn, ids)[1]
        assert sorted(t["total_tokens"]["input"] for t in traces) == [100, 101]
    finally:
        proxy.close()


def test_two_gateways_shuffled_totals_exact(
    make_database: Callable[[], str], serve: Callable[..., Running]
) -> None:
    spans, ids = _traces(Capture(), 8, "two")
    direct, received = _new_db(make_database), _new_db(make_database)
    exporter = PostgresSpanExporter(direct, spool_dir="off")
    exporter.export(spans)
    exporter.shutdown()
    first, second = serve(received), serve(received)
    shuffled = list(spans)
    random.Random(3).shuffle(shuffled)
    batches = [shuffled[i : i + 3] for i in range(0, len(shuffled), 3)]
    errors: list[Any] = []

    def send(url: str, mine: list[list[Any]]) -> None:
        for batch in mine:
            status = _post(f"{url}/v1/traces", encode_spans(batch).SerializeToString(), "application/x-protobuf")[0]
            if status != 200:
                errors.append(status)

    threads = [
        threading.Thread(target=send, args=(first.url, batches[0::2])),
        threading.Thread(target=send, args=(second.url, batches[1::2])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert _rows(received, ids)[1] == _rows(direct, ids)[1]  # trace rows: totals, status, query


def test_logs_merge_into_span_rows(db_dsn: str, serve: Callable[..., Running]) -> None:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    gateway = serve(db_dsn)
    capture = Capture()
    with capture.tracer.start_as_current_span("chat", attributes=chat_attributes(5, 1)) as span:
        trace_id = span.get_span_context().trace_id
        capture.logger.emit(event_name="gen_ai.user.message", body={"content": "hello from a log"})
    records = capture.take_logs()
    otlp_logs = OTLPLogExporter(endpoint=f"{gateway.url}/v1/logs")
    assert otlp_logs.export(records).name == "SUCCESS"
    otlp_logs.shutdown()
    otlp = OTLPSpanExporter(endpoint=f"{gateway.url}/v1/traces")
    assert otlp.export(capture.take()) is SpanExportResult.SUCCESS
    otlp.shutdown()
    (row,), _ = _rows(db_dsn, [trace_id])
    assert row["inputs"]["messages"][0]["content"] == "hello from a log"


def test_concurrent_requests_to_one_gateway(make_database: Callable[[], str], serve: Callable[..., Running]) -> None:
    """Several senders at once: one exporter serves them all from the gateway's thread pool."""
    spans, ids = _traces(Capture(), 12, "many")
    direct, received = _new_db(make_database), _new_db(make_database)
    exporter = PostgresSpanExporter(direct, spool_dir="off")
    exporter.export(spans)
    exporter.shutdown()
    gateway = serve(received, max_inflight=4)
    by_trace: dict[int, list[Any]] = {}
    for span in spans:
        by_trace.setdefault(span.context.trace_id, []).append(span)
    statuses: list[int] = []
    throttled: list[str] = []

    def send(batch: list[Any]) -> None:
        """As an OTLP sender does: on 429/503, wait and send the same body again."""
        body = encode_spans(batch).SerializeToString()
        for _ in range(200):
            status, headers, _ = _post(f"{gateway.url}/v1/traces", body, "application/x-protobuf")
            if status not in (429, 503):
                break
            throttled.append(headers["retry-after"])
            time.sleep(0.05)
        statuses.append(status)

    # each trace split over two requests, all sent at once
    batches = [part for group in by_trace.values() for part in (group[:2], group[2:])]
    threads = [threading.Thread(target=send, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses.count(200) == len(batches)
    assert _rows(received, ids) == _rows(direct, ids)
    assert gateway.gateway.stats().get("requests_429", 0) == len(throttled)  # each refusal counted


def test_the_command_refuses_other_addresses_without_a_token(db_dsn: str) -> None:
    import subprocess
    import sys

    code = "from otel_pg_exporter.commands.cli import gateway_main as m; raise SystemExit(m())"
    proc = subprocess.run(
        [sys.executable, "-c", code, "--dsn", db_dsn, "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "without --token" in proc.stderr


def test_stats_need_the_token_and_count_outcomes(db_dsn: str, serve: Callable[..., Running]) -> None:
    gateway = serve(db_dsn, token="t0ken-for-stats")
    body = encode_spans(_traces(Capture(), 1, "stats")[0]).SerializeToString()
    url = gateway.url
    assert _post(f"{url}/v1/traces", b"junk", "application/x-protobuf", Authorization="Bearer t0ken-for-stats")[0] == 400
    assert _post(f"{url}/v1/traces", body, "application/x-protobuf", Authorization="Bearer t0ken-for-stats")[0] == 200
    assert _get(f"{url}/stats")[0] == 401
    request = urllib.request.Request(f"{url}/stats", headers={"Authorization": "Bearer t0ken-for-stats"})
    with urllib.request.urlopen(request, timeout=10) as response:
        stats = json.loads(response.read())
    assert stats["requests"] == 2 and stats["requests_400"] == 1 and stats["requests_ok"] == 1
    assert stats["spans_accepted"] == 3 and stats["exporter"]["exported"] == 3
    assert "t0ken-for-stats" not in json.dumps(stats)
