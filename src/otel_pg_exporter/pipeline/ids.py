"""Row ids derived from OpenTelemetry ids, published so users can join their own data."""

from __future__ import annotations

import uuid
from functools import lru_cache

#: Namespace for span row ids (uuid5). Never change it: stored span ids depend on it.
SPAN_NAMESPACE = uuid.UUID("0c3a2f5e-8d4b-5e2a-9b6f-6f74656c7067")


@lru_cache(maxsize=4096)  # the spans of a trace share one UUID object
def trace_uuid(trace_id: int) -> uuid.UUID:
    """``traces.trace_id``: the 128-bit OTel trace id, bit for bit, as a UUID."""
    return uuid.UUID(int=trace_id)


@lru_cache(maxsize=16384)  # a parent's id is computed again by each child
def span_uuid(trace_id: int, span_id: int) -> uuid.UUID:
    """``spans.span_id`` for an OTel (trace id, span id) pair.

    OTel span ids are 64-bit and only unique within a trace, so the row id is a name-based UUID
    (version 5, SHA-1) of both: deterministic (a re-export hits the same row) and collision-resistant
    across traces. ``span_uuid(ctx.trace_id, ctx.span_id)`` gives the id of any span you hold.
    """
    return uuid.uuid5(SPAN_NAMESPACE, f"{trace_id:032x}{span_id:016x}")


def trace_hex(trace_id: int) -> str:
    return f"{trace_id:032x}"


def span_hex(span_id: int) -> str:
    return f"{span_id:016x}"
