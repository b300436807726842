"""Per-span cost: a cost the span reports wins; otherwise tokens × price from ``genai-prices``.

``genai-prices`` ships its price data (no network at run time) and versions prices in time, so a span
is priced at its own start day. Look-ups are cached per (provider, model, day): the package takes
~0.2 ms per uncached call. Users' own prices (fine-tuned, self-hosted, negotiated) override the
package's: a mapping, or a JSON file, of ``"provider/model"`` or ``"model"`` to USD per million
tokens ``{"input": .., "output": .., "cache_read": .., "cache_write": ..}``.

Every model-call span gets ``metadata.cost``: ``status`` (``provided`` / ``computed`` / ``unpriced``
/ ``free`` / ``no_usage``), the provided and computed values side by side when both exist, the exact
unrounded amount (the column keeps 6 decimals) and the price used. An unknown model is ``unpriced``,
never 0; a call that reported no token usage (a refused request, a 429) is ``no_usage``: no amount
is known, but nothing is wrong with the price list.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

MILLION = Decimal(1_000_000)
#: Our provider names (OTel values, normalised by ``conventions``) → genai-prices provider ids.
PRICE_PROVIDER_IDS: dict[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "aws.bedrock": "aws",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "mistral_ai": "mistral",
    "x_ai": "x-ai",
    "groq": "groq",
    "deepseek": "deepseek",
    "cohere": "cohere",
    "perplexity": "perplexity",
    "together_ai": "together",
    "fireworks": "fireworks",
    "openrouter": "openrouter",
    "moonshot_ai": "moonshotai",
}
_PRICE_KEYS = ("input", "output", "cache_read", "cache_write")


@dataclass(frozen=True)
class Price:
    """USD per million tokens; ``source`` says where it came from."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None
    cache_write: Decimal | None
    source: str
    model_id: str
    provider_id: str | None

    def cost(self, tokens: dict[str, int]) -> Decimal:
        """Bill cache reads/writes at their own prices; they are a subset of ``input`` (no double
        counting). Reasoning tokens are part of ``output`` and billed with it."""
        inp, out = tokens.get("input", 0), tokens.get("output", 0)
        read, write = tokens.get("cache_read", 0), tokens.get("cache_write", 0)
        read_price = self.cache_read if self.cache_read is not None else self.input
        write_price = self.cache_write if self.cache_write is not None else self.input
        uncached = max(0, inp - read - write)
        total = uncached * self.input + read * read_price + write * write_price + out * self.output
        return total / MILLION

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "model": self.model_id,
            "per_million": {
                k: str(v)
                for k, v in zip(
                    _PRICE_KEYS, (self.input, self.output, self.cache_read, self.cache_write), strict=True
                )
                if v is not None
            },
        }
        if self.provider_id:
            out["provider"] = self.provider_id
        return out


def load_custom_prices(source: str | Path | dict[str, Any] | None) -> dict[str, Price]:
    """Users' prices from a mapping or a JSON file; keys ``"provider/model"`` or ``"model"``."""
    if source is None or source == "":
        return {}
    if isinstance(source, dict):
        raw = source
    else:
        try:
            raw = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"custom prices {source}: {exc}") from None
    prices: dict[str, Price] = {}
    for key, spec in raw.items():
        if not isinstance(spec, dict) or "input" not in spec or "output" not in spec:
            raise ConfigurationError(
                f"custom price {key!r}: needs at least 'input' and 'output' (USD/M tokens)"
            )
        try:
            values = {k: Decimal(str(spec[k])) if spec.get(k) is not None else None for k in _PRICE_KEYS}
        except ArithmeticError:
            raise ConfigurationError(f"custom price {key!r}: prices must be numbers") from None
        provider, _, model = key.rpartition("/")
        prices[key.lower()] = Price(
            input=values["input"],
            output=values["output"],  # type: ignore[arg-type]
            cache_read=values["cache_read"],
            cache_write=values["cache_write"],
            source="custom",
            model_id=model,
            provider_id=provider or None,
        )
    return prices


#: Cached look-ups kept at most (a long-running process prices new days and minutes forever).
CACHE_MAX = 65_536


