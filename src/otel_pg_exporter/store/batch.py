"""What one write transaction sends: the JSON documents of ``store.statements``, built from the
encoded spans of a batch. Pure: no I/O.

``SpanBatch.of(spans, limits, explicit_ids)`` makes, in one pass over the spans, the trace deltas
(``%(traces)s``), the span rows with the batch's children folded into their parents
(``%(rows)s``), the placeholders for parents outside the batch (``%(placeholders)s``) and what those
outside parents learn from their children here (``%(children)s``). Each document is one ``orjson``
call: UUIDs, datetimes and pre-encoded JSON (``orjson.Fragment``) are written in C.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..pipeline.model import EncodedSpan, Limits, TraceDelta
from ..pipeline.privacy import scrub_json_text
from ..pipeline.sanitize import clean_text, encode_json
from ..pipeline.trace_deltas import Hinted, trace_deltas


def by_trace(items: Iterable[Any]) -> list[list[Any]]:
    """``items`` (anything with a ``trace_id``) grouped by trace, in order of first appearance."""
    groups: dict[Any, list[Any]] = {}
    for item in items:
        groups.setdefault(item.trace_id, []).append(item)
    return list(groups.values())


def chunks_by_trace(items: Sequence[Any], max_traces: int) -> list[list[Any]]:
    """``items`` in chunks of at most ``max_traces`` traces each (a trace is never split): one
    transaction per chunk takes at most that many trace locks. One chunk when it already fits."""
    groups = by_trace(items)
    if len(groups) <= max_traces:
        return [list(items)] if items else []
    return [
        [item for group in groups[i : i + max_traces] for item in group]
        for i in range(0, len(groups), max_traces)
    ]


def halves(items: Sequence[Any]) -> list[list[Any]]:
    """Two halves of a refused chunk: by trace while it holds several, else its spans (a trace's
    spans may be written in separate transactions: its row is recomputed from what is stored).
    Empty for a single item: it cannot be split."""
    groups = by_trace(items)
    if len(groups) > 1:
        mid = len(groups) // 2
        return [[i for g in groups[:mid] for i in g], [i for g in groups[mid:] for i in g]]
    if len(items) > 1:
        mid = len(items) // 2
        return [list(items[:mid]), list(items[mid:])]
    return []


@dataclass(slots=True)
class ChildFold:
    """What a batch's children tell their parent: ids, HTTP resend count, rate-limit info."""

    ids: list[str] = field(default_factory=list)
    max_retry: int = 0
    limits: dict[str, Any] = field(default_factory=dict)


def trace_rows(deltas: Iterable[TraceDelta], limits: Limits, explicit_ids: bool) -> list[dict[str, Any]]:
    """One object per trace delta, as ``statements.TRACE_DELTAS`` reads them."""
    rows = []
    cap = limits.max_payload_chars
    scrub = limits.scrub
    for d in deltas:
        user, q = d.user, d.query
        query = clean_text(q[2], cap)[0] if q else None
        rows.append(
            {
                "tid": d.trace_id,
                "hex": d.trace_hex,
                "exec_id": d.execution_id if explicit_ids else None,
                "meta": orjson.Fragment(_trace_metadata(d, cap, scrub)),
                "started_at": d.started_at,
                "wf": d.workflow[1],
                "wf_rank": d.workflow[0],
                "wf_src": d.workflow[2],
                "usr": clean_text(user[1], 1000)[0] if user else None,
                "usr_uuid": d.user_uuid,
                "usr_rank": user[0] if user else None,
                "usr_src": user[2] if user else None,
                "q": scrub(query) if query and scrub is not None else query,
                "q_rank": q[0] if q else None,
                "q_at": q[1] if q else None,
                "q_src": q[3] if q else None,
            }
        )
    return rows


def _trace_metadata(delta: TraceDelta, cap: int, scrub: Any) -> str:
    """A delta's ``traces.metadata`` part as JSON text, scrubbed (it holds resource attributes)."""
    text = encode_json(delta.metadata, cap)[0]
    return scrub_json_text(scrub, text) if scrub is not None else text


