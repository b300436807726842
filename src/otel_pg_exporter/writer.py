"""Encoded rows → PostgreSQL, set-based, one transaction per batch.

Per batch, in one transaction, each step one statement over arrays (``unnest``), keys sorted:

1. take a transaction advisory lock per trace (in one canonical order), then upsert the ``traces``
   rows (placeholders for new traces), which also row-locks them: concurrent writers of the same
   traces serialise instead of deadlocking;
2. insert ``pending`` placeholder rows for parents that are not in the batch (the seed's FK holds);
3. upsert the spans (a real span replaces its placeholder, keeping the children already linked);
4. merge ``child_spans`` (and HTTP retry counts / rate-limit info) into the parents;
5. recompute each trace row from its stored spans: status, times, and totals over leaf model calls.

Step 5 recomputes instead of adding deltas, so a re-exported batch, a retry after a lost commit, or
two exporters sharing a trace all end with the same exact totals.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from .conventions import CONTENT_ATTRIBUTES, FLAT_PREFIXES, MODEL_CALL_TYPES, OPERATION_DETAILS_EVENT
from .logs import LogFragment, fragment_hints, merge_fragment, stored_from_row
from .mapping import ns_to_datetime
from .records import OMITTED, ROW_COLUMNS, EncodedSpan, Limits, TraceDelta, row_json, trace_deltas
from .sanitize import clean_text, encode_json
from .schema import local_search_path
from .user_settings import resolve_vault_refs, vault_refs

logger = logging.getLogger("otel_pg_exporter")

#: Errors that mean "this data cannot be stored": isolate the offending span(s), store the rest.
DATA_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.DataError,
    psycopg.IntegrityError,
    UnicodeError,
    ValueError,
    TypeError,
)
_MAX = 2_147_483_647
_dumps = json.JSONEncoder(ensure_ascii=False).encode

# Serialise writers of the same trace before touching it. Without this, two transactions inserting
# one new trace race on the second unique index (traces.execution_id) under ON CONFLICT and
# PostgreSQL reports a deadlock (speculative insertion waits on one index, the other on the second).
# Keys are taken in one canonical order (sorted), so the advisory locks cannot deadlock either.
_LOCK_TRACES = """
SELECT pg_advisory_xact_lock(k)
FROM (SELECT DISTINCT hashtextextended(t::text, 7261) AS k FROM unnest(%(tid)s::uuid[]) AS t ORDER BY 1) AS s
"""

_SET_SEARCH_PATH = "SELECT set_config('search_path', %(search_path)s, true)"

_UPSERT_TRACES = """
INSERT INTO traces (trace_id, workflow_id, execution_id, started_at, status, metadata)
SELECT v.tid, v.wf,
       CASE WHEN v.exec_id IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM traces o WHERE o.execution_id = v.exec_id)
            THEN v.exec_id ELSE v.hex END,
       v.started_at, 'running', '{}'::jsonb
FROM unnest(%(tid)s::uuid[], %(wf)s::text[], %(exec_id)s::text[], %(hex)s::text[],
            %(started_at)s::timestamp[]) AS v(tid, wf, exec_id, hex, started_at)
