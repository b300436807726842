-- compat/supabase_auth_uid.sql
-- Plain-PostgreSQL stand-in for Supabase's auth.uid(), needed by 004's RLS policies.
-- It reads the caller's user id the way Supabase does: the `request.jwt.claim.sub` setting, else the
-- `sub` field of the `request.jwt.claims` JSON setting; NULL when neither is set.
-- It is created ONLY when no auth.uid() exists, so a real Supabase auth.uid() is never replaced.
DO $otel_pg$
BEGIN
    IF to_regprocedure('auth.uid()') IS NULL THEN
        CREATE SCHEMA IF NOT EXISTS auth;
        EXECUTE $fn$
            CREATE FUNCTION auth.uid() RETURNS uuid
            LANGUAGE sql STABLE
            AS $body$
                SELECT nullif(
                    coalesce(
                        nullif(current_setting('request.jwt.claim.sub', true), ''),
                        nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
                    ),
                    ''
                )::uuid
            $body$
        $fn$;
        COMMENT ON FUNCTION auth.uid() IS
            'otel-pg-exporter compatibility shim: Supabase-style auth.uid() for plain PostgreSQL';
        GRANT USAGE ON SCHEMA auth TO PUBLIC;
        GRANT EXECUTE ON FUNCTION auth.uid() TO PUBLIC;
    END IF;
END
$otel_pg$;
