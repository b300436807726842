"""The soak: several gateway processes fed for minutes as a Collector fleet feeds them.

Three ``otel-pg-gateway`` processes, eight senders (half over OTLP/gRPC, half over OTLP/HTTP
protobuf), Collector-sized requests (8,192 spans: 4,096 two-span traces, each request's traces
routed to one gateway by trace id, as the ``loadbalancing`` exporter routes them). Measured: spans/s
stored, CPU per span of the gateways and of PostgreSQL, request latency (p50/p99), every span stored
exactly once (count and distinct ids against what was sent, trace totals summed), and each
gateway's resident memory sampled every second: first minute's peak against the last's.
Requests are built before the clock starts, so the senders' own encoding is not measured.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import urllib.request
from typing import Any

import psycopg
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from ..cpu import GatewayProcess, PostgresCpu, pid_seconds
from ..registry import Row, Run
from ..support import truncate

GATEWAYS = 3
SENDERS = 8
SPANS_PER_REQUEST = 8192


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _request(gateway: int, n: int, spans: int) -> tuple[bytes, int]:
    """One request of ``spans`` spans (two-span traces: a root, a model call with usage) whose trace
    ids all route to ``gateway``; returns the body and its input tokens (for the totals check)."""
    out: list[Span] = []
    tokens = 0
    now = time.time_ns()
    t = 0
    while len(out) < spans:
        trace_id = int.from_bytes(os.urandom(16), "big")
        if trace_id % GATEWAYS != gateway:
            continue
        tid = trace_id.to_bytes(16, "big")
        root, chat = os.urandom(8), os.urandom(8)
        usage = 100 + (t % 50)
        tokens += usage
        t += 1
        out.append(
            Span(
                trace_id=tid,
                span_id=root,
                name="soak run",
                start_time_unix_nano=now,
                end_time_unix_nano=now + 5_000_000,
                attributes=[_kv("gen_ai.workflow.name", "soak"), _kv("soak.request", n)],
            )
        )
        out.append(
            Span(
                trace_id=tid,
                span_id=chat,
                parent_span_id=root,
                name="chat gpt-4o-mini",
                start_time_unix_nano=now + 1_000_000,
                end_time_unix_nano=now + 4_000_000,
                kind=3,
                attributes=[
                    _kv("gen_ai.operation.name", "chat"),
                    _kv("gen_ai.provider.name", "openai"),
                    _kv("gen_ai.request.model", "gpt-4o-mini"),
                    _kv("gen_ai.usage.input_tokens", usage),
                    _kv("gen_ai.usage.output_tokens", 20),
                ],
            )
        )
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[_kv("service.name", "soak")]),
                scope_spans=[ScopeSpans(spans=out)],
            )
        ]
    )
    return request.SerializeToString(), tokens


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _send_http(port: int, body: bytes) -> bool:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/traces",
        data=body,
        method="POST",
        headers={"Content-Type": "application/x-protobuf"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return response.status == 200


def soak_phase(dsn: str, requests_per_sender: int, spans_per_request: int) -> dict[str, Any]:
    import grpc

    truncate(dsn)
    plan = [
        [_request(s % GATEWAYS, s * 1000 + r, spans_per_request) for r in range(requests_per_sender)]
        for s in range(SENDERS)
    ]
    fleet = [GatewayProcess(dsn, grpc_port=_free_port()) for _ in range(GATEWAYS)]
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    memory: dict[int, list[tuple[float, float]]] = {i: [] for i in range(GATEWAYS)}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for i, gateway in enumerate(fleet):
                memory[i].append((time.monotonic(), _rss_mib(gateway.proc.pid)))
            stop.wait(1.0)

    def sender(index: int) -> None:
        gateway = fleet[index % GATEWAYS]
        over_grpc = index % 2 == 0
        channel = grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") if over_grpc else None
        export = (
            channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            if channel is not None
            else None
        )
        for body, _ in plan[index]:
            for _attempt in range(20):  # a Collector's retries
                started = time.perf_counter()
                try:
                    ok = export(body, timeout=300) is not None if export else _send_http(gateway.port, body)
                except Exception as exc:  # retried, and noted
                    ok = False
                    with lock:
                        failures.append(type(exc).__name__)
                if ok:
                    with lock:
                        latencies.append(time.perf_counter() - started)
                    break
                time.sleep(1.0)
        if channel is not None:
            channel.close()

    pg = PostgresCpu(dsn)
    try:
        pg_before = pg.seconds()
        gw_before = [pid_seconds(g.proc.pid) for g in fleet]
        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        threads = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        stop.set()
        sampler.join()
        gw_cpu = sum(pid_seconds(g.proc.pid) - before for g, before in zip(fleet, gw_before, strict=True))
        pg_cpu = pg.seconds() - pg_before
    finally:
        for gateway in fleet:
            gateway.close()
    sent = SENDERS * requests_per_sender * spans_per_request
    with psycopg.connect(dsn) as conn:
        stored, distinct, input_tokens = conn.execute(
            "SELECT count(*), count(DISTINCT span_id), "
            "(SELECT coalesce(sum((total_tokens ->> 'input')::bigint), 0) FROM traces) FROM spans"
        ).fetchone()
    expected_tokens = sum(tokens for requests in plan for _, tokens in requests)
    ordered = sorted(latencies)
    growth = []
    for samples in memory.values():
        if len(samples) >= 4:
            head = [
                m for t, m in samples if t - samples[0][0] <= max(60.0, (samples[-1][0] - samples[0][0]) / 4)
            ]
            tail = [
                m for t, m in samples if samples[-1][0] - t <= max(60.0, (samples[-1][0] - samples[0][0]) / 4)
            ]
            growth.append((max(head), max(tail)))
    out: dict[str, Any] = {
        "gateways": GATEWAYS,
        "senders": SENDERS,
        "spans_per_request": spans_per_request,
        "sent": sent,
        "stored": stored,
        "distinct": distinct,
        "exactly_once": stored == distinct == sent and input_tokens == expected_tokens,
        "seconds": elapsed,
        "spans_per_s": stored / elapsed,
        "gateway_cpu_us_per_span": gw_cpu / max(1, stored) * 1e6,
        "p50_ms": statistics.median(ordered) * 1000 if ordered else float("nan"),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        if ordered
        else float("nan"),
        "retries": len(failures),
        "rss_mib": growth,
    }
    if pg.available:
        out["pg_cpu_us_per_span"] = pg_cpu / max(1, stored) * 1e6
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(run: Run) -> dict[str, Any]:
    requests, spans = run.size["soak"]
    return {"soak": soak_phase(run.dsn, requests, spans)}


def render_soak(r: dict[str, Any]) -> list[Row]:
    if "soak" not in r:
        return []
    s = r["soak"]
    rss = ", ".join(f"{a:.0f}→{b:.0f}" for a, b in s["rss_mib"]) or "n/a"
    return [
        (
            f"soak: {s['gateways']} gateways, {s['senders']} senders (gRPC + HTTP), "
            f"{s['spans_per_request']:,}-span requests, {s['seconds']:.0f} s",
            f"{s['spans_per_s']:,.0f} spans/s; {s['stored']:,}/{s['sent']:,} stored, "
            f"exactly once: {'yes' if s['exactly_once'] else 'NO'}; {s['retries']} retries",
            "",
        ),
        (
            "soak: request latency p50 / p99; CPU per span gateways / PostgreSQL",
            f"{s['p50_ms']:,.0f} / {s['p99_ms']:,.0f} ms; {s['gateway_cpu_us_per_span']:.0f} / "
            f"{s.get('pg_cpu_us_per_span', float('nan')):.0f} µs",
            "",
        ),
        ("soak: gateway RSS, first quarter's peak → last quarter's (MiB)", rss, ""),
    ]