ORDER BY v.tid
ON CONFLICT (trace_id) DO UPDATE SET workflow_id = traces.workflow_id WHERE false
"""
# "DO UPDATE ... WHERE false" writes nothing but still locks the existing row (PostgreSQL docs).

_INSERT_PLACEHOLDERS = """
INSERT INTO spans (span_id, trace_id, span_type, name, status, metadata)
SELECT v.sid, v.tid, 'other', '(pending)', 'pending', v.meta::jsonb
FROM unnest(%(sid)s::uuid[], %(tid)s::uuid[], %(meta)s::text[]) AS v(sid, tid, meta)
ORDER BY v.sid
ON CONFLICT (span_id) DO NOTHING
"""

#: Column types for ``jsonb_to_recordset``: the batch travels as one JSON document that the server
#: parses in C, instead of one array parameter per column dumped by the client.
_SPAN_TYPES = {
    "span_id": "uuid",
    "trace_id": "uuid",
    "parent_span_id": "uuid",
    "span_type": "text",
    "name": "text",
    "status": "text",
    "started_at": "timestamp",
    "completed_at": "timestamp",
    "duration_ms": "int4",
    "inputs": "jsonb",
    "outputs": "jsonb",
    "tokens": "jsonb",
    "cost": "numeric",
    "model": "text",
    "provider": "text",
    "error": "text",
    "error_type": "text",
    "error_stack": "text",
    "api_limits": "jsonb",
    "retry_count": "int4",
    "timeout": "int4",
    "evaluation": "jsonb",
    "metadata": "jsonb",
    "child_spans": "text[]",
}
_INSERT_COLUMNS = tuple(_SPAN_TYPES)
#: Columns of ``EncodedSpan.row``; ``child_spans`` is built from the batch.
SPAN_COLUMNS = ROW_COLUMNS
assert tuple(c for c in _INSERT_COLUMNS if c != "child_spans") == SPAN_COLUMNS
_UPDATE_ON_CONFLICT = [c for c in _INSERT_COLUMNS if c not in ("span_id", "trace_id")]


#: What log records may have put into a placeholder before its span arrived (``logs``), and how
#: the span's own values combine with it: the span's messages replace logged ones, never the reverse.
_SPAN_MESSAGES_WIN = (
    "CASE WHEN EXCLUDED.{c} ? 'messages' THEN EXCLUDED.{c} ELSE spans.{c} || EXCLUDED.{c} END"
)
_FAILURE_KEEPS_LOGGED = (
    "CASE WHEN EXCLUDED.status IN ('failed', 'cancelled') THEN coalesce(EXCLUDED.{c}, spans.{c})"
    " ELSE EXCLUDED.{c} END"
)
_LOGGED_INTO_PLACEHOLDER = {
    "inputs": _SPAN_MESSAGES_WIN.format(c="inputs"),
    "outputs": _SPAN_MESSAGES_WIN.format(c="outputs"),
    # the span's evaluations first, then logged ones; the same result twice is kept once
    "evaluation": """CASE WHEN spans.evaluation ? 'results' THEN EXCLUDED.evaluation || jsonb_build_object(
        'results', (SELECT jsonb_agg(e ORDER BY o) FROM (
            SELECT e, min(o) AS o FROM jsonb_array_elements(
                coalesce(EXCLUDED.evaluation -> 'results', '[]') || (spans.evaluation -> 'results'))
                WITH ORDINALITY AS x(e, o) GROUP BY e) AS d))
        ELSE EXCLUDED.evaluation END""",
    "error": _FAILURE_KEEPS_LOGGED.format(c="error"),
    "error_stack": _FAILURE_KEEPS_LOGGED.format(c="error_stack"),
    # keep the log bookkeeping, minus the order of messages the span's own replaced
    "metadata": """EXCLUDED.metadata || CASE WHEN spans.metadata ? 'logs' THEN jsonb_build_object('logs',
        (spans.metadata -> 'logs') - ARRAY[CASE WHEN EXCLUDED.inputs ? 'messages' THEN 'inputs' ELSE '' END,
                                         CASE WHEN EXCLUDED.outputs ? 'messages' THEN 'outputs' ELSE '' END])
        ELSE '{}'::jsonb END""",
}


def _upsert_spans_sql(source: str | None = None) -> str:
    """The spans upsert, from the batch document (``%(rows)s``), or from a relation ``source``
    with the same columns."""
    record = ", ".join(f"{c} {_SPAN_TYPES[c]}" for c in _INSERT_COLUMNS)
    sets = []
    for c in _UPDATE_ON_CONFLICT:
        if c == "retry_count":
            sets.append("retry_count = GREATEST(EXCLUDED.retry_count, spans.retry_count)")
        elif c == "api_limits":
            sets.append("api_limits = spans.api_limits || EXCLUDED.api_limits")
        elif c == "child_spans":  # a placeholder already lists the children seen so far
            sets.append(
                "child_spans = ARRAY(SELECT DISTINCT c FROM unnest(spans.child_spans || EXCLUDED.child_spans)"
                " AS c ORDER BY c)"
            )
        elif c in _LOGGED_INTO_PLACEHOLDER:
            sets.append(f"{c} = {_LOGGED_INTO_PLACEHOLDER[c]}")
        else:
            sets.append(f"{c} = EXCLUDED.{c}")
    columns = ", ".join(_INSERT_COLUMNS)
    origin = f"{source} v" if source else f"jsonb_to_recordset(%(rows)s::jsonb) AS v({record})"
    return (
        f"INSERT INTO spans ({columns})\n"
        f"SELECT {', '.join('v.' + c for c in _INSERT_COLUMNS)}\n"
        f"FROM {origin}\n"
        "ORDER BY v.span_id\n"
        f"ON CONFLICT (span_id) DO UPDATE SET {', '.join(sets)}\n"
        # a real row is final: a re-export changes nothing; only placeholders get filled in
        "WHERE spans.status = 'pending'"
    )


_UPSERT_SPANS = _upsert_spans_sql()

#: The batch's trace deltas as a relation ``v`` (one row per trace, sorted by trace id).
_TRACE_DELTAS = """v AS (
    SELECT * FROM unnest(
        %(tid)s::uuid[], %(hex)s::text[], %(exec_id)s::text[], %(meta)s::text[], %(started_at)s::timestamp[],
        %(wf)s::text[], %(wf_rank)s::int4[], %(wf_src)s::text[],
        %(usr)s::text[], %(usr_uuid)s::uuid[], %(usr_rank)s::int4[], %(usr_src)s::text[],
        %(q)s::text[], %(q_rank)s::int4[], %(q_at)s::int8[], %(q_src)s::text[])
    AS v(tid, hex, exec_id, meta, started_at, wf, wf_rank, wf_src, usr, usr_uuid, usr_rank, usr_src,
         q, q_rank, q_at, q_src)
)"""


def _write_batch_sql() -> str:
    """One statement per batch for the common case: the rows are parsed once (CTE ``b``); traces
    that do not exist yet are inserted complete, their totals computed from the batch, since no
    other span of theirs can exist (the trace row is absent and the batch holds the trace's advisory
    lock); placeholders for parents outside the batch and the spans go in alongside (the seed's
    foreign keys are checked at the end of the statement). Returns the ids of the traces that
    existed already: only those are recomputed from their stored spans (``_RECOMPUTE_TRACES``)."""
    record = ", ".join(f"{c} {_SPAN_TYPES[c]}" for c in _INSERT_COLUMNS)
    return f"""
