"""Per-user observability settings: ``profiles.settings -> 'observability'``, parsed and cached.

The object we honour (every key optional; anything else is ignored)::

    {"observability": {
        "enabled": true,             # false: the user's traces are stored WITHOUT content, never forwarded
        "capture_content": true,     # overrides the exporter's capture_content for this user
        "retention_days": 30,        # used by the retention routine (otel-pg-cleanup)
        "langsmith": {"api_key": "lsv2_...", "project": "my-project",
                      "endpoint": "https://api.smith.langchain.com/otel"},
        "langfuse": {"public_key": "pk-lf-...", "secret_key": "sk-lf-...",
                     "host": "https://cloud.langfuse.com"}}}

A key may also be a reference to a Supabase Vault secret, ``{"vault": "<secret name or id>"}``: the
exporter then reads it from ``vault.decrypted_secrets`` when it loads the user's settings (its role
needs to be allowed to), so the table holds no key at all.

``parse_observability`` is pure and lenient: a value of the wrong type is ignored (and named in
``problems``, never with its value: it may be a key). ``UserSettingsCache`` loads the settings of
the users a batch names that it does not hold yet, in one query, and keeps them ``ttl_s`` seconds:
the cost is one query per batch that brings a new (or expired) user, never one per span.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("otel_pg_exporter")

#: Retention days are clamped to this range (a typo must not keep data for a million years).
RETENTION_DAYS_RANGE = (1, 36_500)
DEFAULT_LANGSMITH_ENDPOINT = "https://api.smith.langchain.com/otel"
DEFAULT_LANGFUSE_HOST = "https://cloud.langfuse.com"


@dataclass(frozen=True, slots=True)
class ForwardTarget:
    """Where one user's spans are forwarded: an OTLP/HTTP traces endpoint and its headers.

    ``repr`` never shows the headers (they hold the keys)."""

    service: str
    endpoint: str
    headers: tuple[tuple[str, str], ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class UserObservability:
    enabled: bool = True
    capture_content: bool | None = None
    retention_days: int | None = None
    targets: tuple[ForwardTarget, ...] = ()
    problems: tuple[str, ...] = ()


DEFAULT = UserObservability()


#: Keys of the forwarding blocks that may hold a Vault reference instead of the secret itself.
SECRET_FIELDS = ("api_key", "public_key", "secret_key")


def vault_refs(raw_by_user: Mapping[Any, Any]) -> set[str]:
    """Every ``{"vault": ref}`` used as a key in these raw observability objects."""
    refs: set[str] = set()
    for raw in raw_by_user.values():
        if not isinstance(raw, Mapping):
            continue
        for service in _TARGETS:
            block = raw.get(service)
            if isinstance(block, Mapping):
                for name in SECRET_FIELDS:
                    value = block.get(name)
                    if isinstance(value, Mapping) and isinstance(value.get("vault"), str):
                        refs.add(value["vault"])
    return refs


def resolve_vault_refs(raw: Any, secrets: Mapping[str, str]) -> Any:
    """``raw`` with each ``{"vault": ref}`` key replaced by its secret (left as is when unknown:
    the block is then ignored as having no usable key)."""
    if not isinstance(raw, Mapping):
        return raw
    out = dict(raw)
    for service in _TARGETS:
        block = out.get(service)
        if not isinstance(block, Mapping):
            continue
        resolved = dict(block)
        for name in SECRET_FIELDS:
            value = block.get(name)
            if isinstance(value, Mapping) and value.get("vault") in secrets:
                resolved[name] = secrets[value["vault"]]
        out[service] = resolved
    return out


def _text(block: Mapping[str, Any], key: str) -> str | None:
    value = block.get(key)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _langsmith(block: Mapping[str, Any], problems: list[str]) -> ForwardTarget | None:
    key = _text(block, "api_key")
    if key is None:
        problems.append("langsmith.api_key missing (or an unreadable vault reference)")
        return None
    endpoint = (_text(block, "endpoint") or DEFAULT_LANGSMITH_ENDPOINT).rstrip("/")
    headers = [("x-api-key", key)]
    project = _text(block, "project")
    if project:
        headers.append(("Langsmith-Project", project))
    return ForwardTarget("langsmith", endpoint + "/v1/traces", tuple(headers))


def _langfuse(block: Mapping[str, Any], problems: list[str]) -> ForwardTarget | None:
    import base64

    public, secret = _text(block, "public_key"), _text(block, "secret_key")
    if public is None or secret is None:
        problems.append("langfuse.public_key/secret_key missing (or an unreadable vault reference)")
        return None
    host = (_text(block, "host") or _text(block, "base_url") or DEFAULT_LANGFUSE_HOST).rstrip("/")
    token = base64.b64encode(f"{public}:{secret}".encode()).decode()
    return ForwardTarget(
        "langfuse", host + "/api/public/otel/v1/traces", (("Authorization", f"Basic {token}"),)
    )


_TARGETS: dict[str, Callable[[Mapping[str, Any], list[str]], ForwardTarget | None]] = {
    "langsmith": _langsmith,
    "langfuse": _langfuse,
}


def parse_observability(raw: Any) -> UserObservability:
    """The ``observability`` object as we honour it; wrong types are ignored and noted."""
    if raw is None:
        return DEFAULT
    if not isinstance(raw, Mapping):
        return UserObservability(problems=("observability is not an object",))
    problems: list[str] = []
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append("enabled is not a boolean")
        enabled = True
    capture = raw.get("capture_content")
    if capture is not None and not isinstance(capture, bool):
        problems.append("capture_content is not a boolean")
        capture = None
    days = raw.get("retention_days")
    retention: int | None = None
    if days is not None:
        if isinstance(days, int | float) and not isinstance(days, bool) and days == days:
            lo, hi = RETENTION_DAYS_RANGE
            retention = int(min(max(days, lo), hi))
        else:
            problems.append("retention_days is not a number")
    targets: list[ForwardTarget] = []
    for name, build in _TARGETS.items():
        block = raw.get(name)
        if block is None:
            continue
        if not isinstance(block, Mapping):
            problems.append(f"{name} is not an object")
            continue
        if block.get("enabled") is False:
            continue
        target = build(block, problems)
        if target is not None:
            targets.append(target)
    return UserObservability(enabled, capture, retention, tuple(targets), tuple(problems))


def content_allowed(global_capture: bool, user: UserObservability | None) -> bool:
    """May this user's content be stored? ``enabled: false`` wins, then the user's override."""
    if user is None:
        return global_capture
    if not user.enabled:
        return False
    return global_capture if user.capture_content is None else user.capture_content


def user_uuid(value: Any) -> uuid.UUID | None:
    """A trace's user id as the UUID ``profiles.id`` would hold (None if it is not one)."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value).strip())
    except (ValueError, AttributeError):
        return None


