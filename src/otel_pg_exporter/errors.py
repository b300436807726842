"""Named exceptions. Every message is safe to print: no DSN password ever appears in one."""

from __future__ import annotations


class OtelPgError(Exception):
    """Base class for every error this package raises on purpose."""


class ConfigurationError(OtelPgError):
    """An option or environment variable has a value we cannot use."""


class ConnectionFailed(OtelPgError):
    """PostgreSQL could not be reached or refused the login."""


class PermissionDenied(OtelPgError):
    """The database role lacks a privilege the operation needs."""


class SchemaError(OtelPgError):
    """Installing or checking the schema failed."""


class ChecksumMismatch(SchemaError):
    """A migration file differs from the one recorded as applied."""


class SchemaDrift(SchemaError):
    """The tables exist but lack columns or indexes the seed schema defines."""
