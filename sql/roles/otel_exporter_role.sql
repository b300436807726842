-- sql/roles/otel_exporter_role.sql  (not a migration: run it once, as an administrator)
-- A least-privilege login role for the exporter: it reads and writes traces and spans, looks up
-- profiles (to fill traces.user_id), and nothing else (no DELETE, no DDL, no other tables).
-- Set its password afterwards:  ALTER ROLE otel_exporter PASSWORD '...';
DO $otel_pg$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'otel_exporter') THEN
        CREATE ROLE otel_exporter LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
    END IF;
END
$otel_pg$;

GRANT USAGE ON SCHEMA public TO otel_exporter;
GRANT SELECT, INSERT, UPDATE ON traces, spans TO otel_exporter;
GRANT SELECT ON profiles TO otel_exporter;

-- Row level security (migration 004): the exporter writes every user's traces, so the seed's
-- per-user policies (auth.uid() = user_id) must not apply to it. It therefore bypasses RLS.
-- Granting BYPASSRLS needs a superuser; on Supabase, connect the exporter with a role that already
-- bypasses RLS (e.g. a dedicated role created in the dashboard, or service_role) instead.
ALTER ROLE otel_exporter BYPASSRLS;
