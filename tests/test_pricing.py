"""Per-span cost from prices: exact against genai-prices, provided wins, unpriced, custom, cached."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price

from otel_pg_exporter import PostgresSpanExporter
from support import fetch_spans, fetch_trace

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