def dumps(value: Any) -> str:
    """A parameter document: JSON text (UUIDs and datetimes as ``orjson`` writes them)."""
    return orjson.dumps(value).decode()


def trace_document(deltas: Sequence[Hinted], limits: Limits) -> str:
    """The ``%(traces)s`` document for items that only hint at traces (log fragments)."""
    return dumps(trace_rows(trace_deltas(deltas), limits, explicit_ids=False))


def placeholder_row(trace_id: Any, span_id: Any, trace_hex: str, span_hex: str | None) -> dict[str, Any]:
    """A ``pending`` row for a span known only by id (a parent outside the batch, a logged span)."""
    return {
        "sid": span_id,
        "tid": trace_id,
        "meta": {"placeholder": True, "otel": {"trace_id": trace_hex, "span_id": span_hex}},
    }


@dataclass(slots=True)
class SpanBatch:
    """The parameters of one span write transaction (see ``store.statements``)."""

    traces: list[dict[str, Any]]
    rows: str
    placeholders: str
    #: children whose parent is outside the batch, for ``MERGE_CHILDREN`` (None: nothing to merge)
    children: str | None

    @property
    def params(self) -> dict[str, Any]:
        return {"traces": dumps(self.traces), "rows": self.rows, "placeholders": self.placeholders}

    def traces_among(self, trace_ids: set[Any]) -> str:
        """The trace document restricted to ``trace_ids`` (the traces to recompute)."""
        return dumps([t for t in self.traces if t["tid"] in trace_ids])

    @classmethod
    def of(cls, spans: list[EncodedSpan], limits: Limits, explicit_ids: bool) -> SpanBatch:
        by_id = {s.span_id: s for s in spans}
        folds: dict[Any, ChildFold] = defaultdict(ChildFold)
        placeholders: list[dict[str, Any]] = []
        for s in spans:
            pid = s.parent_span_id
            if pid is None:
                continue
            fold = folds.get(pid)
            if fold is None:
                fold = folds[pid] = ChildFold()
                if pid not in by_id:
                    placeholders.append(placeholder_row(s.trace_id, pid, s.hints.trace_hex, s.parent_hex))
            fold.ids.append(str(s.span_id))
            if s.span_type == "http":  # HTTP client spans under a model call: retries, 429s, headers
                fold.max_retry = max(fold.max_retry, s.retry_count)
                fold.limits.update(s.api_limits_obj)
        rows = []
        # sorted by id (the row lock order); UUIDs compare as their 128-bit integers, as in PostgreSQL
        for s in sorted(spans, key=lambda s: s.span_id.int):
            fold = folds.get(s.span_id)
            if fold is None:
                rows.append(s.row[:-1] + ',"child_spans":[]}')
                continue
            fold.ids.sort()
            extra = ',"child_spans":' + dumps(fold.ids)
            if fold.max_retry > s.retry_count:
                extra += f',"retry_count":{fold.max_retry}'
            if fold.limits:
                extra += ',"api_limits":' + encode_json({**s.api_limits_obj, **fold.limits}, 10_000)[0]
            # a key repeated at the end of a JSON object wins when PostgreSQL reads it as jsonb
            rows.append(s.row[:-1] + extra + "}")
        outside = sorted((pid for pid in folds if pid not in by_id), key=lambda pid: pid.int)
        children = None
        if outside:
            for pid in outside:
                folds[pid].ids.sort()
            children = dumps(
                [
                    {
                        "pid": pid,
                        "children": folds[pid].ids,
                        "max_retry": folds[pid].max_retry,
                        "limits": orjson.Fragment(encode_json(folds[pid].limits, 10_000)[0]),
                    }
                    for pid in outside
                ]
            )
        return cls(
            traces=trace_rows(trace_deltas(spans), limits, explicit_ids),
            rows="[" + ",".join(rows) + "]",
            placeholders=dumps(placeholders),
            children=children,
        )
