"""The pure stages after mapping, with no database: pricing, privacy, sanitizing and encoding, the
trace deltas of a batch, the spool's record format, and the failure table."""

from __future__ import annotations

import io
import json
from datetime import datetime
from decimal import Decimal

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

from otel_pg_exporter.delivery.spool_codec import decode_record, encode_batch, iter_records
from otel_pg_exporter.failures import SQLSTATE_FAILURES, Failure, classify, is_bad_row
from otel_pg_exporter.pipeline.encoding import encode_span
from otel_pg_exporter.pipeline.mapping import map_span
from otel_pg_exporter.pipeline.model import Limits
from otel_pg_exporter.pipeline.pricing import Pricer, apply_cost, load_custom_prices
from otel_pg_exporter.pipeline.privacy import build_scrubber
from otel_pg_exporter.pipeline.sanitize import clean_text, column_cost
from otel_pg_exporter.pipeline.trace_deltas import trace_deltas
from otel_pg_exporter.store.writer import _isolating
from tests.helpers.support import Capture, messages

SECRETS = {
    "openai_api_key": "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    "anthropic_api_key": "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx",
    "google_api_key": "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "aws_access_key": "AKIAIOSFODNN7EXAMPLE",
    "github_token": "ghp_abcdefghijklmnopqrstuvwxyz0123456789AB",
}


def _agent_run(capture: Capture) -> list:
    t = capture.tracer
    with t.start_as_current_span("run", attributes={"gen_ai.workflow.name": "wf", "user.id": "alice"}):
        with t.start_as_current_span(
            "chat",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.output_tokens": 100,
                "gen_ai.input.messages": messages(
                    ("user", "What is 2+2? key sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789")
                ),
            },
        ):
            pass
    return capture.take()


# -- pricing --------------------------------------------------------------------------------------


def test_custom_prices_bill_cache_reads_at_their_own_price() -> None:
    pricer = Pricer(load_custom_prices({"acme/m1": {"input": 2, "output": 8, "cache_read": 0.5}}))
    metadata: dict = {}
    tokens = {"input": 1_000_000, "cache_read": 400_000, "output": 10_000}
    cost = apply_cost(metadata, tokens, None, "acme", "m1", None, datetime(2026, 1, 1), pricer)
    # 600k uncached × 2 + 400k × 0.5 + 10k × 8, per million
    assert cost == Decimal("1.2") + Decimal("0.2") + Decimal("0.08")
    assert metadata["cost"]["status"] == "computed" and metadata["cost"]["price"]["source"] == "custom"


def test_a_provided_cost_wins_unknown_models_are_unpriced_and_no_usage_is_not_free() -> None:
    pricer = Pricer()
    meta: dict = {}
    assert apply_cost(meta, {"input": 5}, Decimal("0.1"), "openai", "gpt-4o", None, None, pricer) == Decimal(
        "0.1"
    )
    assert meta["cost"]["status"] == "provided" and "computed" in meta["cost"]
    meta = {}
    assert apply_cost(meta, {"input": 5}, None, "acme", "no-such-model-xyz", None, None, pricer) is None
    assert meta["cost"]["status"] == "unpriced"
    meta = {}
    assert apply_cost(meta, {}, None, "openai", "gpt-4o", None, None, pricer) is None
    assert meta["cost"]["status"] == "no_usage"


def test_a_mapped_model_call_is_priced_from_the_package() -> None:
    capture = Capture()
    record = map_span(next(s for s in _agent_run(capture) if s.name == "chat"))
    cost = apply_cost(
        record.metadata, record.tokens, None, record.provider, record.model, None, record.started_at, Pricer()
    )
    assert cost is not None and cost > 0 and record.metadata["cost"]["status"] == "computed"


# -- privacy, sanitizing, encoding ----------------------------------------------------------------


def test_scrubber_unit_cases() -> None:
    scrub = build_scrubber()
    for kind, secret in SECRETS.items():
        assert scrub(f"key={secret} end") == f"key=[REDACTED:{kind}] end"
    assert scrub("Authorization: Bearer abc.def.ghi123") == "Authorization: [REDACTED:bearer_token]"
    assert scrub('{"authorization":"Basic dXNlcjpwYXNz"}') == '{"authorization":"[REDACTED:authorization]"}'
    assert scrub("postgresql://app:hunter2@db:5432/x") == "postgresql://app:[REDACTED:url_password]@db:5432/x"
    assert scrub("host=db password=hunter2 user=app") == "host=db [REDACTED:dsn_password] user=app"
    pem = "-----BEGIN RSA PRIVATE KEY-----\\nMIIEow\\n-----END RSA PRIVATE KEY-----"
    assert scrub(json.dumps({"k": pem})) == json.dumps({"k": "[REDACTED:private_key]"})
    assert scrub("nothing to see here") == "nothing to see here"
    custom = build_scrubber([("ssn", r"\b\d{3}-\d{2}-\d{4}\b")])
    assert custom("ssn 123-45-6789") == "ssn [REDACTED:ssn]"


