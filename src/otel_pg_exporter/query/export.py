"""Traces out as JSONL: the evaluation set or fine-tuning file users build from their judgements.

One line per span of the chosen kind (``SpanSelection``) of every trace a ``list_traces`` filter
keeps (``annotation="thumbs", label="down"``: the thumbs-down traces): its input and output, model,
tokens, cost, status and error, the span's judgements (with any correction, the expected output)
and its trace's. Paged like the list (keyset, 200 traces per read), so an export of a million
traces costs what its lines cost; ``max_lines`` bounds it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from .trace_store import TraceStore

#: Traces read per page.
PAGE_TRACES = 200
DEFAULT_MAX_LINES = 10_000


class SpanSelection(str, Enum):
    """Which spans of each trace become lines."""

    ROOT = "root"  # the trace's root: the question and the answer, one line per trace
    LLM = "llm"  # each model call (llm, embedding spans): messages in and out
    JUDGED = "judged"  # spans with judgements of their own
    ALL = "all"


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact, as stored (a cost is never a float here)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(type(value).__name__)


def export_lines(
    store: TraceStore,
    *,
    spans: SpanSelection | str = SpanSelection.ROOT,
    max_lines: int = DEFAULT_MAX_LINES,
    **filters: Any,
) -> Iterator[str]:
    """JSONL lines (each ending in a newline) for the traces ``filters`` keep (``list_traces``'
    arguments), newest trace first; at most ``max_lines``."""
    selection = SpanSelection(spans)
    written = 0
    cursor: str | None = None
    filters.pop("cursor", None)
    filters.pop("limit", None)
    while written < max_lines:
        page = store.list_traces(**filters, cursor=cursor, limit=PAGE_TRACES)
        if not page.traces:
            return
        for row in store.export_rows([t.trace_id for t in page.traces], selection.value):
            yield json.dumps(row, default=_plain, ensure_ascii=False) + "\n"
            written += 1
            if written >= max_lines:
                return
        cursor = page.older
        if cursor is None:
            return