#: Loads raw ``observability`` objects for user ids (one query); given by the writer.
Loader = Callable[[list[uuid.UUID]], dict[uuid.UUID, Any]]


class UserSettingsCache:
    """Thread-safe TTL cache of ``UserObservability`` by user id (users without a profile too)."""

    #: After a failed load, this long without trying again (the database may be down: a lookup must
    #: not add a wait to every batch).
    RETRY_AFTER_S = 5.0

    def __init__(self, loader: Loader, ttl_s: float = 60.0, max_users: int = 100_000) -> None:
        self._loader = loader
        self.ttl_s = ttl_s
        self._max = max_users
        self._entries: OrderedDict[uuid.UUID, tuple[float, UserObservability]] = OrderedDict()
        self._lock = threading.Lock()
        self._warned: set[uuid.UUID] = set()
        self.queries = 0
        self.failures = 0
        self._retry_at = 0.0

    def after_fork(self) -> None:
        """In a forked child: a fresh lock; the cached settings stay valid."""
        self._lock = threading.Lock()

    def get_many(
        self, user_ids: Collection[uuid.UUID], loader: Loader | None = None
    ) -> dict[uuid.UUID, UserObservability]:
        """Settings of ``user_ids``; the missing or expired ones are loaded in one query (with
        ``loader`` if given, e.g. inside the writer's transaction). If loading fails, expired
        entries are used as they are and unknown users get None (the caller's defaults)."""
        now = time.monotonic()
        out: dict[uuid.UUID, UserObservability] = {}
        missing: list[uuid.UUID] = []
        with self._lock:
            for uid in user_ids:
                hit = self._entries.get(uid)
                if hit is not None and now - hit[0] < self.ttl_s:
                    out[uid] = hit[1]
                else:
                    missing.append(uid)
        if not missing:
            return out
        try:
            if loader is None and now < self._retry_at:
                raise TimeoutError("an earlier load failed moments ago")
            raw = (loader or self._loader)(sorted(missing))
        except Exception as exc:
            with self._lock:
                self.failures += 1
                self._retry_at = time.monotonic() + self.RETRY_AFTER_S
                for uid in missing:
                    hit = self._entries.get(uid)
                    if hit is not None:
                        out[uid] = hit[1]
            if not isinstance(exc, TimeoutError):
                logger.warning(
                    "otel-pg-exporter: user settings not loaded (%s); using cached values", type(exc).__name__
                )
            return out
        loaded = {uid: parse_observability(raw.get(uid)) for uid in missing}
        with self._lock:
            self.queries += 1
            for uid, settings in loaded.items():
                self._entries[uid] = (now, settings)
                self._entries.move_to_end(uid)
                if settings.problems and uid not in self._warned:
                    self._warned.add(uid)
                    logger.warning(
                        "otel-pg-exporter: profiles.settings.observability of user %s: %s (ignored)",
                        uid,
                        "; ".join(settings.problems),
                    )
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        out.update(loaded)
        return out
