-- 006_add_cost_history_and_forecast.sql  (otel-pg-exporter; the seed's tables are unchanged)
-- SQL-first cost history and forecast, usable from any SQL client, Supabase dashboard or BI tool.

-- Daily rollup over leaf model calls (llm/embedding spans without an llm/embedding child: the same
-- rule as traces.total_cost, so roll-up spans never double count). A plain view: always current.
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
    count(*) FILTER (WHERE s.metadata #>> '{cost,status}' = 'unpriced') AS unpriced_calls
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
    'otel-pg-exporter: cost, tokens, calls and errors per UTC day, workflow, model, provider and user';

-- Daily spend forecast: a least-squares linear trend (regr_slope / regr_intercept over the last
-- history_days, missing days counted as 0) times a day-of-week factor (mean actual / trend per
-- weekday, used once two full weeks exist), with a band of +-1.96 standard deviations of the
-- relative residuals (spend noise grows with spend).
-- Less than 2 days of history: a flat line at the mean. No history: zeros. Never an exception.
CREATE OR REPLACE FUNCTION forecast_cost(
    horizon_days INTEGER DEFAULT 30,
    history_days INTEGER DEFAULT 90,
    p_workflow TEXT DEFAULT NULL,
    p_as_of DATE DEFAULT (now() AT TIME ZONE 'UTC')::date
)
RETURNS TABLE (day DATE, predicted NUMERIC, lower NUMERIC, upper NUMERIC)
LANGUAGE sql STABLE AS $$
    WITH first_day AS (
        SELECT min(d.day) AS d0 FROM otel_daily_costs d
        WHERE d.day >= p_as_of - history_days AND d.day < p_as_of
          AND (p_workflow IS NULL OR d.workflow_id = p_workflow)
    ),
    hist AS (  -- one row per day from the first day with data, missing days as 0
        SELECT g AS x, (f.d0 + g) AS day, coalesce(sum(d.cost), 0)::double precision AS y
        FROM first_day f
        CROSS JOIN LATERAL generate_series(0, p_as_of - f.d0 - 1) AS g
        LEFT JOIN otel_daily_costs d
               ON d.day = f.d0 + g AND (p_workflow IS NULL OR d.workflow_id = p_workflow)
        WHERE f.d0 IS NOT NULL
        GROUP BY g, f.d0
    ),
    reg AS (
        SELECT count(*) AS n, coalesce(avg(y), 0) AS mean,
               coalesce(regr_slope(y, x), 0) AS slope, coalesce(regr_intercept(y, x), avg(y), 0) AS icpt
        FROM hist
    ),
    fit AS (
        SELECT h.x, h.day, h.y,
               CASE WHEN r.n >= 2 THEN greatest(r.icpt + r.slope * h.x, 0) ELSE r.mean END AS trend
        FROM hist h CROSS JOIN reg r
    ),
    dow AS (  -- weekday factor once two full weeks exist
        SELECT extract(isodow FROM f.day)::int AS wd,
               CASE WHEN (SELECT n FROM reg) >= 14 AND sum(f.trend) > 0 THEN sum(f.y) / sum(f.trend)
                    ELSE 1 END AS factor
        FROM fit f GROUP BY 1
    ),
    resid AS (  -- relative residuals: spend noise grows with the level of spend
        SELECT coalesce(stddev_samp(f.y / (f.trend * w.factor) - 1), 0) AS sigma
        FROM fit f LEFT JOIN dow w ON w.wd = extract(isodow FROM f.day)::int
        WHERE f.trend * coalesce(w.factor, 1) > 0
    ),
    future AS (
        SELECT (p_as_of + g)::date AS day,
               CASE WHEN r.n >= 2 THEN greatest(r.icpt + r.slope * (r.n + g), 0) ELSE r.mean END
                 * coalesce((SELECT w.factor FROM dow w WHERE w.wd = extract(isodow FROM p_as_of + g)::int), 1)
                 AS yhat
        FROM generate_series(0, horizon_days - 1) AS g CROSS JOIN reg r
    )
    SELECT f.day, round(f.yhat::numeric, 6),
           round(greatest(f.yhat * (1 - 1.96 * s.sigma), 0)::numeric, 6),
           round((f.yhat * (1 + 1.96 * s.sigma))::numeric, 6)
    FROM future f CROSS JOIN resid s
    ORDER BY f.day
$$;

COMMENT ON FUNCTION forecast_cost(INTEGER, INTEGER, TEXT, DATE) IS
    'otel-pg-exporter: daily spend forecast (linear trend x weekday factor, 95% band)';

-- Month-end projection: spend so far this month plus the forecast for the remaining days.
CREATE OR REPLACE FUNCTION forecast_month_end(
    p_workflow TEXT DEFAULT NULL,
    p_as_of DATE DEFAULT (now() AT TIME ZONE 'UTC')::date
)
RETURNS TABLE (month_to_date NUMERIC, projected_rest NUMERIC, projected_total NUMERIC,
               lower NUMERIC, upper NUMERIC)
LANGUAGE sql STABLE AS $$
    WITH mtd AS (
        SELECT coalesce(sum(d.cost), 0) AS spent FROM otel_daily_costs d
        WHERE d.day >= date_trunc('month', p_as_of)::date AND d.day < p_as_of
          AND (p_workflow IS NULL OR d.workflow_id = p_workflow)
    ),
    rest AS (
        SELECT coalesce(sum(f.predicted), 0) AS p, coalesce(sum(f.lower), 0) AS lo, coalesce(sum(f.upper), 0) AS hi
        FROM forecast_cost(
            ((date_trunc('month', p_as_of) + interval '1 month')::date - p_as_of), 90, p_workflow, p_as_of
        ) AS f
    )
    SELECT mtd.spent, rest.p, mtd.spent + rest.p, mtd.spent + rest.lo, mtd.spent + rest.hi FROM mtd, rest
$$;

-- Monthly budgets: for everything, one workflow, or one user.
CREATE TABLE IF NOT EXISTS otel_budgets (
    budget_id SERIAL PRIMARY KEY,
    scope VARCHAR(20) NOT NULL CHECK (scope IN ('all', 'workflow', 'user')),
    scope_value TEXT,
    monthly_limit NUMERIC(12, 6) NOT NULL CHECK (monthly_limit >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT otel_budgets_scope_value CHECK ((scope = 'all') = (scope_value IS NULL))
);

-- Budget status; raises pg_notify('otel_budget', <json>) for each actual or forecast breach.
CREATE OR REPLACE FUNCTION check_budgets(p_as_of DATE DEFAULT (now() AT TIME ZONE 'UTC')::date)
RETURNS TABLE (budget_id INTEGER, scope VARCHAR, scope_value TEXT, monthly_limit NUMERIC,
               month_to_date NUMERIC, projected_total NUMERIC, breached BOOLEAN, forecast_breach BOOLEAN)
LANGUAGE plpgsql AS $$
DECLARE
    b RECORD;
    v_spent NUMERIC;
    v_projected NUMERIC;
BEGIN
    FOR b IN SELECT * FROM otel_budgets ORDER BY otel_budgets.budget_id LOOP
        SELECT coalesce(sum(d.cost), 0) INTO v_spent FROM otel_daily_costs d
        WHERE d.day >= date_trunc('month', p_as_of)::date AND d.day <= p_as_of
          AND (b.scope <> 'workflow' OR d.workflow_id = b.scope_value)
          AND (b.scope <> 'user' OR d.user_id::text = b.scope_value);
        IF b.scope = 'user' THEN
            v_projected := v_spent;  -- the forecast is per workflow or overall
        ELSE
            SELECT m.projected_total INTO v_projected
            FROM forecast_month_end(CASE WHEN b.scope = 'workflow' THEN b.scope_value END, p_as_of) AS m;
            v_projected := greatest(v_projected, v_spent);
        END IF;
        budget_id := b.budget_id; scope := b.scope; scope_value := b.scope_value;
        monthly_limit := b.monthly_limit; month_to_date := v_spent; projected_total := v_projected;
        breached := v_spent > b.monthly_limit;
        forecast_breach := NOT breached AND v_projected > b.monthly_limit;
        IF breached OR forecast_breach THEN
            PERFORM pg_notify('otel_budget', json_build_object(
                'budget_id', b.budget_id, 'scope', b.scope, 'scope_value', b.scope_value,
                'monthly_limit', b.monthly_limit, 'month_to_date', v_spent,
                'projected_total', v_projected, 'kind', CASE WHEN breached THEN 'breach' ELSE 'forecast_breach' END
            )::text);
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