WITH b AS MATERIALIZED (SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS b({record})),
{_TRACE_DELTAS},
{_leaf_totals("b", "true")}root AS (
    SELECT DISTINCT ON (trace_id) trace_id, status, started_at, completed_at, duration_ms, error
    FROM b WHERE parent_span_id IS NULL AND status <> 'pending'
    ORDER BY trace_id, started_at
),
first_span AS (SELECT trace_id, min(started_at) AS started_at FROM b GROUP BY trace_id),
new_traces AS (
    INSERT INTO traces (trace_id, workflow_id, execution_id, started_at, completed_at, status,
                        total_duration_ms, total_cost, total_tokens, error, query, user_id, metadata)
    SELECT v.tid, v.wf,
           CASE WHEN v.exec_id IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM traces o WHERE o.execution_id = v.exec_id)
                THEN v.exec_id ELSE v.hex END,
           coalesce(root.started_at, first_span.started_at, v.started_at),
           root.completed_at,
           CASE WHEN root.status IS NULL THEN 'running'
                WHEN root.status IN ('failed', 'cancelled') THEN root.status
                ELSE 'completed' END,
           coalesce(root.duration_ms, 0),
           LEAST(coalesce(cost.total, 0), 9999.999999),
           coalesce(tok.tokens, '{{}}'::jsonb),
           root.error,
           CASE WHEN v.q_rank IS NOT NULL THEN v.q END,
           CASE WHEN v.usr_rank IS NOT NULL THEN (SELECT p.id FROM profiles p WHERE p.id = v.usr_uuid) END,
           v.meta::jsonb
             || jsonb_build_object('model_calls', coalesce(cost.calls, 0))
             || CASE WHEN v.usr_rank IS NOT NULL THEN jsonb_build_object('user', v.usr) ELSE '{{}}'::jsonb END
             || jsonb_build_object('sources',
                    jsonb_build_object('workflow_id',
                        jsonb_build_object('rank', v.wf_rank, 'attribute', v.wf_src))
                    || CASE WHEN v.q_rank IS NOT NULL THEN jsonb_build_object('query',
                           jsonb_build_object('rank', v.q_rank, 'at', v.q_at, 'attribute', v.q_src))
                           ELSE '{{}}'::jsonb END
                    || CASE WHEN v.usr_rank IS NOT NULL THEN jsonb_build_object('user',
                           jsonb_build_object('rank', v.usr_rank, 'attribute', v.usr_src))
                           ELSE '{{}}'::jsonb END)
    FROM v
    LEFT JOIN cost ON cost.trace_id = v.tid
    LEFT JOIN tok ON tok.trace_id = v.tid
    LEFT JOIN root ON root.trace_id = v.tid
    LEFT JOIN first_span ON first_span.trace_id = v.tid
    ORDER BY v.tid
    ON CONFLICT (trace_id) DO NOTHING
    RETURNING trace_id
),
placeholders AS (
    INSERT INTO spans (span_id, trace_id, span_type, name, status, metadata)
    SELECT p.sid, p.tid, 'other', '(pending)', 'pending', p.meta::jsonb
    FROM unnest(%(ph_sid)s::uuid[], %(ph_tid)s::uuid[], %(ph_meta)s::text[]) AS p(sid, tid, meta)
    ORDER BY p.sid
    ON CONFLICT (span_id) DO NOTHING
),
stored AS (
{_upsert_spans_sql("b")}
)
SELECT v.tid FROM v WHERE v.tid NOT IN (SELECT trace_id FROM new_traces)
"""


_MERGE_CHILDREN = """
UPDATE spans p
SET child_spans = ARRAY(SELECT DISTINCT c FROM unnest(p.child_spans || v.children) AS c ORDER BY c),
    retry_count = GREATEST(p.retry_count, v.max_retry),
    api_limits = p.api_limits || v.limits
FROM (SELECT u.pid, string_to_array(u.children, ',') AS children, u.max_retry, u.limits::jsonb AS limits
      FROM unnest(%(pid)s::uuid[], %(children)s::text[], %(max_retry)s::int4[], %(limits)s::text[])
           AS u(pid, children, max_retry, limits)) AS v
WHERE p.span_id = v.pid
  AND NOT (v.children <@ p.child_spans AND v.max_retry <= p.retry_count AND p.api_limits @> v.limits)
"""

_MODEL_TYPES_SQL = ", ".join(f"'{t}'" for t in sorted(MODEL_CALL_TYPES))
def _no_model_child(source: str) -> str:
    """``s`` has no llm/embedding child: an index probe in ``spans``; in a batch's CTE (no index,
    no row estimate) one hashed set of the model calls' parents."""
    if source == "spans":
        return f"""NOT EXISTS (SELECT 1 FROM spans c WHERE c.parent_span_id = s.span_id
                      AND c.span_type IN ({_MODEL_TYPES_SQL}))"""
    return f"""s.span_id NOT IN (SELECT c.parent_span_id FROM {source} c
                           WHERE c.parent_span_id IS NOT NULL AND c.span_type IN ({_MODEL_TYPES_SQL}))"""


def _leaf_totals(source: str, scope: str) -> str:
    """CTEs ``leaf``, ``cost`` and ``tok``: the trace-total rule over the span rows of ``source``
    (``spans``, or a CTE holding a batch's rows), for the traces ``scope`` admits (a condition on
    ``s.trace_id``). Sums over leaf model calls: llm/embedding spans without an llm/embedding
    child (roll-ups never count)."""
    return f"""leaf AS (
    SELECT s.trace_id, s.cost, s.tokens FROM {source} s
    WHERE {scope} AND s.span_type IN ({_MODEL_TYPES_SQL})
      AND s.status <> 'pending'
      AND {_no_model_child(source)}
),
cost AS (SELECT trace_id, sum(cost) AS total, count(*) AS calls FROM leaf GROUP BY trace_id),
tok AS (
    SELECT trace_id, jsonb_object_agg(key, total) AS tokens FROM (
        SELECT l.trace_id, e.key, sum((e.value #>> '{{}}')::numeric) AS total
        FROM leaf l CROSS JOIN LATERAL jsonb_each(l.tokens) AS e
        WHERE jsonb_typeof(e.value) = 'number'
        GROUP BY l.trace_id, e.key) AS per_key
    GROUP BY trace_id
),
"""


