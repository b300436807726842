"""Resolve the connection string once, and keep its password out of every message.

Order: explicit argument, then ``OTEL_EXPORTER_POSTGRES_DSN``, then ``DATABASE_URL``, then an empty
string, which makes libpq fall back to its own ``PG*`` variables (PGHOST, PGUSER, PGPASSWORD, ...).
"""

from __future__ import annotations

import os
import re

from psycopg.conninfo import conninfo_to_dict

DSN_ENV_VARS: tuple[str, ...] = ("OTEL_EXPORTER_POSTGRES_DSN", "DATABASE_URL")

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?=@)")
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I)
MASK = "***"


def resolve_dsn(dsn: str | None = None) -> tuple[str, str]:
    """Return ``(dsn, source)``; source names where it came from, for messages."""
    if dsn:
        return dsn, "argument"
    for var in DSN_ENV_VARS:
        value = os.environ.get(var)
        if value:
            return value, var
    return "", "libpq PG* environment"


def _passwords(dsn: str) -> list[str]:
    found: list[str] = []
    try:
        pw = conninfo_to_dict(dsn).get("password")
    except Exception:  # an unparsable DSN still gets the regex treatment below
        pw = None
    if pw:
        found.append(str(pw))
    env_pw = os.environ.get("PGPASSWORD")
    if env_pw:
        found.append(env_pw)
    return found


def redact(text: str, dsn: str | None = None) -> str:
    """Mask passwords in ``text``: URL userinfo, ``password=`` pairs and the DSN's own password."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    text = _KV_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    if dsn:
        for pw in _passwords(dsn):
            if len(pw) >= 3:
                text = text.replace(pw, MASK)
    return text


def describe(dsn: str) -> str:
    """A short, password-free label for a DSN, e.g. ``postgres@127.0.0.1:5432/app``."""
    try:
        parts = conninfo_to_dict(dsn) if dsn else {}
    except Exception:
        return redact(dsn)
    host = parts.get("host") or os.environ.get("PGHOST") or "local socket"
    port = parts.get("port") or os.environ.get("PGPORT") or "5432"
    user = parts.get("user") or os.environ.get("PGUSER") or ""
    db = parts.get("dbname") or os.environ.get("PGDATABASE") or user or ""
    return f"{user + '@' if user else ''}{host}:{port}/{db}"


def safe_message(exc: BaseException, dsn: str | None = None) -> str:
    """An exception as one password-free line (libpq messages span several lines)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return redact(text or type(exc).__name__, dsn)
