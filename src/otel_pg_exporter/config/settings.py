"""Exporter settings, resolved once: explicit arguments, then environment variables, then defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError
from .dsn import resolve_dsn

ENV_PREFIX = "OTEL_EXPORTER_POSTGRES_"
SPOOL_OFF = frozenset({"off", "none", "false", "0", "disabled"})


@dataclass(frozen=True)
class ExporterSettings:
    """Everything ``PostgresSpanExporter`` needs; see the README table for the env var of each."""

    dsn: str
    dsn_source: str
    timeout_s: float = 10.0
    max_payload_chars: int = 262_144
    prepared_statements: bool = True
    pool_min_size: int = 1
    pool_max_size: int = 4
    application_name: str = "otel-pg-exporter"
    #: None: the default location (see ``spool.default_spool_root``); "off": no spool.
    spool_dir: str | None = None
    spool_max_bytes: int = 256 * 1024 * 1024
    shutdown_timeout_s: float = 5.0
    #: custom prices: a JSON file path (env) or a mapping (argument); see ``pricing``
    prices: Any = None
    #: False: store no message content (inputs, outputs, traces.query), keep tokens, cost, errors
    capture_content: bool = True
    #: default secret scrubbing (API keys, bearer tokens, passwords, private keys); see ``privacy``
    scrub_secrets: bool = True
    #: extra regexes to redact (list, or newline-separated in the env var)
    redact_patterns: Any = None
    #: a callable ``redact(span_record) -> span_record`` for custom PII rules (argument only)
    redact: Any = None
    #: the schema holding the tables (None: the server's search_path); only ever used quoted
    schema: str | None = None
    #: honour profiles.settings.observability (see ``user_settings``), cached this many seconds
    user_settings: bool = True
    user_settings_ttl_s: float = 60.0
    #: forward users' spans to their LangSmith / Langfuse (extra ``forward``); see ``forward``
    forward: bool = False
    #: live spans: a span still open after ``live_delay_s`` gets a ``running`` row (``live``)
    live: bool = False
    live_delay_s: float = 2.0
    #: at most this many traces (advisory locks) per write transaction; larger batches are chunked
    max_traces_per_transaction: int = 500

    @property
    def spool_enabled(self) -> bool:
        return (self.spool_dir or "").strip().lower() not in SPOOL_OFF

    def __repr__(self) -> str:  # never show the DSN (it may hold a password)
        return (
            f"ExporterSettings(dsn_source={self.dsn_source!r}, timeout_s={self.timeout_s}, "
            f"max_payload_chars={self.max_payload_chars}, prepared_statements={self.prepared_statements}, "
            f"pool={self.pool_min_size}..{self.pool_max_size}, spool_dir={self.spool_dir!r}, "
            f"spool_max_bytes={self.spool_max_bytes})"
        )


_BOOL = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def _env(name: str) -> str | None:
    value = os.environ.get(ENV_PREFIX + name)
    return value.strip() if value and value.strip() else None


def _convert(name: str, raw: Any, kind: type) -> Any:
    if kind is object or (kind is str and isinstance(raw, dict | list | tuple)):  # passed through as given
        return raw
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            return _BOOL[str(raw).strip().lower()]
        value = kind(raw)
    except (KeyError, ValueError, TypeError):
        raise ConfigurationError(f"{name}: cannot use {raw!r} as {kind.__name__}") from None
    if kind in (int, float) and value <= 0:
        raise ConfigurationError(f"{name}: must be positive, got {raw!r}")
    return value


_OPTIONS: dict[str, tuple[str, type]] = {
    # option name: (env var suffix, type)
    "timeout_s": ("TIMEOUT", float),
    "max_payload_chars": ("MAX_PAYLOAD_CHARS", int),
    "prepared_statements": ("PREPARED_STATEMENTS", bool),
    "pool_min_size": ("POOL_MIN_SIZE", int),
    "pool_max_size": ("POOL_MAX_SIZE", int),
    "application_name": ("APPLICATION_NAME", str),
    "spool_dir": ("SPOOL_DIR", str),
    "spool_max_bytes": ("SPOOL_MAX_BYTES", int),
    "shutdown_timeout_s": ("SHUTDOWN_TIMEOUT", float),
    "prices": ("PRICES", str),
    "capture_content": ("CAPTURE_CONTENT", bool),
    "scrub_secrets": ("SCRUB_SECRETS", bool),
    "redact_patterns": ("REDACT_PATTERNS", str),
    "redact": ("", object),
    "schema": ("SCHEMA", str),
    "user_settings": ("USER_SETTINGS", bool),
    "user_settings_ttl_s": ("USER_SETTINGS_TTL", float),
    "forward": ("FORWARD", bool),
    "live": ("LIVE", bool),
    "live_delay_s": ("LIVE_DELAY", float),
    "max_traces_per_transaction": ("MAX_TRACES_PER_TRANSACTION", int),
}


def resolve_settings(dsn: str | None = None, **options: Any) -> ExporterSettings:
    """Build settings from arguments, then ``OTEL_EXPORTER_POSTGRES_*`` variables, then defaults."""
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise ConfigurationError(f"unknown option(s): {', '.join(sorted(unknown))}")
    resolved_dsn, source = resolve_dsn(dsn)
    values: dict[str, Any] = {}
    for option, (suffix, kind) in _OPTIONS.items():
        raw = options.get(option)
        if raw is None and suffix:
            raw = _env(suffix)
            name = ENV_PREFIX + suffix
        else:
            name = option
        if raw is not None:
            values[option] = _convert(name, raw, kind)
    if "schema" in values:
        from ..connection import schema_name  # checked like the CLIs check it

        values["schema"] = schema_name(values["schema"])
    settings = ExporterSettings(dsn=resolved_dsn, dsn_source=source, **values)
    if settings.pool_min_size > settings.pool_max_size:
        raise ConfigurationError("pool_min_size must not exceed pool_max_size")
    if settings.forward and not settings.user_settings:
        raise ConfigurationError("forward needs user_settings (the targets live in profiles.settings)")
    if not settings.live_delay_s > 0:
        raise ConfigurationError("live_delay_s must be more than 0 seconds")
    if settings.max_payload_chars < 1024:
        raise ConfigurationError("max_payload_chars must be at least 1024")
    return settings
