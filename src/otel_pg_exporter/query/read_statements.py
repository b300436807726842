"""The read side's statements, as data (``TraceStore`` runs them in read-only transactions)."""

from __future__ import annotations

TRACE_COLUMNS = """t.trace_id, t.execution_id, t.workflow_id, t.user_id, t.status, t.started_at,
    t.completed_at, t.total_duration_ms, t.total_tokens, t.total_cost, t.error,
    left(t.query, %(preview)s) AS query_preview, t.metadata ->> 'session_id' AS session_id,
    left(t.metadata ->> 'user', 200) AS user_raw"""

#: Per page, for the visible traces only: their models and span counts (one query, not per row).
PAGE_EXTRAS = """
SELECT s.trace_id,
       array_remove(array_agg(DISTINCT s.model ORDER BY s.model), NULL) AS models,
       count(*) AS span_count,
       count(*) FILTER (WHERE s.status IN ('failed', 'cancelled')) AS failed_spans
FROM spans s WHERE s.trace_id = ANY(%(ids)s) GROUP BY s.trace_id"""

TRACE = "SELECT t.*, t.metadata ->> 'session_id' AS session_id FROM traces t WHERE t.trace_id = %(id)s"
#: Whole span rows come from ``{spans}``: the ``spans_annotated`` view (migration 009: ``evaluation``
#: with the span's annotations) where it exists, else the seed's ``spans``.
SPANS_OF_TRACE = "SELECT * FROM {spans} WHERE trace_id = %(id)s ORDER BY started_at NULLS FIRST, span_id"
SPAN = "SELECT * FROM {spans} WHERE span_id = %(id)s"
SPAN_LINKS_OF_TRACE = "SELECT span_id, parent_span_id, started_at FROM spans WHERE trace_id = %(id)s"
SPANS_BY_ID = "SELECT * FROM {spans} WHERE span_id = ANY(%(ids)s)"
#: Migration 009 is installed and this role may read it (a reader role without the grant reads spans).
HAS_ANNOTATIONS = """SELECT to_regclass('otel_annotations') IS NOT NULL
       AND to_regclass('spans_annotated') IS NOT NULL
       AND has_table_privilege('otel_annotations', 'SELECT')
       AND has_table_privilege('spans_annotated', 'SELECT')"""

ANNOTATION_COLUMNS = """a.annotation_id, a.target_kind, a.trace_id, a.span_id, a.session_id, a.name, a.score,
    a.label, a.explanation, a.correction, a.annotator_kind, a.annotator, a.identifier, a.source,
    a.metadata, a.created_at, a.updated_at"""
#: A trace's own judgements and its session's (its spans' come with the spans).
TRACE_ANNOTATIONS = f"""
SELECT {ANNOTATION_COLUMNS} FROM otel_annotations a
WHERE (a.target_kind = 'trace' AND a.trace_id = %(id)s)
   OR (a.target_kind = 'session' AND a.session_id = %(session)s)
ORDER BY a.updated_at DESC LIMIT 200"""
#: Per page: each visible trace's judgements of it or any of its spans, as badges.
PAGE_BADGES = """
SELECT a.trace_id, a.name, a.label, a.score, a.annotator_kind, count(*) AS n
FROM otel_annotations a WHERE a.trace_id = ANY(%(ids)s)
GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, max(a.updated_at) DESC"""

SESSIONS = """
SELECT t.metadata ->> 'session_id' AS session_id, count(*) AS traces,
       min(t.started_at) AS first_started_at, max(t.started_at) AS last_started_at,
       sum(coalesce(t.total_cost, 0)) AS total_cost,
       sum(coalesce((t.total_tokens ->> 'total')::bigint, 0)) AS total_tokens,
       array_remove(array_agg(DISTINCT t.user_id), NULL) AS users,
       count(*) FILTER (WHERE t.status = 'failed') AS failed
FROM traces t
WHERE t.metadata ? 'session_id' AND t.started_at >= %(since)s AND t.started_at < %(until)s
GROUP BY 1 ORDER BY max(t.started_at) DESC LIMIT %(limit)s"""

SESSION_TRACES = f"""
SELECT {TRACE_COLUMNS}, t.query
FROM traces t WHERE t.metadata @> %(session)s ORDER BY t.started_at, t.trace_id LIMIT %(limit)s"""

#: What a trace answered: the output of its root span (for conversation replays).
ROOT_OUTPUTS = """
SELECT trace_id, outputs FROM spans
WHERE trace_id = ANY(%(ids)s) AND parent_span_id IS NULL AND status <> 'pending'"""

#: The most frequent error types of failed spans in a window, each with its latest spans.
FAILURES = """
SELECT coalesce(s.error_type, '(no type)') AS error_type, count(*) AS spans,
       count(DISTINCT s.trace_id) AS traces, max(s.started_at) AS last_seen,
       (array_agg(s.span_id ORDER BY s.started_at DESC))[1:%(examples)s] AS example_spans,
       (array_agg(left(s.error, 300) ORDER BY s.started_at DESC))[1] AS last_error
FROM spans s
WHERE s.status IN ('failed', 'cancelled') AND s.started_at >= %(since)s AND s.started_at < %(until)s
GROUP BY 1 ORDER BY count(*) DESC, max(s.started_at) DESC LIMIT %(limit)s"""

#: The export's spans (``query.export``): which spans of the traces become lines.
EXPORT_SELECTIONS: dict[str, str] = {
    "root": "s.parent_span_id IS NULL AND s.status <> 'pending'",
    "llm": "s.span_type IN ('llm', 'embedding')",
    "judged": "s.evaluation ? 'annotations'",
    "all": "s.status <> 'pending'",
}
EXPORT_SPANS = """
SELECT s.trace_id, s.span_id, t.workflow_id AS workflow, t.query, s.name, s.span_type, s.status,
       s.model, s.provider, s.inputs AS input, s.outputs AS output, s.tokens, s.cost, s.error,
       s.error_type, s.started_at, s.duration_ms,
       coalesce(s.evaluation -> 'annotations', '[]'::jsonb) AS annotations
FROM {spans} s JOIN traces t ON t.trace_id = s.trace_id
WHERE s.trace_id = ANY(%(ids)s) AND {selection}
ORDER BY t.started_at DESC, s.trace_id, s.started_at NULLS FIRST, s.span_id"""
#: The judgements of many traces themselves (and of their sessions), for the export's lines.
EXPORT_TRACE_ANNOTATIONS = """
SELECT t.trace_id, jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
           'target', a.target_kind, 'name', a.name, 'score', a.score, 'label', a.label,
           'explanation', a.explanation, 'correction', a.correction, 'annotator_kind', a.annotator_kind,
           'annotator', nullif(a.annotator, ''), 'identifier', nullif(a.identifier, '')))
         ORDER BY a.updated_at DESC) AS annotations
FROM traces t JOIN otel_annotations a
  ON (a.target_kind = 'trace' AND a.trace_id = t.trace_id)
  OR (a.target_kind = 'session' AND a.session_id = t.metadata ->> 'session_id')
WHERE t.trace_id = ANY(%(ids)s)
GROUP BY t.trace_id"""
