"""Writing judgements: the ``otel_annotations`` statements (data) and the one function that runs them.

``UPSERT_ANNOTATIONS`` takes the rows of ``pipeline.annotations`` as one JSON parameter. In one
statement it resolves what the caller could not know (a span's trace, a session's id from the trace
row), keeps the last of several rows for one judgement, and inserts or updates: one judgement per
(target, name, annotator kind, annotator, identifier), so writing the same feedback twice updates it.
A row that would change nothing is not rewritten (``updated_at`` stays).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg

from ..pipeline.annotations import Target
from ..schema.tables import ANNOTATION_CORRECTION_MAX_BYTES

_FIELDS = f"""e.v ->> 'target_kind' AS target_kind,
       (e.v ->> 'trace_id')::uuid AS trace_id,
       (e.v ->> 'span_id')::uuid AS span_id,
       e.v ->> 'session_id' AS session_id,
       e.v ->> 'name' AS name,
       CASE WHEN jsonb_typeof(e.v -> 'score') = 'number' THEN (e.v ->> 'score')::float8 END AS score,
       e.v ->> 'label' AS label,
       e.v ->> 'explanation' AS explanation,
       CASE WHEN e.v -> 'correction' IS NULL OR jsonb_typeof(e.v -> 'correction') = 'null' THEN NULL
            WHEN octet_length((e.v -> 'correction')::text) <= {ANNOTATION_CORRECTION_MAX_BYTES}
            THEN e.v -> 'correction'
       END AS correction,
       e.v ->> 'annotator_kind' AS annotator_kind,
       coalesce(e.v ->> 'annotator', '') AS annotator,
       coalesce(e.v ->> 'identifier', '') AS identifier,
       coalesce(e.v ->> 'source', 'sql') AS source,
       CASE WHEN jsonb_typeof(e.v -> 'metadata') = 'object' THEN e.v -> 'metadata' ELSE '{{}}'::jsonb END
           AS metadata,
       e.n"""

UPSERT_ANNOTATIONS = f"""
WITH given AS (
    SELECT {_FIELDS}
    FROM jsonb_array_elements(%(rows)s::jsonb) WITH ORDINALITY AS e(v, n)
),
resolved AS (
    SELECT g.target_kind,
           CASE WHEN g.target_kind = 'session' THEN NULL
                ELSE coalesce(g.trace_id, (SELECT s.trace_id FROM spans s WHERE s.span_id = g.span_id)) END
               AS trace_id,
           CASE WHEN g.target_kind = 'span' THEN g.span_id END AS span_id,
           CASE WHEN g.target_kind = 'session'
                THEN coalesce(g.session_id, (SELECT t.metadata ->> 'session_id'
                                             FROM traces t WHERE t.trace_id = g.trace_id))
           END AS session_id,
           g.name, g.score, g.label, g.explanation, g.correction, g.annotator_kind, g.annotator,
           g.identifier, g.source, g.metadata, g.n
    FROM given g
),
last AS (
    SELECT DISTINCT ON (r.target_kind, coalesce(r.span_id::text, r.trace_id::text, r.session_id), r.name,
                        r.annotator_kind, r.annotator, r.identifier) r.*
    FROM resolved r
    WHERE CASE r.target_kind WHEN 'span' THEN r.span_id WHEN 'trace' THEN r.trace_id END IS NOT NULL
       OR (r.target_kind = 'session' AND r.session_id IS NOT NULL)
    ORDER BY r.target_kind, coalesce(r.span_id::text, r.trace_id::text, r.session_id), r.name,
             r.annotator_kind, r.annotator, r.identifier, r.n DESC
)
INSERT INTO otel_annotations AS a (target_kind, trace_id, span_id, session_id, name, score, label,
                                   explanation, correction, annotator_kind, annotator, identifier,
                                   source, metadata)
SELECT l.target_kind, l.trace_id, l.span_id, l.session_id, l.name, l.score, l.label, l.explanation,
       l.correction, l.annotator_kind, l.annotator, l.identifier, l.source, l.metadata
FROM last l
WHERE l.score IS NOT NULL OR l.label IS NOT NULL OR l.explanation IS NOT NULL OR l.correction IS NOT NULL
ORDER BY l.target_kind, l.name
ON CONFLICT (target_kind, target_key, name, annotator_kind, annotator, identifier) DO UPDATE
SET score = excluded.score, label = excluded.label, explanation = excluded.explanation,
    correction = excluded.correction, source = excluded.source, metadata = excluded.metadata,
    trace_id = coalesce(excluded.trace_id, a.trace_id), updated_at = now()
WHERE (a.score, a.label, a.explanation, a.correction, a.metadata, a.trace_id)
      IS DISTINCT FROM (excluded.score, excluded.label, excluded.explanation, excluded.correction,
                        excluded.metadata, coalesce(excluded.trace_id, a.trace_id))
RETURNING a.annotation_id
"""

DELETE_ANNOTATION = """
DELETE FROM otel_annotations
WHERE target_kind = %(target_kind)s AND target_key = %(target_key)s AND name = %(name)s
  AND annotator_kind = %(annotator_kind)s AND annotator = %(annotator)s AND identifier = %(identifier)s
"""

#: Whether a stored id is a span's or a trace's (``annotate()`` given a bare UUID).
WHAT_IS = """
SELECT (SELECT trace_id FROM spans WHERE span_id = %(id)s) AS span_trace,
       EXISTS (SELECT 1 FROM traces WHERE trace_id = %(id)s) AS is_trace
"""

#: Judgements of targets that never arrived, older than a grace period (retention).
SWEEP_ORPHANS = "SELECT otel_annotations_sweep_orphans(%(grace)s::interval)"


def stored_target(cur: psycopg.Cursor[Any], target_id: UUID) -> Target | None:
    """What a bare stored UUID names, as this reader sees it: a span (with its trace), else a
    trace; None when neither is stored (or visible)."""
    cur.execute(WHAT_IS, {"id": target_id})
    row = cur.fetchone()
    values = tuple(row.values()) if isinstance(row, dict) else tuple(row or (None, False))
    span_trace, is_trace = values
    if span_trace is not None:
        return Target.span(target_id, span_trace)
    return Target.trace(target_id) if is_trace else None


def upsert_annotations(cur: psycopg.Cursor[Any], rows_json: str) -> int:
    """Insert or update the rows (one JSON list); how many were written or changed."""
    cur.execute(UPSERT_ANNOTATIONS, {"rows": rows_json})
    return cur.rowcount
