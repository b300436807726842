"""Make values fit the seed columns, and say what was changed. Pure functions, no I/O.

PostgreSQL rejects NUL in TEXT and JSONB, lone UTF-16 surrogates, strings longer than a VARCHAR,
numbers outside DECIMAL(10,6) or INTEGER, and NaN/Infinity in JSON. Each helper returns the value to
store and, when it had to change something, a note that ends up in ``metadata.sanitized``.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from ..schema.tables import COST_MAX_TEXT

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
COST_MAX = Decimal(COST_MAX_TEXT)  # DECIMAL(10, 6)
COST_QUANTUM = Decimal("0.000001")
TRUNCATION_MARK = "…[truncated]"
_ESCAPED_NUL = re.compile(r"(\\+)u0000")
#: How much of an over-long original is kept in metadata.sanitized (the rest is only counted).
ORIGINAL_KEEP = 4096

Note = dict[str, Any]


def _drop_escaped_nul(match: re.Match[str]) -> str:
    slashes = match.group(1)
    # an odd run of backslashes means the last one starts a \u0000 escape: drop that escape
    return slashes[:-1] if len(slashes) % 2 else match.group(0)


def _valid_utf8(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def clean_text(value: Any, max_chars: int | None = None) -> tuple[str | None, Note | None]:
    """A string fit for a TEXT/VARCHAR column: no NUL, valid UTF-8, at most ``max_chars``."""
    if value is None:
        return None, None
    text = value if isinstance(value, str) else str(value)
    note: Note = {}
    if "\x00" in text:
        text = text.replace("\x00", "")
        note["removed"] = "NUL characters"
    fixed = _valid_utf8(text)
    if fixed is not text:
        text = fixed
        note["replaced"] = "invalid UTF-8 (lone surrogates)"
    if max_chars is not None and len(text) > max_chars:
        note["truncated_from_chars"] = len(text)
        note["original"] = text[:ORIGINAL_KEEP]
        keep = max(0, max_chars - len(TRUNCATION_MARK))
        text = text[:keep] + TRUNCATION_MARK if max_chars > len(TRUNCATION_MARK) else text[:max_chars]
    return text, (note or None)


def _finite(value: Any) -> Any:
    """Replace NaN/Infinity (invalid JSON) by None (null, as orjson writes them), recursively;
    tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def encode_json(value: Any, max_chars: int) -> tuple[str, Note | None]:
    """JSON text fit for a JSONB column, at most about ``max_chars`` characters. NaN and Infinity
    become null (JSON has no such numbers).

    Over the cap, the value is replaced by ``{"_truncated": true, "original_chars": n, "preview": ...}``
    so the column still holds valid JSON and says what happened.
    """
    note: Note = {}
    try:
        # orjson: several times faster than json; writes NaN/Infinity as null
        text = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # lone surrogates, integers beyond 64 bits: the slower, more lenient path
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
        except ValueError:  # NaN / Infinity somewhere
            text = json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"), default=str)
    if "u0000" in text:
        cleaned = _ESCAPED_NUL.sub(_drop_escaped_nul, text)
        if cleaned != text:
            text = cleaned
            note["removed"] = "NUL characters"
    fixed = _valid_utf8(text)
    if fixed is not text:
        text = fixed
        note["replaced"] = "invalid UTF-8 (lone surrogates)"
    if len(text) > max_chars:
        preview_len = max(0, min(max_chars - 120, ORIGINAL_KEEP * 4))
        note["truncated_from_chars"] = len(text)
        text = json.dumps(
            {"_truncated": True, "original_chars": len(text), "preview": text[:preview_len]},
            ensure_ascii=False,
            separators=(",", ":"),
        )
    return text, (note or None)


def clamp_int(value: Any, lo: int = INT_MIN, hi: int = INT_MAX) -> tuple[int | None, Note | None]:
    """An INTEGER column value; out-of-range values are clamped and the original noted."""
    if value is None:
        return None, None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None, {"original": str(value)[:200], "reason": "not an integer"}
    if number < lo or number > hi:
        return (lo if number < lo else hi), {"original": str(value), "reason": "out of range"}
    return number, None


def to_cost(value: Any) -> tuple[Decimal | None, Note | None]:
    """A DECIMAL(10,6) USD amount. NaN, infinite, negative or unparsable: None; too large: clamped."""
    if value is None or isinstance(value, bool):
        return None, None
    try:
        amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        return None, {"original": str(value)[:200], "reason": "not a number"}
    if not amount.is_finite():
        return None, {"original": str(value), "reason": "not finite"}
    if amount < 0:
        return None, {"original": str(value), "reason": "negative"}
    if amount > COST_MAX:
        return COST_MAX, {"original": str(value), "reason": "beyond DECIMAL(10,6)"}
    return amount, None


def quantize_cost(amount: Decimal) -> Decimal:
    """Round to the column's 6 decimals (the exact value stays in metadata)."""
    return amount.quantize(COST_QUANTUM)


def column_cost(value: Any) -> tuple[Decimal, Decimal | None, Note | None]:
    """``(value for the cost column, exact amount or None, note)``: invalid amounts store 0."""
    amount, note = to_cost(value)
    return (quantize_cost(amount) if amount is not None else Decimal(0)), amount, note
