-- 004_add_observability_rls.sql  (seed: "Step 4: Add Row Level Security (Optional - for Supabase)")
-- Optional: applied by `otel-pg-install-schema --rls`. Needs auth.uid(): Supabase has it; on plain
-- PostgreSQL the installer first applies compat/supabase_auth_uid.sql, which defines it only if absent.
-- The policy statements are the seed's; each is guarded so a database that already has the policy
-- (built by hand from the seed guide) is adopted instead of failing on "policy already exists".

-- Enable RLS
ALTER TABLE traces ENABLE ROW LEVEL SECURITY;
ALTER TABLE spans ENABLE ROW LEVEL SECURITY;

DO $otel_pg$
BEGIN
IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE tablename = 'traces' AND policyname = 'Users can view their own traces') THEN
-- Users can view their own traces
CREATE POLICY "Users can view their own traces"
    ON traces FOR SELECT
    USING (user_id = auth.uid() OR user_id IS NULL);
END IF;

IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE tablename = 'traces' AND policyname = 'Users can insert their own traces') THEN
-- Users can insert their own traces
CREATE POLICY "Users can insert their own traces"
    ON traces FOR INSERT
    WITH CHECK (user_id = auth.uid() OR user_id IS NULL);
END IF;

IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE tablename = 'traces' AND policyname = 'Users can update their own traces') THEN
-- Users can update their own traces
CREATE POLICY "Users can update their own traces"
    ON traces FOR UPDATE
    USING (user_id = auth.uid() OR user_id IS NULL);
END IF;

IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE tablename = 'spans' AND policyname = 'Users can view spans from their own traces') THEN
-- Users can view spans from their own traces
CREATE POLICY "Users can view spans from their own traces"
    ON spans FOR SELECT
    USING (
        EXISTS (
            SELECT 1 FROM traces
            WHERE traces.trace_id = spans.trace_id
            AND (traces.user_id = auth.uid() OR traces.user_id IS NULL)
        )
    );
END IF;

IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE tablename = 'spans' AND policyname = 'Users can insert spans to their own traces') THEN
-- Users can insert spans to their own traces
CREATE POLICY "Users can insert spans to their own traces"
    ON spans FOR INSERT
    WITH CHECK (
        EXISTS (
            SELECT 1 FROM traces
            WHERE traces.trace_id = spans.trace_id
            AND (traces.user_id = auth.uid() OR traces.user_id IS NULL)
        )
    );
END IF;

IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE tablename = 'spans' AND policyname = 'Users can update spans in their own traces') THEN
-- Users can update spans in their own traces
CREATE POLICY "Users can update spans in their own traces"
    ON spans FOR UPDATE
    USING (
        EXISTS (
            SELECT 1 FROM traces
            WHERE traces.trace_id = spans.trace_id
            AND (traces.user_id = auth.uid() OR traces.user_id IS NULL)
        )
    );
END IF;
END
$otel_pg$;
