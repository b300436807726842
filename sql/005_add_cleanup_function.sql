-- 005_add_cleanup_function.sql  (seed: "Optional: Cleanup Function")
-- Deletes completed traces older than retention_days; their spans go with them (ON DELETE CASCADE).
CREATE OR REPLACE FUNCTION cleanup_old_traces(retention_days INTEGER DEFAULT 90)
RETURNS INTEGER AS $$
DECLARE
    deleted_count INTEGER;
BEGIN
    DELETE FROM traces
    WHERE started_at < NOW() - (retention_days || ' days')::INTERVAL
    AND status = 'completed';
    
    GET DIAGNOSTICS deleted_count = ROW_COUNT;
    RETURN deleted_count;
END;
$$ LANGUAGE plpgsql;

-- Run cleanup (manually or via cron)
-- SELECT cleanup_old_traces(90);
