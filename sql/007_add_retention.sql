-- 007_add_retention.sql  (otel-pg-exporter; the seed's tables and cleanup_old_traces are unchanged)
-- Retention at scale. The seed's cleanup_old_traces() deletes only 'completed' traces, in one
-- statement. This adds a routine that works in bounded chunks (one short transaction each, rows
-- locked with SKIP LOCKED so concurrent exporters are never blocked), also removes 'failed' and
-- 'cancelled' traces, stale 'running' ones and traces of nothing but 'pending' placeholder spans,
-- honours each user's
-- profiles.settings.observability.retention_days, and reports what it removed.
-- Times: the exporter stores UTC in the seed's TIMESTAMP columns, so "now" is now() in UTC.

-- What each run removed (also the place to look when it runs from pg_cron).
CREATE TABLE IF NOT EXISTS otel_retention_runs (
    run_id BIGSERIAL PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    default_days INTEGER NOT NULL,
    grace INTERVAL NOT NULL,
    chunks INTEGER NOT NULL DEFAULT 0,
    -- {"expired_completed": {"traces": n, "spans": m}, "stale_running": {...}, ...}
    removed JSONB NOT NULL DEFAULT '{}'::jsonb
);

-- Days a user's traces are kept: observability.retention_days when it is a number (clamped to
-- 1..36500), else the default.
CREATE OR REPLACE FUNCTION otel_retention_days(p_settings JSONB, p_default_days INTEGER)
RETURNS INTEGER
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(p_settings #> '{observability,retention_days}') = 'number'
                THEN least(greatest((p_settings #>> '{observability,retention_days}')::numeric, 1), 36500)::integer
                ELSE p_default_days END
$$;

-- One chunk: examine up to p_limit traces after the cursor (oldest first) and delete the eligible
-- ones with their spans. A trace is eligible when it started before now - its user's retention and
--   * it is 'completed', 'failed' or 'cancelled'                        -> expired_<status>
--   * or it is 'running' with no span activity within p_grace           -> stale_running
--     (its root never arrived; a trace still receiving spans is never touched), or stale_pending
--     when it holds nothing but 'pending' placeholder spans (log records or children whose spans
--     never came)
-- Rows another transaction holds (an exporter writing that trace) are skipped, not waited for.
-- Returns one row per reason, plus a row with reason NULL carrying the cursor for the next chunk
-- (scanned < p_limit means the sweep is done). With p_dry_run nothing is deleted.
CREATE OR REPLACE FUNCTION otel_retention_chunk(
    p_default_days INTEGER DEFAULT 90,
    p_grace INTERVAL DEFAULT '1 day',
    p_limit INTEGER DEFAULT 1000,
    p_dry_run BOOLEAN DEFAULT false,
    p_after_started TIMESTAMP DEFAULT '-infinity',
    p_after_id UUID DEFAULT '00000000-0000-0000-0000-000000000000'
)
RETURNS TABLE (reason TEXT, traces BIGINT, spans BIGINT, scanned BIGINT, last_started TIMESTAMP, last_id UUID)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now TIMESTAMP := now() AT TIME ZONE 'UTC';
    v_min_days INTEGER;
    v_scanned BIGINT;
    v_last_started TIMESTAMP;
    v_last_id UUID;
    v_ids UUID[];
    v_reasons TEXT[];
    v_locked UUID[];
BEGIN
    -- Nothing younger than the shortest retention anyone has can be eligible: bound the index range.
    SELECT least(p_default_days, min(otel_retention_days(p.settings, p_default_days)))
      INTO v_min_days
      FROM profiles p
     WHERE p.settings ? 'observability';
    v_min_days := coalesce(v_min_days, p_default_days);

    WITH scanned AS (
        SELECT t.trace_id, t.started_at, t.status, t.user_id
          FROM traces t
         WHERE t.started_at < v_now - make_interval(days => v_min_days)
           AND t.started_at >= p_after_started
           AND (t.started_at > p_after_started OR t.trace_id > p_after_id)
         ORDER BY t.started_at, t.trace_id
         LIMIT p_limit
    ),
    judged AS (
        SELECT s.trace_id, s.started_at,
               CASE
                   WHEN s.started_at >= v_now - make_interval(days => otel_retention_days(p.settings, p_default_days))
                       THEN NULL
                   WHEN s.status IN ('completed', 'failed', 'cancelled') THEN 'expired_' || s.status
                   WHEN s.started_at < v_now - p_grace
                        AND NOT EXISTS (SELECT 1 FROM spans x
                                         WHERE x.trace_id = s.trace_id
                                           AND coalesce(x.completed_at, x.started_at) >= v_now - p_grace)
                       THEN CASE WHEN EXISTS (SELECT 1 FROM spans y
                                               WHERE y.trace_id = s.trace_id AND y.status <> 'pending')
                                 THEN 'stale_' || s.status
                                 ELSE 'stale_pending' END
               END AS reason
          FROM scanned s
          LEFT JOIN profiles p ON p.id = s.user_id
    )
    SELECT count(*),
           (array_agg(j.started_at ORDER BY j.started_at DESC, j.trace_id DESC))[1],
           (array_agg(j.trace_id ORDER BY j.started_at DESC, j.trace_id DESC))[1],
           array_agg(j.trace_id) FILTER (WHERE j.reason IS NOT NULL),
           array_agg(j.reason) FILTER (WHERE j.reason IS NOT NULL)
      INTO v_scanned, v_last_started, v_last_id, v_ids, v_reasons
      FROM judged j;

    v_ids := coalesce(v_ids, '{}');
    v_reasons := coalesce(v_reasons, '{}');
    IF p_dry_run OR cardinality(v_ids) = 0 THEN
        v_locked := v_ids;
    ELSE
        SELECT coalesce(array_agg(l.trace_id), '{}') INTO v_locked
          FROM (SELECT t.trace_id FROM traces t WHERE t.trace_id = ANY (v_ids)
                ORDER BY t.trace_id FOR UPDATE SKIP LOCKED) AS l;
    END IF;

    RETURN QUERY
        WITH r AS (
            SELECT u.trace_id, u.reason FROM unnest(v_ids, v_reasons) AS u(trace_id, reason)
             WHERE u.trace_id = ANY (v_locked)
        ),
        n AS (
            SELECT x.trace_id, count(*) AS spans FROM spans x
             WHERE x.trace_id = ANY (v_locked) GROUP BY x.trace_id
        )
        SELECT r.reason, count(*)::bigint, coalesce(sum(n.spans), 0)::bigint,
               v_scanned, v_last_started, v_last_id
          FROM r LEFT JOIN n ON n.trace_id = r.trace_id
         GROUP BY r.reason;
    RETURN QUERY SELECT NULL::text, 0::bigint, 0::bigint, v_scanned, v_last_started, v_last_id;

    IF NOT p_dry_run AND cardinality(v_locked) > 0 THEN
        DELETE FROM spans AS x WHERE x.trace_id = ANY (v_locked);
        DELETE FROM traces AS t WHERE t.trace_id = ANY (v_locked);
    END IF;
END;
$$;

-- The whole sweep, one committed transaction per chunk, recorded in otel_retention_runs.
-- For pg_cron:  SELECT cron.schedule('otel-retention', '17 3 * * *',
--                                    $$CALL otel_retention_sweep(90, interval '1 day', 1000)$$);
CREATE OR REPLACE PROCEDURE otel_retention_sweep(
    p_default_days INTEGER DEFAULT 90,
    p_grace INTERVAL DEFAULT '1 day',
    p_chunk INTEGER DEFAULT 1000,
    p_max_chunks INTEGER DEFAULT NULL
)
LANGUAGE plpgsql AS $$
DECLARE
    v_run BIGINT;
    v_after_started TIMESTAMP := '-infinity';
    v_after_id UUID := '00000000-0000-0000-0000-000000000000';
    v_removed JSONB := '{}'::jsonb;
    v_scanned BIGINT;
    v_chunks INTEGER := 0;
    rec RECORD;
BEGIN
    INSERT INTO otel_retention_runs (default_days, grace) VALUES (p_default_days, p_grace)
    RETURNING run_id INTO v_run;
    COMMIT;
    LOOP
        v_scanned := 0;
        FOR rec IN SELECT * FROM otel_retention_chunk(p_default_days, p_grace, p_chunk, false,
                                                      v_after_started, v_after_id) LOOP
            IF rec.reason IS NULL THEN
                v_scanned := rec.scanned;
                IF rec.last_started IS NOT NULL THEN
                    v_after_started := rec.last_started;
                    v_after_id := rec.last_id;
                END IF;
            ELSE
                v_removed := v_removed || jsonb_build_object(rec.reason, jsonb_build_object(
                    'traces', coalesce((v_removed #>> ARRAY[rec.reason, 'traces'])::bigint, 0) + rec.traces,
                    'spans', coalesce((v_removed #>> ARRAY[rec.reason, 'spans'])::bigint, 0) + rec.spans));
            END IF;
        END LOOP;
        v_chunks := v_chunks + 1;
        UPDATE otel_retention_runs SET removed = v_removed, chunks = v_chunks WHERE run_id = v_run;
        COMMIT;
        EXIT WHEN v_scanned < p_chunk OR (p_max_chunks IS NOT NULL AND v_chunks >= p_max_chunks);
    END LOOP;
    UPDATE otel_retention_runs SET finished_at = now() WHERE run_id = v_run;
    COMMIT;
    RAISE NOTICE 'otel_retention_sweep: removed %', v_removed;
END;
$$;

-- Supabase serves the tables and views of the public schema through its API. These maintenance
-- tables hold no user data and are not for API users: RLS on, no policy (owners and roles that
-- bypass RLS, such as the maintenance role and service_role, still see them).
ALTER TABLE otel_retention_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE otel_budgets ENABLE ROW LEVEL SECURITY;

-- A view runs with its owner's rights by default, which bypasses the RLS policies of traces and
-- spans: every API user could read everyone's daily costs through otel_daily_costs (006). Make it
-- run with the caller's rights (security_invoker exists from PostgreSQL 15 on).
DO $otel_pg$
BEGIN
    IF current_setting('server_version_num')::integer >= 150000 THEN
        EXECUTE 'ALTER VIEW otel_daily_costs SET (security_invoker = true)';
    END IF;
END
$otel_pg$;
