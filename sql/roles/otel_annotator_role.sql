-- sql/roles/otel_annotator_role.sql  (not a migration: run it once, as an administrator)
-- The role `otel-pg-ui --allow-annotations --annotations-dsn ...` (and `otel-pg-mcp
-- --allow-annotations`) write judgements with: it may write otel_annotations and nothing else. It
-- reads traces and spans only to look up a span's trace and a session's id while writing, and has
-- no DELETE anywhere. Set its password afterwards:  ALTER ROLE otel_pg_annotator PASSWORD '...';
DO $otel_pg$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'otel_pg_annotator') THEN
        CREATE ROLE otel_pg_annotator LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
    END IF;
END
$otel_pg$;

GRANT USAGE ON SCHEMA public TO otel_pg_annotator;
GRANT SELECT ON traces, spans TO otel_pg_annotator;
GRANT SELECT, INSERT, UPDATE ON otel_annotations TO otel_pg_annotator;
-- With migration 010 (RLS on otel_annotations) a reviewer's 'human' rows are not an end user's:
-- this role writes them for everyone's traces, so it bypasses RLS (needs a superuser to grant; on
-- Supabase use a role that already does). Leave it out to write only as `--as-user` users.
ALTER ROLE otel_pg_annotator BYPASSRLS;
