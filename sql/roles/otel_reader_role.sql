-- sql/roles/otel_reader_role.sql  (not a migration: run it once, as an administrator)
-- A login role for the read-only SQL of otel-pg-mcp (query_sql): it reads the trace tables and
-- views and can write nothing. It does not bypass row level security; with `otel-pg-mcp --as-user`
-- it takes the seed's `authenticated` role, so RLS decides what it sees.
-- Set its password afterwards:  ALTER ROLE otel_pg_reader PASSWORD '...';
DO $otel_pg$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'otel_pg_reader') THEN
        CREATE ROLE otel_pg_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        GRANT authenticated TO otel_pg_reader;
    END IF;
END
$otel_pg$;

GRANT USAGE ON SCHEMA public TO otel_pg_reader;
GRANT SELECT ON traces, spans TO otel_pg_reader;
DO $otel_pg$
BEGIN
    IF to_regclass('otel_daily_costs') IS NOT NULL THEN
        GRANT SELECT ON otel_daily_costs TO otel_pg_reader;
    END IF;
    IF to_regclass('otel_annotations') IS NOT NULL THEN  -- migration 009: judgements
        GRANT SELECT ON otel_annotations, spans_annotated TO otel_pg_reader;
    END IF;
END
$otel_pg$;
