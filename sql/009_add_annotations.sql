-- 009_add_annotations.sql  (otel-pg-exporter; the seed's tables are unchanged)
-- Judgements of spans, traces and sessions: an end user's thumbs, a reviewer's label, an LLM judge's
-- score, a check in code. One row per judgement; writing the same judgement again (same target, name,
-- annotator kind, annotator and identifier) updates it.
--
-- No foreign key to traces or spans: a judgement may be written before its span is exported (a judge
-- running inside the request), so the row names its target by value and waits for it. Rows go when
-- their trace goes (the trigger below, for the seed's cleanup_old_traces, 007's retention and any
-- DELETE); a session's rows go with its last trace; rows whose trace never arrived are removed by
-- otel_annotations_sweep_orphans (called by the retention sweep).
CREATE TABLE IF NOT EXISTS otel_annotations (
    annotation_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    -- what is judged: a span (span_id, and its trace_id when known), a trace, or a session
    target_kind VARCHAR(16) NOT NULL CHECK (target_kind IN ('span', 'trace', 'session')),
    trace_id UUID,
    span_id UUID,
    session_id TEXT,
    target_key TEXT GENERATED ALWAYS AS (
        CASE target_kind WHEN 'span' THEN span_id::text
                         WHEN 'trace' THEN trace_id::text
                         ELSE session_id END
    ) STORED,
    name VARCHAR(255) NOT NULL CHECK (length(name) > 0),
    score DOUBLE PRECISION CHECK (score IS NULL OR score NOT IN ('NaN', 'Infinity', '-Infinity')),
    label VARCHAR(255),
    explanation TEXT CHECK (explanation IS NULL OR length(explanation) <= 20000),
    -- the expected output, when the judge corrects one (any JSON)
    correction JSONB CHECK (correction IS NULL OR octet_length(correction::text) <= 262144),
    -- human: a reviewer; user: the application's end user; llm: an LLM judge; code: a check in code
    annotator_kind VARCHAR(16) NOT NULL CHECK (annotator_kind IN ('human', 'user', 'llm', 'code')),
    -- who wrote it: a reviewer's name, a judge's model, a user's id ('' when nobody says)
    annotator VARCHAR(255) NOT NULL DEFAULT '',
    -- several judgements of one name by one annotator, told apart (e.g. an experiment run)
    identifier VARCHAR(255) NOT NULL DEFAULT '',
    -- how it arrived: api (annotate()), ingest (attributes or events on a span), explorer, mcp, sql
    source VARCHAR(16) NOT NULL DEFAULT 'sql',
    metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT otel_annotations_target_named CHECK (target_key IS NOT NULL),
    CONSTRAINT otel_annotations_says_something CHECK (
        score IS NOT NULL OR label IS NOT NULL OR explanation IS NOT NULL OR correction IS NOT NULL
    ),
    CONSTRAINT otel_annotations_one_per_annotator
        UNIQUE (target_kind, target_key, name, annotator_kind, annotator, identifier)
);

CREATE INDEX IF NOT EXISTS idx_otel_annotations_trace ON otel_annotations (trace_id);
CREATE INDEX IF NOT EXISTS idx_otel_annotations_span ON otel_annotations (span_id) WHERE span_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_otel_annotations_session
    ON otel_annotations (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_otel_annotations_name_label ON otel_annotations (name, label);

-- A trace's judgements go with it, whoever deletes it; a session's with its last trace.
CREATE OR REPLACE FUNCTION otel_annotations_forget_traces()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM otel_annotations a USING gone g WHERE a.trace_id = g.trace_id;
    DELETE FROM otel_annotations a
     WHERE a.target_kind = 'session'
       AND a.session_id IN (SELECT g.metadata ->> 'session_id' FROM gone g WHERE g.metadata ? 'session_id')
       AND NOT EXISTS (SELECT 1 FROM traces t
                        WHERE t.metadata @> jsonb_build_object('session_id', a.session_id));
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS otel_annotations_forget_traces ON traces;
CREATE TRIGGER otel_annotations_forget_traces
    AFTER DELETE ON traces
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION otel_annotations_forget_traces();

-- Judgements of spans or traces that never arrived, older than p_grace. Returns how many went.
CREATE OR REPLACE FUNCTION otel_annotations_sweep_orphans(p_grace INTERVAL DEFAULT '7 days')
RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    v_removed INTEGER;
BEGIN
    DELETE FROM otel_annotations a
     WHERE a.created_at < now() - p_grace
       AND CASE a.target_kind
             WHEN 'session' THEN NOT EXISTS (
                 SELECT 1 FROM traces t WHERE t.metadata @> jsonb_build_object('session_id', a.session_id))
             WHEN 'span' THEN NOT EXISTS (SELECT 1 FROM spans s WHERE s.span_id = a.span_id)
             ELSE NOT EXISTS (SELECT 1 FROM traces t WHERE t.trace_id = a.trace_id)
           END;
    GET DIAGNOSTICS v_removed = ROW_COUNT;
    RETURN v_removed;
END
$$;

-- The seed's spans.evaluation, with the span's judgements: spans_annotated has every column of
-- spans, in the seed's order; its evaluation is the stored one plus "annotations" (the span's rows
-- of otel_annotations, newest first) when there are any. Readers of spans.evaluation that want
-- judgements added later read this view instead (the explorer, TraceStore and otel-pg-mcp do).
CREATE OR REPLACE VIEW spans_annotated AS
SELECT s.span_id, s.trace_id, s.parent_span_id, s.span_type, s.name, s.status, s.started_at,
       s.completed_at, s.duration_ms, s.inputs, s.outputs, s.tokens, s.cost, s.model, s.provider,
       s.error, s.error_type, s.error_stack, s.api_limits, s.retry_count, s.timeout,
       CASE WHEN j.annotations IS NULL THEN s.evaluation
            ELSE coalesce(s.evaluation, '{}'::jsonb) || jsonb_build_object('annotations', j.annotations)
       END AS evaluation,
       s.metadata, s.child_spans
FROM spans s
LEFT JOIN LATERAL (
    SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
               'name', a.name, 'score', a.score, 'label', a.label, 'explanation', a.explanation,
               'correction', a.correction, 'annotator_kind', a.annotator_kind,
               'annotator', nullif(a.annotator, ''), 'identifier', nullif(a.identifier, ''),
               'source', a.source, 'updated_at', a.updated_at))
           ORDER BY a.updated_at DESC) AS annotations
    FROM otel_annotations a
    WHERE a.span_id = s.span_id AND a.target_kind = 'span'
) j ON true;

-- A view runs with its owner's rights unless told otherwise (see 007): the caller's, so RLS holds.
DO $otel_pg$
BEGIN
    IF current_setting('server_version_num')::integer >= 150000 THEN
        EXECUTE 'ALTER VIEW spans_annotated SET (security_invoker = true)';
    END IF;
END
$otel_pg$;
