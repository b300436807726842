-- seed guide step 4, as pasted by hand
-- Enable RLS
ALTER TABLE traces ENABLE ROW LEVEL SECURITY;
ALTER TABLE spans ENABLE ROW LEVEL SECURITY;

-- Users can view their own traces
CREATE POLICY "Users can view their own traces"
    ON traces FOR SELECT
    USING (user_id = auth.uid() OR user_id IS NULL);

-- Users can insert their own traces
CREATE POLICY "Users can insert their own traces"
    ON traces FOR INSERT
    WITH CHECK (user_id = auth.uid() OR user_id IS NULL);

-- Users can update their own traces
CREATE POLICY "Users can update their own traces"
    ON traces FOR UPDATE
    USING (user_id = auth.uid() OR user_id IS NULL);

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
