-- 001_initial_schema.sql
-- Base table the observability schema builds on. On Supabase `profiles` usually exists already
-- (one row per auth user); everything here is IF NOT EXISTS so an existing table is left alone.
CREATE TABLE IF NOT EXISTS profiles (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email TEXT,
    display_name TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
