"""The gateway: the workload over OTLP/HTTP through otel-pg-gateway, and Collector-sized bursts (with /healthz while huge bodies are written)."""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from ..cpu import GatewayProcess, PostgresCpu, process_seconds
from ..registry import Row, Run
from ..support import BATCH, count_spans, truncate
from ..workload import SPANS_PER_TRACE, make_trace


def gateway_phase(dsn: str, traces: int, payload: int, conventions: Sequence[str]) -> dict[str, Any]:
    """The same workload sent over OTLP/HTTP by the official protobuf exporter to ``otel-pg-gateway``
    in another process: first span created → last row committed (the gateway answers after the
    commit, so a flushed sender means stored rows), with the CPU of the sender, the gateway and
    PostgreSQL per span."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    truncate(dsn)
    gateway = GatewayProcess(dsn)
    try:
        provider = TracerProvider()
        provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=gateway.endpoint, timeout=60),
                max_queue_size=max(BATCH, traces * SPANS_PER_TRACE + 1),
                schedule_delay_millis=1000,
                max_export_batch_size=BATCH,
            )
        )
        tracer = provider.get_tracer("bench")
        pg = PostgresCpu(dsn)
        pg_before, gw_before, app_before = pg.seconds(), gateway.cpu_seconds(), process_seconds()
        started = time.perf_counter()
        for i in range(traces):
            make_trace(tracer, i, payload, conventions)
        provider.force_flush(timeout_millis=3_600_000)
        elapsed = time.perf_counter() - started
        app_cpu, gw_cpu = process_seconds() - app_before, gateway.cpu_seconds() - gw_before
        pg_cpu = pg.seconds() - pg_before
        provider.shutdown()
    finally:
        gateway.close()
    spans = traces * SPANS_PER_TRACE
    stored = count_spans(dsn)
    out: dict[str, Any] = {
        "spans": spans,
        "stored": stored,
        "seconds": elapsed,
        "spans_per_s": spans / elapsed,
        "sender_cpu_us_per_span": app_cpu / spans * 1e6,
        "gateway_cpu_us_per_span": gw_cpu / max(1, stored) * 1e6,
    }
    if pg.available:
        out["pg_cpu_us_per_span"] = pg_cpu / max(1, stored) * 1e6
    return out


def _one_span_traces(n: int, run: int) -> list[Any]:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench-burst")
    for i in range(n):
        with tracer.start_as_current_span("request", attributes={"burst.run": run, "i": i}):
            pass
    return list(memory.get_finished_spans())


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, float]:
    import urllib.error
    import urllib.request

    started = time.perf_counter()
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:  # answered (429) and closed before the whole body was sent
        status = -1
    return status, time.perf_counter() - started


def burst_phase(dsn: str, per_request: int, requests: int, big: int, big_mib: int) -> dict[str, Any]:
    """Collector-sized requests to ``otel-pg-gateway`` in another process: ``requests`` gzip'd
    OTLP/protobuf requests of ``per_request`` spans from as many traces (a Collector's ``batch``
    processor sends that much: its ``send_batch_max_size`` is unlimited by default), each stored in
    full (counted); then ``/healthz`` and a small request timed while ``big`` OTLP/JSON bodies of
    ``big_mib`` MiB each are being decoded and written."""
    import gzip
    import threading
    import urllib.request

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    truncate(dsn)
    bodies = [
        gzip.compress(encode_spans(_one_span_traces(per_request, r)).SerializeToString())
        for r in range(requests)
    ]
    gateway = GatewayProcess(dsn)
    base = gateway.endpoint.rsplit("/v1/", 1)[0]
    out: dict[str, Any] = {"spans_per_request": per_request, "requests": requests}
    try:
        seconds, statuses = [], []
        for body in bodies:
            status, took = _post(
                gateway.endpoint, body, {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
            )
            statuses.append(status)
            seconds.append(took)
        out.update(statuses=statuses, seconds=seconds, stored=count_spans(dsn))
        out["spans_per_s"] = per_request * requests / sum(seconds)
        # big bodies in flight: is the event loop still free?
        attribute = "x" * 4096
        n_spans = max(1, big_mib * 1024 * 1024 // 4400)
        big_doc = {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": uuid.uuid4().hex,
                                    "spanId": os.urandom(8).hex(),
                                    "name": "big",
                                    "startTimeUnixNano": "1",
                                    "endTimeUnixNano": "2",
                                    "attributes": [
                                        {"key": "input.value", "value": {"stringValue": attribute}}
                                    ],
                                }
                                for _ in range(n_spans)
                            ]
                        }
                    ]
                }
            ]
        }
        big_body = json.dumps(big_doc).encode()
        health: list[float] = []
        small: list[tuple[int, float]] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                with urllib.request.urlopen(f"{base}/healthz", timeout=60) as response:
                    response.read()
                health.append(time.perf_counter() - started)
                time.sleep(0.02)

        big_statuses: list[int] = []

        def upload() -> None:
            big_statuses.append(_post(gateway.endpoint, big_body, {"Content-Type": "application/json"})[0])

        uploads = [threading.Thread(target=upload) for _ in range(big)]
        poller = threading.Thread(target=poll)
        poller.start()
        for t in uploads:
            t.start()
        time.sleep(0.2)
        small_body = encode_spans(_one_span_traces(3, requests + 1)).SerializeToString()
        while any(t.is_alive() for t in uploads):
            small.append(_post(gateway.endpoint, small_body, {"Content-Type": "application/x-protobuf"}))
            time.sleep(0.1)
        for t in uploads:
            t.join()
        stop.set()
        poller.join()
        out["big_bodies"] = {
            "bodies": big,
            "mib_each": round(len(big_body) / 1024 / 1024, 1),
            "statuses": sorted(big_statuses),
            "healthz_ms_p50": statistics.median(health) * 1000 if health else None,
            "healthz_ms_max": max(health) * 1000 if health else None,
            "small_requests": len(small),
            "small_ok": sum(1 for status, _ in small if status == 200),
            "small_ms_max": max(took for _, took in small) * 1000 if small else None,
        }
    finally:
        gateway.close()
    return out


def render_gateway(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "gateway" not in r:
        return rows
    g = r["gateway"]
    rows += [
        (
            "end to end over OTLP/HTTP: official exporter -> otel-pg-gateway",
            f"{g['spans_per_s']:,.0f} spans/s ({g['stored']}/{g['spans']} rows)",
            "",
        ),
        (
            "CPU per span: sender / gateway / PostgreSQL",
            f"{g['sender_cpu_us_per_span']:.0f} / {g['gateway_cpu_us_per_span']:.0f} / "
            f"{g.get('pg_cpu_us_per_span', float('nan')):.0f} µs",
            "",
        ),
    ]
    return rows


def render_burst(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "burst" not in r:
        return rows
    b = r["burst"]
    total = b["spans_per_request"] * b["requests"]
    rows.append(
        (
            f"Collector burst: {b['requests']} gzip requests of {b['spans_per_request']:,} spans from as many traces",
            f"{b['stored']:,}/{total:,} stored, {' / '.join(f'{x:.1f}' for x in b['seconds'])} s per request "
            f"({b['spans_per_s']:,.0f} spans/s), answers {sorted(set(b['statuses']))}",
            "",
        )
    )
    big = b.get("big_bodies")
    if big:
        rows.append(
            (
                f"/healthz while {big['bodies']} OTLP/JSON bodies of {big['mib_each']} MiB are written",
                f"p50 {big['healthz_ms_p50']:.0f} ms, max {big['healthz_ms_max']:.0f} ms; small request "
                f"{big['small_ok']}/{big['small_requests']} ok, max {big['small_ms_max']:.0f} ms; "
                f"big answers {big['statuses']}",
                "",
            )
        )
    return rows


def run_gateway(run: Run) -> dict[str, Any]:
    return {"gateway": gateway_phase(run.dsn, run.size["e2e_traces"], run.payload, run.conventions)}


def run_burst(run: Run) -> dict[str, Any]:
    return {"burst": burst_phase(run.dsn, *run.size["burst"])}
