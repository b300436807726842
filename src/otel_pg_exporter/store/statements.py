"""Every SQL statement the span writer sends, as data: one constant per statement, built once.

Parameters travel as JSON documents (``%(traces)s``, ``%(rows)s``, ``%(placeholders)s``,
``%(children)s``) that the server reads with ``jsonb_to_recordset``: one text parameter per
statement, dumped by ``orjson`` in C on the client, parsed in C on the server.

Per batch (``store.writer.SpanWriter``), in one transaction:

1. ``LOCK_TRACES``: a transaction advisory lock per trace, in one canonical order (sorted keys), so
   concurrent writers of the same traces serialise instead of deadlocking;
2. ``WRITE_BATCH``: one statement that parses the rows once, inserts the traces that do not exist
   yet *complete* (their totals from the batch: no other span of theirs can exist), the
   placeholders for parents outside the batch, and the spans (a real span replaces its
   placeholder, keeping the children already linked); it returns the traces that existed already;
3. ``MERGE_CHILDREN`` (only when a parent is outside the batch): ``child_spans``, HTTP resend counts
   and rate-limit info into the parent rows;
4. ``RECOMPUTE_TRACES`` (only for the traces that existed): each trace row from its stored spans:
   status, times, and totals over leaf model calls.

Recomputing instead of adding deltas means a re-exported batch, a retry after a lost commit, or
two exporters sharing a trace all end with the same exact totals.
"""

from __future__ import annotations

from ..pipeline.conventions import (
    CONTENT_ATTRIBUTES,
    FLAT_PREFIXES,
    MODEL_CALL_TYPES,
    OPERATION_DETAILS_EVENT,
)
from ..pipeline.encoding import OMITTED, ROW_COLUMNS
from ..pipeline.sanitize import encode_json
from ..schema.tables import COST_MAX_TEXT, SPAN_RECORD_TYPES

_MAX = 2_147_483_647

# Serialise writers of the same trace before touching it. Without this, two transactions inserting
# one new trace race on the second unique index (traces.execution_id) under ON CONFLICT and
# PostgreSQL reports a deadlock (speculative insertion waits on one index, the other on the second).
# Keys are taken in one canonical order (sorted), so the advisory locks cannot deadlock either.
LOCK_TRACES = """
SELECT pg_advisory_xact_lock(k)
FROM (SELECT DISTINCT hashtextextended(t.tid::text, 7261) AS k
      FROM jsonb_to_recordset(%(traces)s::jsonb) AS t(tid uuid) ORDER BY 1) AS s
"""

SET_SEARCH_PATH = "SELECT set_config('search_path', %(search_path)s, true)"

#: The batch's trace deltas (``store.batch.trace_rows``) as a relation ``v``, one row per trace.
TRACE_DELTAS = """v AS (
    SELECT * FROM jsonb_to_recordset(%(traces)s::jsonb) AS v(
        tid uuid, hex text, exec_id text, meta jsonb, started_at timestamp,
        wf text, wf_rank int4, wf_src text, usr text, usr_uuid uuid, usr_rank int4, usr_src text,
        q text, q_rank int4, q_at int8, q_src text)
)"""

#: A new trace's ``execution_id``: the explicit id when no other trace holds it, else the hex id.
_EXECUTION_ID = """CASE WHEN v.exec_id IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM traces o WHERE o.execution_id = v.exec_id)
            THEN v.exec_id ELSE v.hex END"""

#: Trace rows for log fragments (their spans may not exist yet): placeholders, or a row lock.
UPSERT_TRACES = f"""
WITH {TRACE_DELTAS}
INSERT INTO traces (trace_id, workflow_id, execution_id, started_at, status, metadata)
SELECT v.tid, v.wf, {_EXECUTION_ID}, v.started_at, 'running', '{{}}'::jsonb
FROM v
ORDER BY v.tid
ON CONFLICT (trace_id) DO UPDATE SET workflow_id = traces.workflow_id WHERE false
"""
# "DO UPDATE ... WHERE false" writes nothing but still locks the existing row (PostgreSQL docs).

#: The ``%(placeholders)s`` document as a relation ``p(sid, tid, meta)``.
_PLACEHOLDER_ROWS = "jsonb_to_recordset(%(placeholders)s::jsonb) AS p(sid uuid, tid uuid, meta jsonb)"
_PLACEHOLDERS_INSERT = f"""INSERT INTO spans (span_id, trace_id, span_type, name, status, metadata)
SELECT p.sid, p.tid, 'other', '(pending)', 'pending', p.meta
FROM {_PLACEHOLDER_ROWS}
ORDER BY p.sid
ON CONFLICT (span_id) DO NOTHING"""
INSERT_PLACEHOLDERS = _PLACEHOLDERS_INSERT + "\n"

