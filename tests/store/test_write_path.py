"""The one-statement write path: new traces get their totals from the batch, traces stored before
are recomputed from their spans; both must give the same rows. And spools written by the previous
format still replay."""

from __future__ import annotations

import json
import random
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import psycopg
from opentelemetry.trace import Status, StatusCode
from psycopg.rows import dict_row

from otel_pg_exporter import PostgresSpanExporter, install_schema, trace_uuid
from otel_pg_exporter.delivery.spool import SUFFIX, destination_key
from otel_pg_exporter.delivery.spool_codec import HEADER, MAGIC, _span_to_json
from otel_pg_exporter.schema.tables import SEED_COLUMNS
from tests.helpers.support import Capture, chat_attributes, messages

TRACE_COLUMNS = tuple(c for c in SEED_COLUMNS["traces"] if c != "trace_id")


def _make_traces(capture: Capture, run: str) -> list[int]:
    """Traces with what the totals rule distinguishes: nested model calls under an agent (roll-ups
    never count), an embedding, a provided cost, cached tokens, a failed root, a running trace (no
    root in the batch), a user, a session, an explicit execution id."""
    tracer = capture.tracer
    ids = []
    with tracer.start_as_current_span(
        "support", attributes={"gen_ai.workflow.name": f"wf-{run}", "user.id": "u-1", "session.id": "s-1"}
    ) as root:
        ids.append(root.get_span_context().trace_id)
        with tracer.start_as_current_span("agent", attributes={"gen_ai.operation.name": "invoke_agent"}):
            with tracer.start_as_current_span(
                "chat 1",
                attributes=chat_attributes(
                    120,
                    40,
                    **{
                        "gen_ai.usage.cache_read.input_tokens": 64,
                        "gen_ai.input.messages": messages(("user", "what is the weather in Paris?")),
                    },
                ),
            ):
                pass
            with tracer.start_as_current_span(
                "chat 2", attributes=chat_attributes(10, 5, **{"gen_ai.usage.cost": 0.0125})
            ):
                pass
        with tracer.start_as_current_span(
            "embed",
            attributes={
                "gen_ai.operation.name": "embeddings",
                "gen_ai.request.model": "text-embedding-3-small",
                "gen_ai.provider.name": "openai",
                "gen_ai.usage.input_tokens": 7,
            },
        ):
            pass
    with tracer.start_as_current_span(
        "failing", attributes={"otel_pg.execution_id": f"exec-{run}"}
    ) as root:
        ids.append(root.get_span_context().trace_id)
        with tracer.start_as_current_span("chat 3", attributes=chat_attributes(3, 1)):
            pass
        root.set_status(Status(StatusCode.ERROR, "tool broke"))
    return ids


def _rows(dsn: str, trace_ids: list[int]) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        rows = [
            conn.execute(
                f"SELECT {', '.join(TRACE_COLUMNS)} FROM traces WHERE trace_id = %s", (trace_uuid(t),)
            ).fetchone()
            for t in trace_ids
        ]
    assert all(r is not None for r in rows)
    return rows  # type: ignore[return-value]


def _export(dsn: str, batches: list[list[Any]]) -> None:
    exporter = PostgresSpanExporter(dsn, spool_dir="off")
    try:
        for batch in batches:
            assert exporter.export(batch).name == "SUCCESS"
    finally:
        exporter.shutdown()


def test_new_traces_from_the_batch_equal_traces_recomputed_from_stored_spans(
    make_database: Callable[[], str],
) -> None:
    run = uuid.uuid4().hex[:8]
    capture = Capture()
    trace_ids = _make_traces(capture, run)
    spans = capture.take()
    one_batch, one_by_one = make_database(), make_database()
    install_schema(one_batch)
    install_schema(one_by_one)
    _export(one_batch, [spans])  # every trace new: totals from the batch
    shuffled = list(spans)
    random.Random(7).shuffle(shuffled)
    _export(one_by_one, [[s] for s in shuffled])  # every span after the first: recomputed
    batch_rows, recomputed_rows = _rows(one_batch, trace_ids), _rows(one_by_one, trace_ids)
    assert batch_rows == recomputed_rows
    support, failing = batch_rows
    # and the figures are the rule's: leaf model calls only (the agent's roll-up never counts)
    assert support["total_tokens"]["input"] == 120 + 10 + 7
    assert support["total_tokens"]["cache_read"] == 64
    assert support["metadata"]["model_calls"] == 3
    assert support["query"] == "what is the weather in Paris?"
    assert support["workflow_id"] == f"wf-{run}"
    assert support["metadata"]["session_id"] == "s-1"
    assert failing["status"] == "failed" and failing["error"] == "tool broke"
    assert failing["execution_id"] == f"exec-{run}"