#: The trace-total rule, shared by the writer and the cost backfill, for the trace ids in CTE ``v(tid)``.
_LEAF_TOTALS = _leaf_totals("spans", "s.trace_id IN (SELECT tid FROM v)")
_RECOMPUTE_TRACES = f"""
WITH {_TRACE_DELTAS},
{_LEAF_TOTALS}root AS (
    SELECT DISTINCT ON (trace_id) trace_id, status, started_at, completed_at, duration_ms, error
    FROM spans
    WHERE trace_id IN (SELECT tid FROM v) AND parent_span_id IS NULL AND status <> 'pending'
    ORDER BY trace_id, started_at
),
first_span AS (
    SELECT trace_id, min(started_at) AS started_at FROM spans
    WHERE trace_id IN (SELECT tid FROM v) GROUP BY trace_id
),
cur AS (
    SELECT t.trace_id,
           v.wf_rank < coalesce((t.metadata #>> '{{sources,workflow_id,rank}}')::int, {_MAX}) AS wf_wins,
           (v.q_rank, v.q_at) < (coalesce((t.metadata #>> '{{sources,query,rank}}')::int, {_MAX}),
                                 coalesce((t.metadata #>> '{{sources,query,at}}')::int8, 9223372036854775807))
               AS q_wins,
           v.usr_rank < coalesce((t.metadata #>> '{{sources,user,rank}}')::int, {_MAX}) AS usr_wins
    FROM traces t JOIN v ON v.tid = t.trace_id
)
UPDATE traces t SET
    total_cost = LEAST(coalesce(cost.total, 0), 9999.999999),
    total_tokens = coalesce(tok.tokens, '{{}}'::jsonb),
    status = CASE WHEN root.status IS NULL THEN 'running'
                  WHEN root.status IN ('failed', 'cancelled') THEN root.status
                  ELSE 'completed' END,
    started_at = coalesce(root.started_at, first_span.started_at, t.started_at),
    completed_at = root.completed_at,
    total_duration_ms = coalesce(root.duration_ms, 0),
    error = root.error,
    workflow_id = CASE WHEN cur.wf_wins THEN v.wf ELSE t.workflow_id END,
    query = CASE WHEN cur.q_wins THEN v.q ELSE t.query END,
    user_id = CASE WHEN cur.usr_wins THEN (SELECT p.id FROM profiles p WHERE p.id = v.usr_uuid)
                   ELSE t.user_id END,
    execution_id = CASE WHEN t.execution_id = v.hex AND v.exec_id IS NOT NULL
                             AND NOT EXISTS (SELECT 1 FROM traces o WHERE o.execution_id = v.exec_id)
                        THEN v.exec_id ELSE t.execution_id END,
    metadata = (v.meta::jsonb || t.metadata)
        || jsonb_build_object('model_calls', coalesce(cost.calls, 0))
        || CASE WHEN cur.usr_wins THEN jsonb_build_object('user', v.usr) ELSE '{{}}'::jsonb END
        || jsonb_build_object('sources', coalesce(t.metadata -> 'sources', '{{}}'::jsonb)
            || CASE WHEN cur.wf_wins THEN jsonb_build_object('workflow_id',
                   jsonb_build_object('rank', v.wf_rank, 'attribute', v.wf_src)) ELSE '{{}}'::jsonb END
            || CASE WHEN cur.q_wins THEN jsonb_build_object('query',
                   jsonb_build_object('rank', v.q_rank, 'at', v.q_at, 'attribute', v.q_src))
                   ELSE '{{}}'::jsonb END
            || CASE WHEN cur.usr_wins THEN jsonb_build_object('user',
                   jsonb_build_object('rank', v.usr_rank, 'attribute', v.usr_src)) ELSE '{{}}'::jsonb END)
FROM v
JOIN cur ON cur.trace_id = v.tid
LEFT JOIN cost ON cost.trace_id = v.tid
LEFT JOIN tok ON tok.trace_id = v.tid
LEFT JOIN root ON root.trace_id = v.tid
LEFT JOIN first_span ON first_span.trace_id = v.tid
WHERE t.trace_id = v.tid
"""

#: Totals only (cost backfill): traces in ``%(tid)s`` get their sums re-derived from stored spans.
RECOMPUTE_TOTALS = f"""
WITH v AS (SELECT DISTINCT unnest(%(tid)s::uuid[]) AS tid),
{_LEAF_TOTALS.rstrip().rstrip(",")}
UPDATE traces t SET
    total_cost = LEAST(coalesce(cost.total, 0), 9999.999999),
    total_tokens = coalesce(tok.tokens, '{{}}'::jsonb),
    metadata = t.metadata || jsonb_build_object('model_calls', coalesce(cost.calls, 0))
FROM v
LEFT JOIN cost ON cost.trace_id = v.tid
LEFT JOIN tok ON tok.trace_id = v.tid
WHERE t.trace_id = v.tid
"""


_WRITE_BATCH = _write_batch_sql()