#: Column types for ``jsonb_to_recordset`` (``schema.tables``): the batch travels as one JSON
#: document that the server parses in C, instead of one array parameter per column dumped by the client.
RECORD_TYPES = SPAN_RECORD_TYPES
INSERT_COLUMNS = tuple(RECORD_TYPES)
_UPDATE_ON_CONFLICT = [c for c in INSERT_COLUMNS if c not in ("span_id", "trace_id")]
# the rows ``pipeline.encoding.encode_span`` makes hold every column but child_spans, which the batch adds
assert tuple(c for c in INSERT_COLUMNS if c != "child_spans") == ROW_COLUMNS


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


def upsert_spans_sql(source: str | None = None, where: str = "true") -> str:
    """The spans upsert, from the batch document (``%(rows)s``), or from a relation ``source``
    with the same columns."""
    record = ", ".join(f"{c} {RECORD_TYPES[c]}" for c in INSERT_COLUMNS)
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
    columns = ", ".join(INSERT_COLUMNS)
    origin = f"{source} v" if source else f"jsonb_to_recordset(%(rows)s::jsonb) AS v({record})"
    return (
        f"INSERT INTO spans ({columns})\n"
        f"SELECT {', '.join('v.' + c for c in INSERT_COLUMNS)}\n"
        f"FROM {origin}\n"
        f"WHERE {where}\n"
        "ORDER BY v.span_id\n"
        f"ON CONFLICT (span_id) DO UPDATE SET {', '.join(sets)}\n"
        # a real row is final: a re-export changes nothing; placeholders and live (running) rows
        # get filled in
        "WHERE spans.status IN ('pending', 'running')"
    )


UPSERT_SPANS = upsert_spans_sql()

_MODEL_TYPES_SQL = ", ".join(f"'{t}'" for t in sorted(MODEL_CALL_TYPES))


def _no_model_child(source: str) -> str:
    """``s`` has no llm/embedding child: an index probe in ``spans``; in a batch's CTE (no index,
    no row estimate) one hashed set of the model calls' parents."""
    if source == "spans":
        return f"""NOT EXISTS (SELECT 1 FROM spans c WHERE c.parent_span_id = s.span_id
                      AND c.span_type IN ({_MODEL_TYPES_SQL}))"""
    return f"""s.span_id NOT IN (SELECT c.parent_span_id FROM {source} c
                           WHERE c.parent_span_id IS NOT NULL AND c.span_type IN ({_MODEL_TYPES_SQL}))"""