def test_a_trace_without_its_root_is_running_then_completes(db_dsn: str) -> None:
    capture = Capture()
    with capture.tracer.start_as_current_span("root") as root:
        trace_id = root.get_span_context().trace_id
        with capture.tracer.start_as_current_span("chat", attributes=chat_attributes(5, 2)):
            pass
    chat, root_span = capture.take()
    _export(db_dsn, [[chat]])
    (row,) = _rows(db_dsn, [trace_id])
    assert row["status"] == "running" and row["total_tokens"]["input"] == 5
    _export(db_dsn, [[root_span]])
    (row,) = _rows(db_dsn, [trace_id])
    assert row["status"] == "completed" and row["total_tokens"]["input"] == 5
    assert row["metadata"]["model_calls"] == 1


def _format_1_record(exporter: PostgresSpanExporter, spans: list[Any]) -> bytes:
    """A spool record as the previous release wrote it: one field per column, JSON columns as text."""
    items = []
    for encoded in exporter.encode(spans):
        columns = encoded.columns()
        item = {
            **{c: (json.dumps(v) if isinstance(v, (dict, list)) else v) for c, v in columns.items()},
            "hints": _span_to_json(encoded)["hints"],  # unchanged between the formats
            "parent_hex": encoded.parent_hex,
            "api_limits_obj": encoded.api_limits_obj,
            "sanitized": encoded.sanitized,
        }
        items.append(item)
    payload = zlib.compress(json.dumps({"v": 1, "spans": items}).encode(), 1)
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload), len(items)) + payload