#: Span rows that log records add to, locked for the merge (after the trace locks, like the upsert).
_SELECT_FOR_MERGE = """
SELECT span_id, status, inputs, outputs, evaluation, error, error_stack, metadata -> 'logs'
FROM spans WHERE span_id = ANY(%(sid)s::uuid[]) ORDER BY span_id FOR UPDATE
"""
_UPDATE_MERGED = """
UPDATE spans s
SET inputs = v.inputs, outputs = v.outputs, evaluation = v.evaluation, error = v.error,
    error_stack = v.error_stack, metadata = s.metadata || jsonb_build_object('logs', v.logs)
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS v(span_id uuid, inputs jsonb, outputs jsonb, evaluation jsonb,
          error text, error_stack text, logs jsonb)
WHERE s.span_id = v.span_id
"""


#: ``profiles.settings -> 'observability'`` of some users (``user_settings.UserSettingsCache``).
_LOAD_OBSERVABILITY = "SELECT id, settings -> 'observability' FROM profiles WHERE id = ANY(%(ids)s::uuid[])"
#: Supabase Vault: keys referenced as ``{"vault": "<name or id>"}`` in the settings.
_VAULT_SECRETS = """
SELECT id::text, name, decrypted_secret FROM vault.decrypted_secrets
WHERE id::text = ANY(%(refs)s::text[]) OR name = ANY(%(refs)s::text[])
"""
_TRACE_USERS = (
    "SELECT trace_id, user_id FROM traces WHERE trace_id = ANY(%(tid)s::uuid[]) AND user_id IS NOT NULL"
)
#: Content of traces whose user does not allow it (learned after their spans were stored): the same
#: result as ``records._without_content``, in SQL. Runs in the transaction that stored the content.
_STRIP_CONTENT = f"""
UPDATE spans SET
    inputs = CASE WHEN inputs = '{{}}'::jsonb THEN inputs ELSE %(omitted)s::jsonb END,
    outputs = CASE WHEN outputs = '{{}}'::jsonb THEN outputs ELSE %(omitted)s::jsonb END,
    metadata = (metadata - 'attributes_raw') || jsonb_build_object('content', 'omitted')
        || CASE WHEN jsonb_typeof(metadata -> 'attributes') = 'object' THEN jsonb_build_object('attributes',
               (SELECT coalesce(jsonb_object_agg(a.k, a.v), '{{}}'::jsonb)
                FROM jsonb_each(metadata -> 'attributes') AS a(k, v)
                WHERE NOT (a.k = ANY(%(content_attrs)s::text[]) OR a.k LIKE ANY(%(flat_like)s::text[]))))
           ELSE '{{}}'::jsonb END
        || CASE WHEN jsonb_typeof(metadata -> 'events') = 'array' THEN jsonb_build_object('events',
               (SELECT jsonb_agg(CASE WHEN e ->> 'name' = '{OPERATION_DETAILS_EVENT}'
                                      THEN e || jsonb_build_object('attributes', %(omitted)s::jsonb)
                                      ELSE e END
                                 ORDER BY n)
                FROM jsonb_array_elements(metadata -> 'events') WITH ORDINALITY AS x(e, n)))
           ELSE '{{}}'::jsonb END
WHERE trace_id = ANY(%(tid)s::uuid[])
  AND ((inputs <> '{{}}'::jsonb AND inputs <> %(omitted)s::jsonb)
       OR (outputs <> '{{}}'::jsonb AND outputs <> %(omitted)s::jsonb))
"""
_STRIP_QUERY = """
UPDATE traces SET query = NULL, metadata = metadata || '{"content": "omitted"}'::jsonb
WHERE trace_id = ANY(%(tid)s::uuid[]) AND query IS NOT NULL
"""


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


_STRIP_PARAMS = {
    "omitted": _dumps(OMITTED),
    "content_attrs": sorted(CONTENT_ATTRIBUTES),
    "flat_like": [_like_prefix(p) for p in FLAT_PREFIXES],
}

#: Which of these users may not have content stored (given a loader that reads their settings).
ContentPolicy = Callable[[Collection[Any], Callable[[list[Any]], dict[Any, Any]]], set[Any]]


@dataclass
class WriteReport:
    """Outcome of one ``write``: rows stored, degraded (stored minus payload), dropped; log
    fragments merged into span rows, and fragments dropped."""

    written: int = 0
    degraded: int = 0
    dropped: int = 0
    merged: int = 0
    merge_dropped: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _FragmentHints:
    hints: Any
    started_at: datetime | None


def _trace_params(deltas: list[TraceDelta], limits: Limits, explicit_ids: bool) -> dict[str, list[Any]]:
    p: dict[str, list[Any]] = defaultdict(list)
    for d in deltas:
        p["tid"].append(d.trace_id)
        p["hex"].append(d.trace_hex)
        p["exec_id"].append(d.execution_id if explicit_ids else None)
        p["started_at"].append(d.started_at)
        p["meta"].append(encode_json(d.metadata, limits.max_payload_chars)[0])
        p["wf_rank"].append(d.workflow[0])
        p["wf"].append(d.workflow[1])
        p["wf_src"].append(d.workflow[2])
        user = d.user
        p["usr"].append(clean_text(user[1], 1000)[0] if user else None)
        p["usr_uuid"].append(d.user_uuid)
        p["usr_rank"].append(user[0] if user else None)
        p["usr_src"].append(user[2] if user else None)
        q = d.query
        query = clean_text(q[2], limits.max_payload_chars)[0] if q else None
        p["q"].append(limits.scrub(query) if query and limits.scrub is not None else query)
        p["q_rank"].append(q[0] if q else None)
        p["q_at"].append(q[1] if q else None)
        p["q_src"].append(q[3] if q else None)
    return p