def leaf_totals(source: str, scope: str) -> str:
    """CTEs ``leaf``, ``cost`` and ``tok``: the trace-total rule over the span rows of ``source``
    (``spans``, or a CTE holding a batch's rows), for the traces ``scope`` admits (a condition on
    ``s.trace_id``). Sums over leaf model calls: llm/embedding spans without an llm/embedding
    child (roll-ups never count)."""
    return f"""leaf AS (
    SELECT s.trace_id, s.cost, s.tokens FROM {source} s
    WHERE {scope} AND s.span_type IN ({_MODEL_TYPES_SQL})
      AND s.status NOT IN ('pending', 'running')
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


#: The trace ids a recompute of stored spans covers (those of CTE ``v``).
_STORED_SCOPE = "s.trace_id IN (SELECT tid FROM v)"
#: The trace-total rule over stored spans, for the trace ids in CTE ``v(tid)``.
_STORED_LEAF_TOTALS = leaf_totals("spans", _STORED_SCOPE)


def _root_and_first_span(source: str, scope: str) -> str:
    """CTEs ``root`` (the trace's real root span: parent-less, not a placeholder) and ``first_span``
    (its earliest start), over the span rows of ``source`` that ``scope`` admits."""
    return f"""root AS (
    SELECT DISTINCT ON (s.trace_id) s.trace_id, s.status, s.started_at, s.completed_at, s.duration_ms, s.error
    FROM {source} s WHERE {scope} AND s.parent_span_id IS NULL AND s.status <> 'pending'
    ORDER BY s.trace_id, s.started_at
),
first_span AS (
    SELECT s.trace_id, min(s.started_at) AS started_at FROM {source} s WHERE {scope} GROUP BY s.trace_id
),
"""


#: Trace columns from the CTEs above: the root's status (running while it runs or has not come),
#: totals over leaf model calls.
_TRACE_STATUS = """CASE WHEN root.status IS NULL THEN 'running'
                WHEN root.status IN ('failed', 'cancelled', 'running') THEN root.status
                ELSE 'completed' END"""
_TOTAL_COST = f"LEAST(coalesce(cost.total, 0), {COST_MAX_TEXT})"
_TOTAL_TOKENS = "coalesce(tok.tokens, '{}'::jsonb)"


def _won_metadata(wf: str, q: str, usr: str, sources: str) -> str:
    """What a trace delta adds to ``traces.metadata`` where it wins (``wf``, ``q``, ``usr``: SQL
    conditions): the model-call count, the raw user, and which attribute each column came from,
    merged over ``sources`` (the ones already recorded)."""
    return f"""jsonb_build_object('model_calls', coalesce(cost.calls, 0))
        || CASE WHEN {usr} THEN jsonb_build_object('user', v.usr) ELSE '{{}}'::jsonb END
        || jsonb_build_object('sources', {sources}
            || CASE WHEN {wf} THEN jsonb_build_object('workflow_id',
                   jsonb_build_object('rank', v.wf_rank, 'attribute', v.wf_src)) ELSE '{{}}'::jsonb END
            || CASE WHEN {q} THEN jsonb_build_object('query',
                   jsonb_build_object('rank', v.q_rank, 'at', v.q_at, 'attribute', v.q_src))
                   ELSE '{{}}'::jsonb END
            || CASE WHEN {usr} THEN jsonb_build_object('user',
                   jsonb_build_object('rank', v.usr_rank, 'attribute', v.usr_src)) ELSE '{{}}'::jsonb END)"""


#: For a new trace every candidate the batch has wins (nothing is recorded yet).
_NEW_Q_WINS = "v.q_rank IS NOT NULL"
_NEW_USR_WINS = "v.usr_rank IS NOT NULL"


def _write_batch_sql() -> str:
    """See the module docstring, step 2. New traces get their totals from the batch (CTE ``b``)
    by the same rule as ``RECOMPUTE_TRACES`` over stored spans: a trace row that does not exist has
    no stored spans (the seed's foreign key), and the advisory lock keeps it so until commit. The
    seed's foreign keys are checked at the end of the statement, after every CTE ran."""
    record = ", ".join(f"{c} {RECORD_TYPES[c]}" for c in INSERT_COLUMNS)
    return f"""
WITH b AS MATERIALIZED (SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS b({record})),
{TRACE_DELTAS},
{leaf_totals("b", "true")}{_root_and_first_span("b", "true")}new_traces AS (
    INSERT INTO traces (trace_id, workflow_id, execution_id, started_at, completed_at, status,
                        total_duration_ms, total_cost, total_tokens, error, query, user_id, metadata)
    SELECT v.tid, v.wf, {_EXECUTION_ID},
           coalesce(root.started_at, first_span.started_at, v.started_at),
           root.completed_at,
           {_TRACE_STATUS},
           coalesce(root.duration_ms, 0),
           {_TOTAL_COST},
           {_TOTAL_TOKENS},
           root.error,
           CASE WHEN {_NEW_Q_WINS} THEN v.q END,
           CASE WHEN {_NEW_USR_WINS} THEN (SELECT p.id FROM profiles p WHERE p.id = v.usr_uuid) END,
           v.meta || {_won_metadata("true", _NEW_Q_WINS, _NEW_USR_WINS, "'{}'::jsonb")}
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
{_PLACEHOLDERS_INSERT}
),
-- spans of new traces cannot exist yet: a plain insert (no speculative insertion)
fresh AS (
    INSERT INTO spans ({", ".join(INSERT_COLUMNS)})
    SELECT {", ".join("b." + c for c in INSERT_COLUMNS)} FROM b
    WHERE b.trace_id IN (SELECT trace_id FROM new_traces)
    ORDER BY b.span_id
),
stored AS (
{upsert_spans_sql("b", "v.trace_id NOT IN (SELECT trace_id FROM new_traces)")}
)
SELECT v.tid FROM v WHERE v.tid NOT IN (SELECT trace_id FROM new_traces)
"""


WRITE_BATCH = _write_batch_sql()

MERGE_CHILDREN = """
UPDATE spans p
SET child_spans = ARRAY(SELECT DISTINCT c FROM unnest(p.child_spans || v.children) AS c ORDER BY c),
    retry_count = GREATEST(p.retry_count, v.max_retry),
    api_limits = p.api_limits || v.limits
FROM jsonb_to_recordset(%(children)s::jsonb) AS v(pid uuid, children text[], max_retry int4, limits jsonb)
WHERE p.span_id = v.pid
  AND NOT (v.children <@ p.child_spans AND v.max_retry <= p.retry_count AND p.api_limits @> v.limits)
"""

#: The sources a stored trace recorded so far (candidates that won before).
_STORED_SOURCES = "coalesce(t.metadata -> 'sources', '{}'::jsonb)"

RECOMPUTE_TRACES = f"""
WITH {TRACE_DELTAS},
{_STORED_LEAF_TOTALS}{_root_and_first_span("spans", _STORED_SCOPE)}cur AS (
    SELECT t.trace_id,
           v.wf_rank < coalesce((t.metadata #>> '{{sources,workflow_id,rank}}')::int, {_MAX}) AS wf_wins,
           (v.q_rank, v.q_at) < (coalesce((t.metadata #>> '{{sources,query,rank}}')::int, {_MAX}),
                                 coalesce((t.metadata #>> '{{sources,query,at}}')::int8, 9223372036854775807))
               AS q_wins,
           v.usr_rank < coalesce((t.metadata #>> '{{sources,user,rank}}')::int, {_MAX}) AS usr_wins
    FROM traces t JOIN v ON v.tid = t.trace_id
)
UPDATE traces t SET
    total_cost = {_TOTAL_COST},
    total_tokens = {_TOTAL_TOKENS},
    status = {_TRACE_STATUS},
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
        -- one resource per service: those already stored stay, new services are added
        || CASE WHEN v.meta ? 'resources' THEN jsonb_build_object('resources',
               (v.meta -> 'resources') || coalesce(t.metadata -> 'resources', '{{}}'::jsonb))
           ELSE '{{}}'::jsonb END
        || {_won_metadata("cur.wf_wins", "cur.q_wins", "cur.usr_wins", _STORED_SOURCES)}
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
{_STORED_LEAF_TOTALS.rstrip().rstrip(",")}
UPDATE traces t SET
    total_cost = {_TOTAL_COST},
    total_tokens = {_TOTAL_TOKENS},
    metadata = t.metadata || jsonb_build_object('model_calls', coalesce(cost.calls, 0))
FROM v
LEFT JOIN cost ON cost.trace_id = v.tid
LEFT JOIN tok ON tok.trace_id = v.tid
WHERE t.trace_id = v.tid
"""

#: Span rows that log records add to, locked for the merge (after the trace locks, like the upsert).
SELECT_FOR_MERGE = """
SELECT span_id, status, inputs, outputs, evaluation, error, error_stack, metadata -> 'logs'
FROM spans WHERE span_id = ANY(%(sid)s::uuid[]) ORDER BY span_id FOR UPDATE
"""
UPDATE_MERGED = """
UPDATE spans s
SET inputs = v.inputs, outputs = v.outputs, evaluation = v.evaluation, error = v.error,
    error_stack = v.error_stack, metadata = s.metadata || jsonb_build_object('logs', v.logs)
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS v(span_id uuid, inputs jsonb, outputs jsonb, evaluation jsonb,
          error text, error_stack text, logs jsonb)
WHERE s.span_id = v.span_id
"""

#: ``profiles.settings -> 'observability'`` of some users (``config.user_settings.UserSettingsCache``).
LOAD_OBSERVABILITY = "SELECT id, settings -> 'observability' FROM profiles WHERE id = ANY(%(ids)s::uuid[])"
#: Supabase Vault: keys referenced as ``{"vault": "<name or id>"}`` in the settings.
VAULT_SECRETS = """
SELECT id::text, name, decrypted_secret FROM vault.decrypted_secrets
WHERE id::text = ANY(%(refs)s::text[]) OR name = ANY(%(refs)s::text[])
"""
#: The users of the batch's traces (``%(traces)s``), for the content policy.
TRACE_USERS = """
SELECT t.trace_id, t.user_id FROM traces t
WHERE t.trace_id IN (SELECT v.tid FROM jsonb_to_recordset(%(traces)s::jsonb) AS v(tid uuid))
  AND t.user_id IS NOT NULL
"""
#: Content of traces whose user does not allow it (learned after their spans were stored): the same
#: result as ``records._without_content``, in SQL. Runs in the transaction that stored the content.
STRIP_CONTENT = f"""
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
STRIP_QUERY = """
UPDATE traces SET query = NULL, metadata = metadata || '{"content": "omitted"}'::jsonb
WHERE trace_id = ANY(%(tid)s::uuid[]) AND query IS NOT NULL
"""


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


#: The constant parameters of ``STRIP_CONTENT``.
STRIP_PARAMS = {
    "omitted": encode_json(OMITTED, 10_000)[0],
    "content_attrs": sorted(CONTENT_ATTRIBUTES),
    "flat_like": [_like_prefix(p) for p in FLAT_PREFIXES],
}