def test_a_spool_written_in_format_1_still_replays(db_dsn: str, tmp_path: Any) -> None:
    capture = Capture()
    with capture.tracer.start_as_current_span("old spool") as root:
        trace_id = root.get_span_context().trace_id
        with capture.tracer.start_as_current_span("chat", attributes=chat_attributes(11, 3)):
            pass
    spans = capture.take()
    encoder = PostgresSpanExporter(db_dsn, spool_dir="off")
    record = _format_1_record(encoder, spans)
    encoder.shutdown()
    directory = tmp_path / destination_key(db_dsn)
    directory.mkdir(parents=True)
    (directory / f"{time.time_ns():020d}-1-abcdef{SUFFIX}").write_bytes(record)
    exporter = PostgresSpanExporter(db_dsn, spool_dir=str(tmp_path))  # finds the segment and replays it
    try:
        deadline = time.monotonic() + 30
        while exporter.stats().get("replayed", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert exporter.stats().get("replayed", 0) == 2
    finally:
        exporter.shutdown()
    (row,) = _rows(db_dsn, [trace_id])
    assert row["status"] == "completed" and row["total_tokens"]["input"] == 11


def test_spans_sharing_a_key_set_keep_their_own_values(db_dsn: str) -> None:
    """The attribute-to-column plan is cached per key set; values are never part of it."""
    from otel_pg_exporter.pipeline.mapping import map_span

    capture = Capture()
    for model, tokens, user in (("gpt-4o-mini", 11, "u-a"), ("gpt-4o", 22, "u-b")):
        with capture.tracer.start_as_current_span(
            "chat", attributes={**chat_attributes(tokens, 1, **{"gen_ai.request.model": model}), "user.id": user}
        ):
            pass
    # same keys in another order: another plan, the same reading
    with capture.tracer.start_as_current_span(
        "chat", attributes={"user.id": "u-c", **dict(reversed(list(chat_attributes(33, 1).items())))}
    ):
        pass
    first, second, third = (map_span(s) for s in capture.take())
    assert (first.model, first.tokens["input"], first.hints.user[1]) == ("gpt-4o-mini", 11, "u-a")
    assert (second.model, second.tokens["input"], second.hints.user[1]) == ("gpt-4o", 22, "u-b")
    assert (third.model, third.tokens["input"], third.hints.user[1]) == ("gpt-4o-mini", 33, "u-c")
    assert first.provider == second.provider == third.provider == "openai"


def test_what_a_column_or_the_trace_holds_is_not_repeated_per_span(db_dsn: str) -> None:
    """Smaller rows (fewer GIN entries): attributes read into model/provider/tokens/cost columns stay
    out of ``metadata.attributes``; a span keeps only its service's name, namespace and version, and
    the whole resource is stored once per trace and service in ``traces.metadata.resources``."""
    web = Capture("web-svc", **{"host.name": "web-1", "deployment.environment": "prod"})
    worker = Capture("worker-svc", **{"host.name": "worker-7"})
    with web.tracer.start_as_current_span("request") as root:
        trace_id = root.get_span_context().trace_id
        with web.tracer.start_as_current_span(
            "chat",
            attributes=chat_attributes(
                12, 4, **{"gen_ai.response.model": "gpt-4o-mini-2024-07-18", "server.address": "api.openai.com"}
            ),
        ):
            pass
        with worker.tracer.start_as_current_span("job", attributes={"gen_ai.usage.cost": 0.5}):
            pass  # a span of another service in the same trace (the context is the web span's)
    _export(db_dsn, [web.take()[:1]])  # chat alone first: the trace exists before the rest arrive
    _export(db_dsn, [worker.take() + web.take()])
    with psycopg.connect(db_dsn, row_factory=dict_row) as conn:
        rows = {
            r["name"]: r
            for r in conn.execute(
                "SELECT name, model, provider, tokens, metadata FROM spans WHERE trace_id = %s",
                (trace_uuid(trace_id),),
            ).fetchall()
        }
        trace_meta = conn.execute(
            "SELECT metadata FROM traces WHERE trace_id = %s", (trace_uuid(trace_id),)
        ).fetchone()["metadata"]
    chat = rows["chat"]
    assert chat["model"] == "gpt-4o-mini-2024-07-18" and chat["provider"] == "openai"
    assert chat["tokens"]["input"] == 12
    attributes = chat["metadata"]["attributes"]
    assert attributes == {"gen_ai.operation.name": "chat", "server.address": "api.openai.com"}
    assert chat["metadata"]["provider_source"] == "gen_ai.provider.name"
    assert chat["metadata"]["request_model"] == "gpt-4o-mini"
    assert chat["metadata"]["resource"] == {"service.name": "web-svc"}
    assert rows["job"]["metadata"]["resource"] == {"service.name": "worker-svc"}
    assert "gen_ai.usage.cost" not in rows["job"]["metadata"].get("attributes", {})
    assert rows["job"]["metadata"]["cost"]["source"] == "gen_ai.usage.cost"
    resources = trace_meta["resources"]
    assert resources["web-svc"]["host.name"] == "web-1"
    assert resources["web-svc"]["deployment.environment"] == "prod"
    assert resources["worker-svc"]["host.name"] == "worker-7"  # added by the second batch
    assert trace_meta["environment"] == "prod"


def test_a_cost_breakdown_stays_in_the_attributes(db_dsn: str) -> None:
    """Only scalars a column holds as they were leave ``metadata.attributes``: a Langfuse cost
    breakdown (input/output parts) is not in any column, so it stays."""
    from otel_pg_exporter.pipeline.mapping import map_span

    capture = Capture()
    details = json.dumps({"input": 0.001, "output": 0.002, "total": 0.003})
    with capture.tracer.start_as_current_span(
        "chat", attributes={**chat_attributes(10, 2), "langfuse.observation.cost_details": details}
    ):
        pass
    (record,) = (map_span(s) for s in capture.take())
    assert record.cost == 0.003 and record.metadata["cost"]["source"] == "langfuse.observation.cost_details"
    assert record.metadata["attributes"]["langfuse.observation.cost_details"] == details