class Pricer:
    """Finds the price of a (provider, model) at a date; cached, thread-safe."""

    def __init__(self, custom: dict[str, Price] | None = None) -> None:
        self._custom = custom or {}
        self._cache: dict[tuple[str | None, str, str], Price | None] = {}
        self._time_of_day: set[tuple[str | None, str]] = set()  # models priced by time of day
        self._lock = threading.Lock()
        self.lookups = 0  # uncached look-ups made (for tests and stats)
        try:
            import genai_prices  # noqa: F401

            self._package: str | None = "genai-prices"
        except ImportError:  # pragma: no cover - a declared dependency
            self._package = None

    def price(self, provider: str | None, model: str, when: datetime | None) -> Price | None:
        at = when or datetime.now(timezone.utc)
        # prices change by day; a few models (peak / off-peak) also by time of day: those are
        # cached per minute, the rest per day
        by_minute = (provider, model) in self._time_of_day
        key = (provider, model, at.strftime("%Y-%m-%dT%H:%M" if by_minute else "%Y-%m-%d"))
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        found = self._lookup(provider, model, when)
        if not by_minute and (provider, model) in self._time_of_day:  # learnt by this look-up
            key = (provider, model, at.strftime("%Y-%m-%dT%H:%M"))
        with self._lock:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[key] = found
        return found

    def _lookup(self, provider: str | None, model: str, when: datetime | None) -> Price | None:
        lowered = model.lower()
        for custom_key in (f"{provider}/{lowered}" if provider else None, lowered):
            if custom_key and custom_key in self._custom:
                return self._custom[custom_key]
        if self._package is None:
            return None
        from genai_prices import Usage, calc_price
        from genai_prices.types import TimeOfDateConstraint

        self.lookups += 1
        provider_id = PRICE_PROVIDER_IDS.get(provider or "")
        at = when.replace(tzinfo=timezone.utc) if when is not None and when.tzinfo is None else when
        try:
            calc = calc_price(
                Usage(input_tokens=0, output_tokens=0),
                model,
                provider_id=provider_id,
                genai_request_timestamp=at,
            )
        except (LookupError, ValueError):
            return None
        mp = calc.model_price
        if any(isinstance(getattr(c, "constraint", None), TimeOfDateConstraint) for c in _price_list(calc)):
            self._time_of_day.add((provider, model))

        def per_m(name: str) -> Decimal | None:
            value = getattr(mp, name, None)
            return Decimal(str(value)) if isinstance(value, int | float | Decimal) else None

        input_price, output_price = per_m("input_mtok"), per_m("output_mtok")
        if input_price is None and output_price is None:
            return None  # tiered/conditional price: not representable here
        return Price(
            input=input_price or Decimal(0),
            output=output_price or Decimal(0),
            cache_read=per_m("cache_read_mtok"),
            cache_write=per_m("cache_write_mtok"),
            source=f"genai-prices {_package_version()}",
            model_id=calc.model.id,
            provider_id=calc.provider.id,
        )


def _price_list(calc: Any) -> list[Any]:
    prices = getattr(calc.model, "prices", None)
    return prices if isinstance(prices, list) else []


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("genai-prices")
    except Exception:  # pragma: no cover
        return "?"


def apply_cost(
    metadata: dict[str, Any],
    tokens: dict[str, int],
    provided: Any,
    provider: str | None,
    model: str | None,
    request_model: str | None,
    when: datetime | None,
    pricer: Pricer,
) -> Any:
    """The cost for the column (provided wins, else computed, else None) and ``metadata.cost``."""
    info = metadata.setdefault("cost", {})
    computed: Decimal | None = None
    price: Price | None = None
    for candidate in (model, request_model):
        if candidate and tokens:
            price = pricer.price(provider, candidate, when)
            if price is not None:
                computed = price.cost(tokens)
                break
    if price is not None:
        info["price"] = price.describe()
        info["computed"] = str(computed)
    if provided is not None:
        info["status"] = "provided"
        return provided
    if not tokens:  # a refused call, a 429, a stream cut short: nothing known to bill, price or not
        info["status"] = "no_usage"
        return None
    if computed is None:
        info["status"] = "unpriced"
        return None
    info["status"] = "free" if computed == 0 else "computed"
    return computed