def test_encoding_scrubs_and_honours_the_content_switch() -> None:
    capture = Capture()
    chat = next(s for s in _agent_run(capture) if s.name == "chat")
    row = encode_span(map_span(chat), Limits(scrub=build_scrubber())).columns()
    assert "[REDACTED:openai_api_key]" in json.dumps(row["inputs"]) and "sk-proj" not in json.dumps(row)
    bare = encode_span(map_span(chat), Limits(capture_content=False)).columns()
    assert bare["inputs"] == {"_omitted": "content capture is off"} and bare["model"] == "gpt-4o"
    assert bare["tokens"] == {"input": 1000, "output": 100, "total": 1100}


def test_sanitizing_text_and_cost() -> None:
    text, note = clean_text("a\x00b", 10)
    assert text == "ab" and note is not None
    long_text, note = clean_text("x" * 300, 255)
    assert long_text is not None and len(long_text) == 255 and note is not None
    stored, _provided, note = column_cost(Decimal("12345.6789"))
    assert stored == Decimal("9999.999999") and note is not None  # DECIMAL(10, 6)


def test_trace_deltas_merge_a_batch_by_rank() -> None:
    capture = Capture()
    encoded = [encode_span(map_span(s), Limits()) for s in _agent_run(capture)]
    (delta,) = trace_deltas(encoded)
    assert delta.workflow[1] == "wf" and delta.user is not None and delta.user[1] == "alice"
    assert delta.query is not None and "2+2" in delta.query[2]


# -- the spool's record format ----------------------------------------------------------------------


def test_spool_records_round_trip_and_a_torn_record_is_skipped() -> None:
    capture = Capture()
    encoded = [encode_span(map_span(s), Limits()) for s in _agent_run(capture)]
    good = encode_batch(encoded, error="refused: 54000")
    stream = io.BytesIO(good + good[: len(good) // 2] + good)
    skipped: list[int] = []
    records = list(iter_records(stream, "segment", skipped=skipped.append))
    assert len(records) == 2 and skipped  # the torn one in the middle is reported, not replayed
    items, error = decode_record(records[0].payload)
    assert error == "refused: 54000"
    assert [i.span_id for i in items] == [e.span_id for e in encoded]
    assert [i.row for i in items] == [e.row for e in encoded]


# -- failures: one table, four answers, our bugs never taken for the database's refusal ---------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (pg_errors.AdminShutdown(), Failure.DOWN),
        (psycopg.OperationalError("connection refused"), Failure.DOWN),
        (PoolTimeout("no connection"), Failure.DOWN),
        (pg_errors.SerializationFailure(), Failure.RETRY),
        (pg_errors.DeadlockDetected(), Failure.RETRY),
        (pg_errors.OutOfMemory(), Failure.REFUSED),
        (pg_errors.QueryCanceled(), Failure.REFUSED),
        (pg_errors.UndefinedTable(), Failure.NOT_READY),
        (pg_errors.InsufficientPrivilege(), Failure.NOT_READY),
        (pg_errors.InvalidTextRepresentation(), Failure.BAD_ROW),
        (pg_errors.UniqueViolation(), Failure.BAD_ROW),
        (pg_errors.DuplicatePreparedStatement(), Failure.POOLER),
        (TypeError("ours"), Failure.BUG),
        (ValueError("ours"), Failure.BUG),
        (KeyError("ours"), Failure.BUG),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_failure_classes(exc: BaseException, expected: Failure) -> None:
    assert classify(exc) is expected


def test_the_table_lists_every_class_it_answers() -> None:
    assert set(SQLSTATE_FAILURES.values()) == set(Failure) - {Failure.BUG}


def test_a_bad_row_is_isolated_and_a_bug_of_ours_propagates() -> None:
    refused: list[tuple[int, str]] = []

    def write(items: list[int]) -> None:
        if 3 in items:
            raise pg_errors.InvalidTextRepresentation("bad value")

    assert _isolating([1, 2, 3, 4, 5], write, lambda item, why: refused.append((item, why))) == 4
    assert [item for item, _ in refused] == [3]

    def buggy(items: list[int]) -> None:
        raise TypeError("a bug of ours")

    with pytest.raises(TypeError):
        _isolating([1, 2], buggy, lambda item, why: refused.append((item, why)))
    assert not is_bad_row(TypeError()) and is_bad_row(UnicodeEncodeError("utf-8", "x", 0, 1, "surrogate"))