@dataclass(slots=True)
class _ChildFold:
    """What a batch's children tell their parent: ids, HTTP resend count, rate-limit info."""

    ids: list[str] = field(default_factory=list)
    max_retry: int = 0
    limits: dict[str, Any] = field(default_factory=dict)


def _fold_children(spans: list[EncodedSpan]) -> dict[Any, _ChildFold]:
    folds: dict[Any, _ChildFold] = defaultdict(_ChildFold)
    for s in spans:
        if s.parent_span_id is None:
            continue
        fold = folds[s.parent_span_id]
        fold.ids.append(str(s.span_id))
        if s.span_type == "http":  # HTTP client spans under a model call: retries, 429s, headers
            fold.max_retry = max(fold.max_retry, s.retry_count)
            fold.limits.update(s.api_limits_obj)
    for fold in folds.values():
        fold.ids.sort()
    return folds


def _span_rows_json(spans: list[EncodedSpan], folds: dict[Any, _ChildFold]) -> str:
    """The batch as one JSON array of the rows ``encode_span`` made, each closed with its
    ``child_spans``. Children in the same batch are folded into their parent's row here (their ids,
    HTTP resend count and rate-limit info), not by a later UPDATE: a key repeated at the end of a
    JSON object wins when PostgreSQL reads it as ``jsonb``."""
    rows = []
    for s in spans:
        fold = folds.get(s.span_id)
        if fold is None:
            rows.append(s.row[:-1] + ',"child_spans":[]}')
            continue
        extra = f',"child_spans":{_dumps(fold.ids)}'
        if fold.max_retry > s.retry_count:
            extra += f',"retry_count":{fold.max_retry}'
        if fold.limits:
            extra += f',"api_limits":{encode_json({**s.api_limits_obj, **fold.limits}, 10_000)[0]}'
        rows.append(s.row[:-1] + extra + "}")
    return "[" + ",".join(rows) + "]"


def _placeholder_params(spans: list[EncodedSpan]) -> dict[str, list[Any]]:
    in_batch = {s.span_id for s in spans}
    seen: set[Any] = set()
    p: dict[str, list[Any]] = {"sid": [], "tid": [], "meta": []}
    for s in spans:
        pid = s.parent_span_id
        if pid is None or pid in in_batch or pid in seen:
            continue
        seen.add(pid)
        p["sid"].append(pid)
        p["tid"].append(s.trace_id)
        p["meta"].append(
            encode_json(
                {"placeholder": True, "otel": {"trace_id": s.hints.trace_hex, "span_id": s.parent_hex}},
                10_000,
            )[0]
        )
    return p


def _children_params(folds: dict[Any, _ChildFold]) -> dict[str, list[Any]]:
    """Children whose parent row is not in the batch (a placeholder, or stored earlier)."""
    p: dict[str, list[Any]] = {"pid": [], "children": [], "max_retry": [], "limits": []}
    for pid in sorted(folds):
        fold = folds[pid]
        p["pid"].append(pid)
        p["children"].append(",".join(fold.ids))
        p["max_retry"].append(fold.max_retry)
        p["limits"].append(encode_json(fold.limits, 10_000)[0])
    return p


#: Hands out a connection for one transaction, waiting at most ``timeout`` seconds (a pool's
#: ``connection`` method fits).
ConnectionSource = Callable[[float | None], AbstractContextManager[psycopg.Connection]]


def _sever(conn: psycopg.Connection) -> None:
    """Shut the connection's socket down under libpq, so a read blocked on a silent network
    (no RST, no FIN: a partition, a dead NAT entry) fails now instead of never."""
    try:
        dup = socket.socket(fileno=os.dup(conn.pgconn.socket))
    except (OSError, psycopg.Error):
        return
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        dup.close()


