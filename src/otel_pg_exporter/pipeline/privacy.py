"""Secrets never reach the tables: default scrubbing, extra patterns, a content switch, a callback.

The scrubber runs on every stored text and on the JSON text of every JSON column (after encoding, so
one pass covers nested values). Each match is replaced by ``[REDACTED:<kind>]``. Patterns never
consume a quote or a backslash, so JSON text stays valid.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import orjson

from ..config.dsn import _passwords

#: Cheap substring checks: a pattern runs only on texts containing one of its triggers, so the
#: common case (no secret anywhere) costs a few ``in`` tests instead of a dozen regex scans.
TRIGGERS: dict[str, tuple[str, ...]] = {
    "private_key": ("PRIVATE KEY",),
    "anthropic_api_key": ("sk-ant-",),
    "openai_api_key": ("sk-",),
    "google_api_key": ("AIza",),
    "aws_access_key": ("AKIA", "ASIA"),
    "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),  # one regex in the first test
    "slack_token": ("xox",),
    "huggingface_token": ("hf_",),
    "groq_api_key": ("gsk_",),
    "bearer_token": ("earer", "EARER"),
    "authorization": ("uthorization", "UTHORIZATION"),
    "url_password": ("://",),
    "dsn_password": ("assword", "ASSWORD"),
}

#: (kind, pattern). Ordered: specific key formats before the generic forms.
DEFAULT_PATTERNS: tuple[tuple[str, str], ...] = (
    ("private_key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[^\"]*?-----END [A-Z ]*PRIVATE KEY-----"),
    ("anthropic_api_key", r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
    ("openai_api_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}"),
    ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("github_token", r"\bgh[pousr]_[A-Za-z0-9]{36,}"),
    ("slack_token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    ("huggingface_token", r"\bhf_[A-Za-z0-9]{30,}"),
    ("groq_api_key", r"\bgsk_[A-Za-z0-9]{20,}"),
    ("bearer_token", r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"),
    (
        "authorization",
        r"(?i)(?<=authorization)([\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED)(?:[A-Za-z]+ +)?[^\"'\s,{}\[\]\\]+",
    ),
    ("url_password", r"(?<=://)([^:/@\s\"'\\]+):[^@\s\"'\\]+(?=@)"),
    ("dsn_password", r"(?i)\bpassword\s*=\s*[^\s\"'\\;&]+"),
)


@dataclass(frozen=True)
class Scrubber:
    """Compiled patterns plus literal secrets (the exporter's own DSN password, …)."""

    patterns: tuple[tuple[str, re.Pattern[str], tuple[str, ...]], ...]
    literals: tuple[str, ...] = ()
    #: the first test: every trigger and literal, lower-cased, without those that contain another
    #: (substring tests on the lower-cased text are C-fast); None when some pattern must always run
    any_trigger: tuple[str, ...] | None = None
    #: triggers that share a prefix, as one regex (``gh[opsru]_``), tested after ``any_trigger``
    any_trigger_regex: re.Pattern[str] | None = None

    def __call__(self, text: str) -> str:
        if self.any_trigger is not None:
            lowered = text.lower()
            for needle in self.any_trigger:
                if needle in lowered:
                    break
            else:
                if self.any_trigger_regex is None or self.any_trigger_regex.search(lowered) is None:
                    return text
        for literal in self.literals:
            if literal in text:
                text = text.replace(literal, "[REDACTED:exporter_dsn]")
        for kind, pattern, triggers in self.patterns:
            if triggers and not any(t in text for t in triggers):
                continue
            text = pattern.sub(_MARKERS.get(kind) or _marker(kind), text)
        return text


def _marker(kind: str) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        if kind == "authorization":  # keep the "authorization: " prefix, drop the value
            return f"{match.group(1)}[REDACTED:{kind}]"
        if kind == "url_password":
            return f"{match.group(1)}:[REDACTED:{kind}]"
        return f"[REDACTED:{kind}]"

    return replace


_MARKERS = {kind: _marker(kind) for kind, _ in DEFAULT_PATTERNS}


def build_scrubber(
    extra_patterns: Iterable[str | tuple[str, str]] = (), own_dsn: str | None = None, defaults: bool = True
) -> Scrubber:
    """Default patterns (unless ``defaults`` is False), then ``extra_patterns`` (a regex, or
    ``(kind, regex)``), and the exporter's own DSN and its password as literals."""
    compiled: list[tuple[str, re.Pattern[str], tuple[str, ...]]] = []
    if defaults:
        compiled += [(kind, re.compile(p), TRIGGERS.get(kind, ())) for kind, p in DEFAULT_PATTERNS]
    for item in extra_patterns:
        kind, pattern = item if isinstance(item, tuple) else ("custom", item)
        compiled.append((kind, re.compile(pattern), ()))  # user patterns always run
    literals: list[str] = []
    if own_dsn:
        literals.append(own_dsn)
        literals += [pw for pw in _passwords(own_dsn) if len(pw) >= 4]
    literals = sorted(set(literals), key=len, reverse=True)
    any_trigger, regex = None, None
    if all(triggers for _, _, triggers in compiled):
        any_trigger, regex = _first_test({t for _, _, triggers in compiled for t in triggers} | set(literals))
    return Scrubber(tuple(compiled), tuple(literals), any_trigger, regex)


def _first_test(needles: set[str]) -> tuple[tuple[str, ...], re.Pattern[str] | None]:
    """The needles of the first test, for a lower-cased text: lower-cased, a needle dropped when it
    contains another one (the shorter one finds every text the longer one does), and needles of the
    form ``xy?_`` that share ``xy`` merged into one regex. Together they find a superset of the texts
    the original needles find, in fewer passes."""
    lowered = {n.lower() for n in needles if n}
    kept = {n for n in lowered if not any(o != n and o in n for o in lowered)}
    families: dict[str, list[str]] = {}
    for n in kept:
        if len(n) == 4 and n.endswith("_"):
            families.setdefault(n[:2], []).append(n[2])
    merged = {p: letters for p, letters in families.items() if len(letters) > 2}
    parts = [f"{re.escape(p)}[{re.escape(''.join(sorted(ls)))}]_" for p, ls in sorted(merged.items())]
    plain = sorted(n for n in kept if not (len(n) == 4 and n.endswith("_") and n[:2] in merged))
    return tuple(plain), (re.compile("|".join(parts)) if parts else None)


def scrub_json_text(scrub: Callable[[str], str], text: str) -> str:
    """Scrub JSON text; if a replacement ever broke the JSON, scrub value by value instead."""
    scrubbed = scrub(text)
    if scrubbed is text or scrubbed == text:
        return text
    try:
        orjson.loads(scrubbed)
        return scrubbed
    except ValueError:
        return orjson.dumps(_scrub_values(scrub, orjson.loads(text))).decode()


def _scrub_values(scrub: Callable[[str], str], value: object) -> object:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_values(scrub, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_values(scrub, v) for v in value]
    return value


def parse_patterns(value: str | Sequence[str] | None) -> list[str]:
    """Extra patterns from an option (list) or the env var (newline-separated)."""
    if not value:
        return []
    if isinstance(value, str):
        return [line for line in value.splitlines() if line.strip()]
    return list(value)
