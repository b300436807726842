"""Reading attributes: small typed readers, and ``KeyPlan``, what one *set* of attribute keys decides
(worked out once per key set and reused span after span). Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import conventions as cv
from .model import Attrs


def first_str(attrs: Attrs, names: Sequence[str]) -> tuple[str | None, str | None]:
    for name in names:
        value = attrs.get(name)
        if value is None:
            continue
        if type(value) is str:
            if value.strip():
                return value, name
        elif type(value) in (tuple, list) and value and type(value[0]) is str and value[0].strip():
            return value[0], name
    return None, None


def as_number(value: Any) -> float | int | None:
    kind = type(value)
    if kind is int or kind is float:
        return value
    if kind is str:
        try:
            return float(value) if any(c in value for c in ".eEn") else int(value)
        except ValueError:
            return None
    return None


def first_number(attrs: Attrs, names: Sequence[str]) -> tuple[float | int | None, str | None]:
    for name in names:
        value = attrs.get(name)
        if value is None:
            continue
        number = as_number(value)
        if number is not None:
            return number, name
    return None, None


def has_key(attrs: Attrs, key: str) -> bool:
    if key.endswith("."):
        return any(k.startswith(key) for k in attrs)
    return key in attrs


class KeyPlan:
    """What one *set of attribute keys* decides, worked out once and reused for every span with the
    same keys (an instrumentation emits the same keys span after span): each precedence list of
    ``conventions`` reduced to the names present, in order, and the keys of the prefix families.

    Lookups stay exact: a reduced list only drops names that are absent from the key set."""

    __slots__ = (
        "_only",
        "eval_scalar_keys",
        "flat",
        "genai_hint",
        "infra_hint",
        "keys",
        "rate_limit_keys",
        "tokens",
        "trace_metadata",
    )

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = frozenset(keys)
        self._only: dict[int, tuple[Any, ...]] = {}
        self.flat = tuple(k for k in keys if k.startswith(cv.FLAT_PREFIXES))
        self.rate_limit_keys = tuple(k for k in keys if k.startswith(cv.RATE_LIMIT_HEADER_PREFIXES))
        self.eval_scalar_keys = tuple(k for k in keys if k.startswith(cv.EVALUATION_SCALAR_PREFIXES))
        self.tokens = tuple(
            (key, present) for key, names in cv.TOKEN_ATTRS.items() if (present := self.only(names))
        )
        self.trace_metadata = tuple(
            (key, present) for key, names in cv.TRACE_METADATA_ATTRS if (present := self.only(names))
        )
        self.genai_hint = next((kind for key, kind in cv.GENAI_TYPE_HINTS if has_key(self.keys, key)), None)
        self.infra_hint = next((kind for key, kind in cv.INFRA_TYPE_HINTS if has_key(self.keys, key)), None)

    def only(self, names: Sequence[Any]) -> tuple[Any, ...]:
        """``names`` (a conventions list; items may be ``(name, extra)`` pairs) reduced to those
        present, in order. Memoized per list object: pass module-level constants."""
        hit = self._only.get(id(names))
        if hit is None:
            keys = self.keys
            hit = tuple(n for n in names if (n[0] if type(n) is tuple else n) in keys)
            self._only[id(names)] = hit
        return hit


_PLANS: dict[tuple[str, ...], KeyPlan] = {}
#: How many distinct key sets are remembered (a process sees a few dozen; the bound is for safety).
KEY_PLANS_MAX = 4096


def key_plan(attrs: Attrs) -> KeyPlan:
    """The ``KeyPlan`` of ``attrs``' key set (cached by the keys in their order)."""
    keys = tuple(attrs)
    plan = _PLANS.get(keys)
    if plan is None:
        if len(_PLANS) >= KEY_PLANS_MAX:
            _PLANS.clear()
        plan = _PLANS[keys] = KeyPlan(keys)
    return plan