@contextmanager
def _watchdog(conn: psycopg.Connection, seconds: float) -> Iterator[None]:
    timer = threading.Timer(seconds, _sever, args=(conn,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def _isolating(
    items: list[Any], write: Callable[[list[Any]], None], refused: Callable[[Any, str], None]
) -> int:
    """Write ``items``; on a data error split the batch in halves until the offending item is
    alone, and hand it to ``refused``. Returns how many were written as they were. Connection
    errors propagate (the caller retries)."""
    try:
        write(items)
        return len(items)
    except DATA_ERRORS as exc:
        if len(items) > 1:
            mid = len(items) // 2
            return _isolating(items[:mid], write, refused) + _isolating(items[mid:], write, refused)
        error = _one_line(exc)
    refused(items[0], error)
    return 0


def _fragment_refused(report: WriteReport) -> Callable[[LogFragment, str], None]:
    def refused(fragment: LogFragment, error: str) -> None:
        report.merge_dropped += 1
        report.errors.append(error)
        logger.error("otel-pg-exporter: dropped log records of span %s: %s", fragment.span_hex, error)

    return refused


class SpanWriter:
    """Writes batches of encoded spans in one transaction each; isolates rows the database refuses.

    ``transaction_timeout_s`` bounds one transaction on the client side: past it the socket is
    shut down, which surfaces as a connection error (retried or spooled by the caller)."""

    def __init__(
        self,
        connection: ConnectionSource,
        limits: Limits | None = None,
        transaction_timeout_s: float = 30.0,
        schema: str | None = None,
        content_policy: ContentPolicy | None = None,
    ) -> None:
        self._connection = connection
        self._limits = limits or Limits()
        self._transaction_timeout_s = transaction_timeout_s
        self._content_policy = content_policy
        self._vault_warned = False
        # set per transaction (SET LOCAL), so it also holds behind transaction-mode poolers; the
        # name travels quoted, as a bound parameter
        self._search_path = local_search_path(schema)

    def _begin(self, cur: psycopg.Cursor[Any]) -> None:
        if self._search_path is not None:
            cur.execute(_SET_SEARCH_PATH, {"search_path": self._search_path})

    @contextmanager
    def _transaction_cursor(self, timeout: float | None) -> Iterator[psycopg.Cursor[Any]]:
        """One transaction on a pooled connection, bounded by the watchdog, search_path set."""
        with (
            self._connection(timeout) as conn,
            _watchdog(conn, self._transaction_timeout_s),
            conn.transaction(),
            conn.cursor() as cur,
        ):
            self._begin(cur)
            yield cur

    def load_observability(
        self, user_ids: list[Any], cur: psycopg.Cursor[Any] | None = None
    ) -> dict[Any, Any]:
        """Raw ``observability`` objects of ``user_ids`` (absent users are missing from the result).
        With ``cur``, inside that transaction (under a savepoint: a failure leaves it usable)."""
        if cur is not None:
            with cur.connection.transaction():
                return self._load_observability(cur, user_ids)
        # a short wait: a lookup must not hold up the batch when the pool is exhausted or down
        wait = min(2.0, self._transaction_timeout_s / 4)
        with (
            self._connection(wait) as conn,
            _watchdog(conn, wait * 2),
            conn.transaction(),
            conn.cursor() as own,
        ):
            self._begin(own)
            return self._load_observability(own, user_ids)

    def _load_observability(self, cur: psycopg.Cursor[Any], user_ids: list[Any]) -> dict[Any, Any]:
        cur.execute(_LOAD_OBSERVABILITY, {"ids": user_ids})
        raw = dict(cur.fetchall())
        refs = vault_refs(raw)
        if not refs:
            return raw
        try:
            with cur.connection.transaction():  # a savepoint: no vault, or no grant, is not fatal
                cur.execute(_VAULT_SECRETS, {"refs": sorted(refs)})
                secrets: dict[str, str] = {}
                for secret_id, name, value in cur.fetchall():
                    if isinstance(value, str):
                        secrets[secret_id] = value
                        if name:
                            secrets[name] = value
        except psycopg.Error as exc:
            secrets = {}
            if not self._vault_warned:
                self._vault_warned = True
                logger.warning(
                    "otel-pg-exporter: vault references in profiles.settings cannot be read (%s); "
                    "those forwarding targets are skipped",
                    type(exc).__name__,
                )
        return {uid: resolve_vault_refs(value, secrets) for uid, value in raw.items()}

    def _strip_forbidden_content(self, cur: psycopg.Cursor[Any], trace_ids: list[Any]) -> None:
        """Traces of this transaction whose user does not allow content lose it before commit."""
        if self._content_policy is None:
            return
        cur.execute(_TRACE_USERS, {"tid": trace_ids})
        users = dict(cur.fetchall())
        if not users:
            return
        forbidden = self._content_policy(set(users.values()), lambda ids: self.load_observability(ids, cur))
        stripped = sorted(t for t, u in users.items() if u in forbidden)
        if stripped:
            cur.execute(_STRIP_CONTENT, {**_STRIP_PARAMS, "tid": stripped})
            cur.execute(_STRIP_QUERY, {"tid": stripped})

    def write(
        self, items: Sequence[EncodedSpan | LogFragment], *, timeout: float | None = None
    ) -> WriteReport:
        """Store spans and merge log fragments. Connection errors propagate (the caller retries);
        data errors are isolated by splitting the batch until the offending item is found: a span is
        then stored without its payload, or dropped (and counted) if even that fails; a fragment is
        dropped and counted."""
        report = WriteReport()
        spans = [i for i in items if isinstance(i, EncodedSpan)]
        fragments = [i for i in items if isinstance(i, LogFragment)]
        if spans:
            refused = self._span_refused(report, timeout)  # counts what it stores degraded itself
            stored = _isolating(spans, lambda b: self._write_batch(b, timeout), refused)
            report.written += stored
        if fragments:
            merge = lambda b: self._merge_transaction(b, timeout)  # noqa: E731
            merged = _isolating(fragments, merge, _fragment_refused(report))
            report.merged += merged
        return report

    def _merge_transaction(self, fragments: list[LogFragment], timeout: float | None) -> None:
        """Log fragments into span rows: lock the traces, make sure trace and span rows exist
        (placeholders until the span arrives), merge under the row locks, refresh the traces."""
        hinted = [_FragmentHints(fragment_hints(f), ns_to_datetime(f.first_ns)) for f in fragments]
        trace_p = _trace_params(trace_deltas(hinted), self._limits, explicit_ids=False)
        placeholders: dict[str, list[Any]] = {"sid": [], "tid": [], "meta": []}
        by_span: dict[Any, list[LogFragment]] = defaultdict(list)
        for f in fragments:
            if f.span_id not in by_span:
                placeholders["sid"].append(f.span_id)
                placeholders["tid"].append(f.trace_id)
                placeholders["meta"].append(
                    _dumps({"placeholder": True, "otel": {"trace_id": f.trace_hex, "span_id": f.span_hex}})
                )
            by_span[f.span_id].append(f)
        cap = self._limits.max_payload_chars
        with self._transaction_cursor(timeout) as cur:
            cur.execute(_LOCK_TRACES, trace_p)
            cur.execute(_UPSERT_TRACES, trace_p)
            cur.execute(_INSERT_PLACEHOLDERS, placeholders)
            cur.execute(_SELECT_FOR_MERGE, {"sid": sorted(by_span)})
            rows = []
            for span_id, *stored in cur.fetchall():
                content = stored_from_row(stored)
                changed = False
                for fragment in by_span.get(span_id, ()):
                    content, did = merge_fragment(content, fragment)
                    changed = changed or did
                if changed:
                    rows.append(
                        "{"
                        + f'"span_id":"{span_id}",'
                        + f'"inputs":{encode_json(content.inputs, cap)[0]},'
                        + f'"outputs":{encode_json(content.outputs, cap)[0]},'
                        + f'"evaluation":{encode_json(content.evaluation, cap)[0]},'
                        + f'"error":{_dumps(content.error)},'
                        + f'"error_stack":{_dumps(content.error_stack)},'
                        + f'"logs":{encode_json(content.logs, cap)[0]}'
                        + "}"
                    )
            if rows:
                cur.execute(_UPDATE_MERGED, {"rows": "[" + ",".join(rows) + "]"})
            cur.execute(_RECOMPUTE_TRACES, trace_p)
            self._strip_forbidden_content(cur, trace_p["tid"])

    def _span_refused(self, report: WriteReport, timeout: float | None) -> Callable[[EncodedSpan, str], None]:
        """A span the database refused: store it without its payload, else drop it (counted)."""

        def refused(span: EncodedSpan, error: str) -> None:
            try:
                self._write_batch([_degraded(span, error)], timeout)
                report.degraded += 1
                report.written += 1
                logger.warning("otel-pg-exporter: span %s stored without payload: %s", span.name[:80], error)
            except DATA_ERRORS as exc:
                report.dropped += 1
                report.errors.append(error)
                logger.error(
                    "otel-pg-exporter: dropped span %s: %s / %s", span.name[:80], error, _one_line(exc)
                )

        return refused

    def _write_batch(self, spans: list[EncodedSpan], timeout: float | None) -> None:
        deltas = trace_deltas(spans)
        try:
            self._transaction(spans, deltas, timeout, explicit_ids=True)
        except pg_errors.UniqueViolation as exc:
            if exc.diag.constraint_name != "traces_execution_id_key":
                raise
            # Two traces raced for one explicit execution id: keep the trace hex ids instead.
            self._transaction(spans, deltas, timeout, explicit_ids=False)

    def _transaction(
        self, spans: list[EncodedSpan], deltas: list[TraceDelta], timeout: float | None, explicit_ids: bool
    ) -> None:
        trace_p = _trace_params(deltas, self._limits, explicit_ids)
        placeholders = _placeholder_params(spans)
        folds = _fold_children(spans)
        in_batch = {s.span_id for s in spans}
        children = _children_params({pid: f for pid, f in folds.items() if pid not in in_batch})
        rows = _span_rows_json(sorted(spans, key=lambda s: s.span_id), folds)
        params = {
            **trace_p,
            "rows": rows,
            "ph_sid": placeholders["sid"],
            "ph_tid": placeholders["tid"],
            "ph_meta": placeholders["meta"],
        }
        with self._transaction_cursor(timeout) as cur:
            cur.execute(_LOCK_TRACES, trace_p)
            cur.execute(_WRITE_BATCH, params)
            existed = {row[0] for row in cur.fetchall()}
            if children["pid"]:
                cur.execute(_MERGE_CHILDREN, children)
            if existed:  # traces stored before: their totals come from all their stored spans
                keep = [i for i, tid in enumerate(trace_p["tid"]) if tid in existed]
                cur.execute(_RECOMPUTE_TRACES, {k: [v[i] for i in keep] for k, v in trace_p.items()})
            self._strip_forbidden_content(cur, trace_p["tid"])


def _degraded(span: EncodedSpan, error: str) -> EncodedSpan:
    """The span without its payload columns, for a row the database refused as it was."""
    name, _ = clean_text(span.name.encode("ascii", "replace").decode(), 255)
    meta, _ = encode_json(
        {
            "otel": {"trace_id": span.hints.trace_hex},
            "write_error": error,
            "dropped_columns": [
                "inputs",
                "outputs",
                "metadata",
                "evaluation",
                "api_limits",
                "error",
                "error_stack",
            ],
        },
        10_000,
    )
    try:
        columns = span.columns()
    except ValueError:  # the row itself is not JSON: keep only what the writer holds
        columns = {"status": "completed", "duration_ms": 0, "tokens": {}, "cost": "0", "retry_count": 0}

    def ascii_or_none(value: Any) -> str | None:
        return str(value).encode("ascii", "replace").decode() if value else None

    values = {
        **columns,
        "span_id": span.span_id,
        "trace_id": span.trace_id,
        "parent_span_id": span.parent_span_id,
        "span_type": ascii_or_none(span.span_type) or "other",
        "name": name or "(unnamed)",
        "started_at": span.started_at,
        "tokens": encode_json(columns.get("tokens") or {}, 10_000)[0],
        "inputs": "{}",
        "outputs": "{}",
        "api_limits": "{}",
        "evaluation": "{}",
        "metadata": meta,
        "error": None,
        "error_stack": None,
        "model": ascii_or_none(columns.get("model")),
        "provider": ascii_or_none(columns.get("provider")),
        "error_type": ascii_or_none(columns.get("error_type")),
    }
    for column in ("completed_at", "status", "duration_ms", "cost", "retry_count", "timeout"):
        values.setdefault(column, None)
    return replace(span, name=values["name"], row=row_json(values), api_limits_obj={})
