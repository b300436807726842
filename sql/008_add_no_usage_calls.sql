-- 008_add_no_usage_calls.sql  (otel-pg-exporter; the seed's tables are unchanged)
-- A model call that reported no token usage (a refused request, a 429, a stream cut short) is not
-- an unknown price: metadata.cost.status is 'no_usage' for those (0.2 onwards), and 'unpriced' is
-- kept for models whose price is unknown. The daily view counts both apart; rows stored before this
-- change ('unpriced' with reason 'no token usage on the span') count as no_usage too.
-- Same columns as 006, in the same order, plus no_usage_calls at the end.
CREATE OR REPLACE VIEW otel_daily_costs AS
SELECT
    (s.started_at AT TIME ZONE 'UTC')::date AS day,
    t.workflow_id,
    s.model,
    s.provider,
    t.user_id,
    sum(s.cost) AS cost,
    sum(coalesce((s.tokens ->> 'input')::bigint, 0)) AS input_tokens,
    sum(coalesce((s.tokens ->> 'output')::bigint, 0)) AS output_tokens,
    sum(coalesce((s.tokens ->> 'cache_read')::bigint, 0)) AS cache_read_tokens,
    sum(coalesce((s.tokens ->> 'reasoning')::bigint, 0)) AS reasoning_tokens,
    sum(coalesce((s.tokens ->> 'total')::bigint, 0)) AS total_tokens,
    count(*) AS calls,
    count(*) FILTER (WHERE s.status IN ('failed', 'cancelled')) AS errors,
    count(*) FILTER (
        WHERE s.metadata #>> '{cost,status}' = 'unpriced'
          AND s.metadata #>> '{cost,reason}' IS DISTINCT FROM 'no token usage on the span'
    ) AS unpriced_calls,
    count(*) FILTER (
        WHERE s.metadata #>> '{cost,status}' = 'no_usage'
           OR s.metadata #>> '{cost,reason}' = 'no token usage on the span'
    ) AS no_usage_calls
FROM spans s
JOIN traces t ON t.trace_id = s.trace_id
WHERE s.span_type IN ('llm', 'embedding')
  AND s.status <> 'pending'
  AND s.started_at IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM spans c
      WHERE c.parent_span_id = s.span_id AND c.span_type IN ('llm', 'embedding')
  )
GROUP BY 1, 2, 3, 4, 5;

COMMENT ON VIEW otel_daily_costs IS
    'otel-pg-exporter: cost, tokens, calls, errors, unpriced and no-usage calls per UTC day, workflow, model, provider and user';

-- CREATE OR REPLACE VIEW resets the view's options: keep 007's caller's-rights setting.
DO $otel_pg$
BEGIN
    IF current_setting('server_version_num')::integer >= 150000 THEN
        EXECUTE 'ALTER VIEW otel_daily_costs SET (security_invoker = true)';
    END IF;
END
$otel_pg$;
