-- 010_add_annotation_rls.sql  (otel-pg-exporter; optional, like the seed's 004: applied with
-- `otel-pg-install-schema --rls`, and on its own once 004 is applied)
-- End-user feedback straight from the application (supabase-js, PostgREST): a signed-in user
-- (auth.uid()) may write and read judgements of kind 'user', as themselves, on traces whose user_id
-- is theirs, and nothing else: never another user's traces or feedback, never 'human', 'llm' or
-- 'code' rows, no deletes. Roles that bypass RLS (the exporter, the table owner) are unaffected.
ALTER TABLE otel_annotations ENABLE ROW LEVEL SECURITY;

-- The target belongs to the signed-in user: its trace is theirs (a span also has to be a span of
-- that trace, so no one can hang feedback on another user's span by naming their own trace), or,
-- for a session, one of the session's traces is theirs and none is someone else's.
CREATE OR REPLACE FUNCTION otel_annotation_target_is_mine(
    p_kind TEXT, p_trace UUID, p_span UUID, p_session TEXT
) RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
    SELECT CASE p_kind
        WHEN 'trace' THEN EXISTS (
            SELECT 1 FROM traces t WHERE t.trace_id = p_trace AND t.user_id = auth.uid())
        WHEN 'span' THEN EXISTS (
            SELECT 1 FROM spans s JOIN traces t ON t.trace_id = s.trace_id
             WHERE s.span_id = p_span AND s.trace_id = p_trace AND t.user_id = auth.uid())
        WHEN 'session' THEN EXISTS (
            SELECT 1 FROM traces t
             WHERE t.metadata @> jsonb_build_object('session_id', p_session) AND t.user_id = auth.uid())
          AND NOT EXISTS (
            SELECT 1 FROM traces t
             WHERE t.metadata @> jsonb_build_object('session_id', p_session)
               AND t.user_id IS DISTINCT FROM auth.uid())
        ELSE false
    END
$$;

DO $otel_pg$
BEGIN
IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE tablename = 'otel_annotations'
                AND policyname = 'Users can view their own feedback') THEN
    CREATE POLICY "Users can view their own feedback"
        ON otel_annotations FOR SELECT
        USING (annotator_kind = 'user' AND annotator = auth.uid()::text
               AND otel_annotation_target_is_mine(target_kind, trace_id, span_id, session_id));
END IF;

IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE tablename = 'otel_annotations'
                AND policyname = 'Users can give feedback on their own traces') THEN
    CREATE POLICY "Users can give feedback on their own traces"
        ON otel_annotations FOR INSERT
        WITH CHECK (annotator_kind = 'user' AND annotator = auth.uid()::text
                    AND otel_annotation_target_is_mine(target_kind, trace_id, span_id, session_id));
END IF;

IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE tablename = 'otel_annotations'
                AND policyname = 'Users can change their own feedback') THEN
    CREATE POLICY "Users can change their own feedback"
        ON otel_annotations FOR UPDATE
        USING (annotator_kind = 'user' AND annotator = auth.uid()::text
               AND otel_annotation_target_is_mine(target_kind, trace_id, span_id, session_id))
        WITH CHECK (annotator_kind = 'user' AND annotator = auth.uid()::text
                    AND otel_annotation_target_is_mine(target_kind, trace_id, span_id, session_id));
END IF;

-- Supabase's API role for signed-in users: what the policies above allow, and no DELETE.
IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    GRANT SELECT, INSERT, UPDATE ON otel_annotations TO authenticated;
    GRANT SELECT ON spans_annotated TO authenticated;
END IF;
END
$otel_pg$;
