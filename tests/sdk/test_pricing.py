"""Per-span cost from prices: exact against genai-prices, provided wins, unpriced, custom, cached."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import psycopg
import pytest
from genai_prices import Usage, calc_price

from otel_pg_exporter import PostgresSpanExporter, trace_uuid
from tests.helpers.support import fetch_spans, fetch_trace

MIXES = {
    "plain": {"input": 1000, "output": 200},
    "cached": {"input": 1000, "output": 200, "cache_read": 800},
    "reasoning": {"input": 1000, "output": 900, "reasoning": 700},
    "cache-write": {"input": 5000, "output": 100, "cache_read": 1000, "cache_write": 3000},
}
ATTR = {
    "input": "gen_ai.usage.input_tokens",
    "output": "gen_ai.usage.output_tokens",
    "cache_read": "gen_ai.usage.cache_read.input_tokens",
    "cache_write": "gen_ai.usage.cache_creation.input_tokens",
    "reasoning": "gen_ai.usage.reasoning.output_tokens",
}


def _chat(capture, model: str, provider: str, tokens: dict[str, int], **extra) -> int:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        **{ATTR[k]: v for k, v in tokens.items()},
        **extra,
    }
    with capture.tracer.start_as_current_span("chat", attributes=attrs) as span:
        pass
    return span.get_span_context().trace_id


@pytest.mark.parametrize("mix", list(MIXES))
@pytest.mark.parametrize(
    ("provider", "model", "price_provider"),
    [("openai", "gpt-4o-mini", "openai"), ("anthropic", "claude-3-5-sonnet-latest", "anthropic")],
)
def test_exact_cost_against_genai_prices(
    db_dsn, exporter, capture, mix, provider, model, price_provider
) -> None:
    tokens = MIXES[mix]
    tid = _chat(capture, model, provider, tokens)
    exporter.export(capture.take())
    row = fetch_spans(db_dsn, tid)["chat"]
    expected = calc_price(
        Usage(
            input_tokens=tokens["input"],
            output_tokens=tokens["output"],
            cache_read_tokens=tokens.get("cache_read"),
            cache_write_tokens=tokens.get("cache_write"),
        ),
        model,
        provider_id=price_provider,
    ).total_price
    info = row["metadata"]["cost"]
    assert info["status"] == "computed"
    assert Decimal(info["exact"]) == expected
    assert row["cost"] == expected.quantize(Decimal("0.000001"))
    assert info["price"]["source"].startswith("genai-prices")
    assert fetch_trace(db_dsn, tid)["total_cost"] == row["cost"]


def test_provided_cost_wins_and_both_are_kept(db_dsn, exporter, capture) -> None:
    tid = _chat(capture, "gpt-4o-mini", "openai", MIXES["plain"], **{"gen_ai.usage.cost": 0.5})
    exporter.export(capture.take())
    row = fetch_spans(db_dsn, tid)["chat"]
    info = row["metadata"]["cost"]
    assert row["cost"] == Decimal("0.5")
    assert info["status"] == "provided" and info["provided"] == 0.5
    assert Decimal(info["computed"]) == Decimal("0.00027")


def test_unknown_model_is_unpriced_not_free(db_dsn, exporter, capture) -> None:
    tid = _chat(capture, "my-private-model-v9", "openai", MIXES["plain"])
    exporter.export(capture.take())
    row = fetch_spans(db_dsn, tid)["chat"]
    assert row["metadata"]["cost"]["status"] == "unpriced"
    assert row["cost"] == 0 and "computed" not in row["metadata"]["cost"]


def test_custom_price_overrides_the_package(db_dsn, capture, tmp_path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps(
            {
                "openai/gpt-4o-mini": {"input": 1, "output": 2, "cache_read": 0.5},
                "my-private-model-v9": {"input": 10, "output": 20},
            }
        )
    )
    exporter = PostgresSpanExporter(db_dsn, prices=str(prices))
    try:
        a = _chat(capture, "gpt-4o-mini", "openai", MIXES["cached"])
        b = _chat(capture, "my-private-model-v9", "self-hosted", MIXES["plain"])
        exporter.export(capture.take())
    finally:
        exporter.shutdown()
    row_a = fetch_spans(db_dsn, a)["chat"]
    # (1000 - 800) * 1 + 800 * 0.5 + 200 * 2 = 1000 per million
    assert row_a["cost"] == Decimal("0.001")
    assert row_a["metadata"]["cost"]["price"]["source"] == "custom"
    assert fetch_spans(db_dsn, b)["chat"]["cost"] == Decimal("0.014")  # 1000*10 + 200*20 per million


def test_response_model_first_then_request_model(db_dsn, exporter, capture) -> None:
    tid = _chat(
        capture,
        "gpt-4o-mini",
        "openai",
        MIXES["plain"],
        **{"gen_ai.response.model": "gpt-4o-mini-2024-07-18"},
    )
    fallback = _chat(
        capture, "gpt-4o-mini", "openai", MIXES["plain"], **{"gen_ai.response.model": "internal-alias-7"}
    )
    exporter.export(capture.take())
    assert fetch_spans(db_dsn, tid)["chat"]["metadata"]["cost"]["status"] == "computed"
    row = fetch_spans(db_dsn, fallback)["chat"]
    assert row["model"] == "internal-alias-7" and row["metadata"]["cost"]["price"]["model"] == "gpt-4o-mini"


def test_price_lookups_are_cached(db_dsn, capture) -> None:
    exporter = PostgresSpanExporter(db_dsn)
    try:
        for _ in range(200):
            _chat(capture, "gpt-4o", "openai", MIXES["plain"])
        exporter.export(capture.take())
        assert exporter.pricer.lookups == 1
    finally:
        exporter.shutdown()


def _chat_at(capture, model: str, provider: str, tokens: dict[str, int], at: datetime) -> int:
    """A chat span that started at ``at`` (UTC)."""
    ns = int(at.timestamp() * 1e9)
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        **{ATTR[k]: v for k, v in tokens.items()},
    }
    span = capture.tracer.start_span("chat", start_time=ns, attributes=attrs)
    span.end(end_time=ns + 10**9)
    return span.get_span_context().trace_id


def _expected(model: str, provider_id: str, tokens: dict[str, int], at: datetime) -> Decimal:
    usage = Usage(
        input_tokens=tokens.get("input", 0),
        output_tokens=tokens.get("output", 0),
        cache_read_tokens=tokens.get("cache_read"),
        cache_write_tokens=tokens.get("cache_write"),
    )
    price = calc_price(usage, model, provider_id=provider_id, genai_request_timestamp=at).total_price
    return Decimal(str(price)).quantize(Decimal("0.000001"))


def test_a_call_without_usage_is_no_usage_not_unpriced(db_dsn, exporter, capture) -> None:
    """A refused or rate-limited call reports no tokens: nothing known to bill, and the price list is
    not to blame. The daily view and the report count it apart from unpriced models."""
    from otel_pg_exporter.query.report import build_report, render_text

    at = datetime(2026, 3, 3, 12, tzinfo=timezone.utc)
    refused = _chat_at(capture, "gpt-4o-mini", "openai", {}, at)
    unknown = _chat_at(capture, "my-private-model-v7", "openai", MIXES["plain"], at)
    assert exporter.export(capture.take()).name == "SUCCESS"
    assert fetch_spans(db_dsn, refused)["chat"]["metadata"]["cost"] == {"status": "no_usage"}
    assert fetch_spans(db_dsn, unknown)["chat"]["metadata"]["cost"]["status"] == "unpriced"
    with psycopg.connect(db_dsn) as conn:
        rows = conn.execute(
            "SELECT model, unpriced_calls, no_usage_calls FROM otel_daily_costs WHERE day = %s ORDER BY 1",
            (at.date(),),
        ).fetchall()
    assert rows == [("gpt-4o-mini", 0, 1), ("my-private-model-v7", 1, 0)]
    text = render_text(build_report(db_dsn, days=1, horizon=1, as_of=at.date()))
    unpriced, no_usage = text.split("unpriced models")[1].split("calls without token usage")
    assert "my-private-model-v7" in unpriced and "gpt-4o-mini" not in unpriced
    assert "gpt-4o-mini" in no_usage.split("budgets")[0]


def test_rows_stored_before_no_usage_existed_count_as_no_usage(db_dsn, exporter, capture) -> None:
    at = datetime(2026, 3, 4, 12, tzinfo=timezone.utc)
    tid = _chat_at(capture, "gpt-4o-mini", "openai", {}, at)
    assert exporter.export(capture.take()).name == "SUCCESS"
    legacy = {"status": "unpriced", "reason": "no token usage on the span"}  # what 0.1 stored
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE spans SET metadata = jsonb_set(metadata, '{cost}', %s) WHERE trace_id = %s",
            (psycopg.types.json.Jsonb(legacy), trace_uuid(tid)),
        )
        row = conn.execute(
            "SELECT unpriced_calls, no_usage_calls FROM otel_daily_costs WHERE day = %s", (at.date(),)
        ).fetchone()
    assert row == (0, 1)


def test_price_at_the_span_start_day_and_hour(db_dsn, exporter, capture) -> None:
    """deepseek-v4-flash changed its price on 2026-08-17 and 2026-09-10 and costs more at peak hours
    (genai-prices' data): every span is billed at the price of its own start, even when a cached
    look-up of the same model and day came first."""
    tokens = {"input": 1_000_000, "output": 100_000}
    starts = [
        datetime(2026, 8, 1, 12, tzinfo=timezone.utc),
        datetime(2026, 8, 20, 12, tzinfo=timezone.utc),
        datetime(2026, 9, 20, 12, tzinfo=timezone.utc),  # off-peak first: the day's price is cached
        datetime(2026, 9, 20, 2, 30, tzinfo=timezone.utc),  # peak hour of the same day
    ]
    ids = [_chat_at(capture, "deepseek-v4-flash", "deepseek", tokens, at) for at in starts]
    assert exporter.export(capture.take()).name == "SUCCESS"
    costs = [fetch_spans(db_dsn, tid)["chat"]["cost"] for tid in ids]
    assert costs == [_expected("deepseek-v4-flash", "deepseek", tokens, at) for at in starts]
    assert len(set(costs)) == 4, costs  # four different prices, not one cached for all


@pytest.mark.parametrize(
    ("provider", "model", "price_provider"),
    [
        ("azure.ai.openai", "gpt-4o-mini", "azure"),
        ("aws.bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", "aws"),
        ("gcp.gemini", "gemini-2.0-flash", "google"),
        ("gcp.vertex_ai", "gemini-2.0-flash", "google"),
    ],
)
def test_cloud_providers_are_priced_from_their_own_price_lists(
    db_dsn, exporter, capture, provider, model, price_provider
) -> None:
    at = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
    tid = _chat_at(capture, model, provider, MIXES["plain"], at)
    assert exporter.export(capture.take()).name == "SUCCESS"
    row = fetch_spans(db_dsn, tid)["chat"]
    assert row["metadata"]["cost"]["status"] == "computed"
    assert row["metadata"]["cost"]["price"]["provider"] == price_provider
    assert row["cost"] == _expected(model, price_provider, MIXES["plain"], at)


def test_exclusive_token_counts_are_made_inclusive_and_billed_once(db_dsn, exporter, capture) -> None:
    """A provider-style count (input excludes the cache: cache_read 800 > input 200) gets the cache
    added back, the original noted; tokens, cost and the trace total use the inclusive figure."""
    at = datetime(2026, 6, 2, 12, tzinfo=timezone.utc)
    tid = _chat_at(capture, "gpt-4o-mini", "openai", {"input": 200, "output": 50, "cache_read": 800}, at)
    assert exporter.export(capture.take()).name == "SUCCESS"
    row = fetch_spans(db_dsn, tid)["chat"]
    assert row["tokens"]["input"] == 1000 and row["tokens"]["cache_read"] == 800
    assert row["tokens"]["total"] == 1050
    assert row["metadata"]["token_notes"]
    inclusive = {"input": 1000, "output": 50, "cache_read": 800}
    assert row["cost"] == _expected("gpt-4o-mini", "openai", inclusive, at)
    trace = fetch_trace(db_dsn, tid)
    assert trace["total_tokens"]["input"] == 1000 and trace["total_cost"] == row["cost"]
