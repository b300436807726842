"""The store: the only code that writes spans and log fragments to PostgreSQL.

``statements`` holds every SQL statement (data), ``batch`` builds their parameters from encoded
spans (pure), ``connection`` bounds a transaction, ``writer.SpanWriter`` runs the transactions.
"""

from ..connection import ConnectionSource
from .writer import MAX_TRACES_PER_TRANSACTION, ContentPolicy, SetAside, SpanWriter, WriteReport

__all__ = [
    "MAX_TRACES_PER_TRANSACTION",
    "ConnectionSource",
    "ContentPolicy",
    "SetAside",
    "SpanWriter",
    "WriteReport",
]
