"""Issue 2: migrations, the installer (API and CLI), RLS compatibility and the cleanup function."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from otel_pg_exporter import ChecksumMismatch, PermissionDenied, install_schema, schema_status
from otel_pg_exporter.schema.migrations import BOOKKEEPING_TABLE, load_migrations

DATA = Path(__file__).parent / "data"
CLI = [sys.executable, "-m", "otel_pg_exporter.commands.cli"]

#: Copied from the seed guide (database-setup.md): every index it names.
SEED_INDEXES = {
    ("profiles", "idx_profiles_settings"),
    ("traces", "idx_traces_workflow_id"),
    ("traces", "idx_traces_execution_id"),
    ("traces", "idx_traces_user_id"),
    ("traces", "idx_traces_started_at"),
    ("traces", "idx_traces_status"),
    ("traces", "idx_traces_workflow_started"),
    ("traces", "idx_traces_metadata_gin"),
    ("traces", "idx_traces_total_tokens_gin"),
    ("spans", "idx_spans_trace_id"),
    ("spans", "idx_spans_parent_span_id"),
    ("spans", "idx_spans_span_type"),
    ("spans", "idx_spans_status"),
    ("spans", "idx_spans_started_at"),
    ("spans", "idx_spans_trace_started"),
    ("spans", "idx_spans_tokens_gin"),
    ("spans", "idx_spans_metadata_gin"),
}
#: Ours (migration 010, with the seed's 004): end users' feedback on their own traces.
ANNOTATION_POLICIES = {
    "Users can view their own feedback",
    "Users can give feedback on their own traces",
    "Users can change their own feedback",
}
SEED_POLICIES = {
    ("traces", "Users can view their own traces"),
    ("traces", "Users can insert their own traces"),
    ("traces", "Users can update their own traces"),
    ("spans", "Users can view spans from their own traces"),
    ("spans", "Users can insert spans to their own traces"),
    ("spans", "Users can update spans in their own traces"),
}
MIGRATION_FILES = [m.filename for m in load_migrations()]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env=env)


def seed_verification(dsn: str) -> tuple[set[str], list[tuple[str, str]], set[tuple[str, str]]]:
    """The seed guide's own three "Verification" queries."""
    with psycopg.connect(dsn) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                """SELECT table_name FROM information_schema.tables
               WHERE table_schema = 'public' AND table_name IN ('traces', 'spans', 'profiles')"""
            )
        }
        settings = conn.execute(
            """SELECT column_name, data_type FROM information_schema.columns
               WHERE table_name = 'profiles' AND column_name = 'settings'"""
        ).fetchall()
        indexes = {
            (r[1], r[0])
            for r in conn.execute(
                """SELECT indexname, tablename FROM pg_indexes
               WHERE tablename IN ('traces', 'spans', 'profiles') ORDER BY tablename, indexname"""
            )
        }
    return tables, settings, indexes


def recorded(dsn: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            f"SELECT version, method, checksum FROM {BOOKKEEPING_TABLE} ORDER BY version"
        ).fetchall()


def test_fresh_database_gets_the_seed_schema(empty_db: str) -> None:
    result = install_schema(empty_db)
    assert result.applied == [f for f in MIGRATION_FILES if not f.startswith(("004", "010"))]
    assert result.skipped == ["004_add_observability_rls.sql", "010_add_annotation_rls.sql"]
    tables, settings, indexes = seed_verification(empty_db)
    assert tables == {"traces", "spans", "profiles"}
    assert settings == [("settings", "jsonb")]
    assert indexes >= SEED_INDEXES
    with psycopg.connect(empty_db) as conn:
        # constraint names and checks from the seed
        checks = {
            r[0]
            for r in conn.execute(
                "SELECT conname FROM pg_constraint WHERE contype = 'c' AND conrelid IN "
                "('traces'::regclass, 'spans'::regclass)"
            )
        }
        assert {"valid_status", "valid_span_status"} <= checks
        cols = dict(
            conn.execute(
                """SELECT column_name, data_type || coalesce('(' || character_maximum_length || ')', '')
               FROM information_schema.columns WHERE table_name = 'spans'"""
            ).fetchall()
        )
        assert cols["name"] == "character varying(255)"
        assert cols["provider"] == "character varying(100)"
        assert cols["error_type"] == "character varying(100)"
        assert cols["child_spans"] == "ARRAY"
        # no RLS without --rls
        assert conn.execute("SELECT relrowsecurity FROM pg_class WHERE relname = 'traces'").fetchone() == (
            False,
        )


def test_second_run_is_a_noop(empty_db: str) -> None:
    install_schema(empty_db)
    before = recorded(empty_db)
    again = install_schema(empty_db)
    assert not again.changed and again.applied == [] and again.adopted == []
    assert recorded(empty_db) == before
    states = {s.name: s.state for s in schema_status(empty_db)}
    assert states["003_add_observability_tables"] == "applied"
    assert states["004_add_observability_rls"] == "optional"


def test_concurrent_installers_apply_each_migration_once(empty_db: str) -> None:
    procs = [
        subprocess.Popen([*CLI, "--dsn", empty_db], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    applied_lines = [line for out, _ in outputs for line in out.splitlines() if line.startswith("applied")]
    optional = [m for m in load_migrations() if m.optional]
    assert len(applied_lines) == len(MIGRATION_FILES) - len(optional)  # each non-optional one exactly once
    assert [r[0] for r in recorded(empty_db)] == [m.version for m in load_migrations() if not m.optional]


def test_hand_built_seed_database_is_adopted(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute((DATA / "seed_guide.sql").read_text())
        conn.execute(
            (DATA / "seed_guide_rls.sql")
            .read_text()
            .replace(
                "-- Enable RLS",
                "CREATE SCHEMA auth; CREATE FUNCTION auth.uid() RETURNS uuid "
                "LANGUAGE sql AS 'SELECT NULL::uuid';",
            )
        )
        conn.execute("INSERT INTO traces (workflow_id, execution_id) VALUES ('wf', 'kept')")
    result = install_schema(empty_db)
    seed_files = [f for f in MIGRATION_FILES if int(f[:3]) <= 5]
    assert result.adopted == seed_files  # 004 too: its policies were already there
    assert result.applied == [f for f in MIGRATION_FILES if f not in seed_files]  # ours, after the seed
    assert {r[1] for r in recorded(empty_db) if r[0] <= 5} == {"adopted"}
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT execution_id FROM traces").fetchall() == [("kept",)]
        # the user's own profiles table was left as it was
        assert conn.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'profiles' AND column_name = 'username'"
        ).fetchone() == (1,)
    assert not install_schema(empty_db).changed


def test_dry_run_changes_nothing(empty_db: str) -> None:
    proc = run_cli("--dsn", empty_db, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "CREATE TABLE IF NOT EXISTS traces" in proc.stdout
    assert "skipped 004_add_observability_rls.sql" in proc.stdout
    with psycopg.connect(empty_db) as conn:
        n = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert n == (0,)
    rls = run_cli("--dsn", empty_db, "--dry-run", "--rls")
    assert "supabase_auth_uid.sql" in rls.stdout and "CREATE POLICY" in rls.stdout


def test_status_cli_lists_states(empty_db: str) -> None:
    assert "pending" in run_cli("--dsn", empty_db, "--status").stdout
    run_cli("--dsn", empty_db)
    out = run_cli("--dsn", empty_db, "--status").stdout
    assert "003_add_observability_tables.sql     applied" in out
    assert "004_add_observability_rls.sql        optional" in out


def _setup_rls_world(dsn: str) -> tuple[str, uuid.UUID, uuid.UUID]:
    user_a, user_b = uuid.uuid4(), uuid.uuid4()
    role = f"app_user_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} NOLOGIN NOSUPERUSER NOBYPASSRLS")
        conn.execute(f"GRANT SELECT, INSERT, UPDATE ON traces, spans, profiles TO {role}")
        conn.execute("INSERT INTO profiles (id) VALUES (%s), (%s)", (user_a, user_b))
        for label, user in (("a", user_a), ("b", user_b), ("anon", None)):
            conn.execute(
                "INSERT INTO traces (trace_id, workflow_id, execution_id, user_id) VALUES (%s, 'wf', %s, %s)",
                (uuid.uuid5(uuid.NAMESPACE_DNS, label + role), label, user),
            )
            conn.execute(
                "INSERT INTO spans (trace_id, span_type, name) VALUES (%s, 'llm', %s)",
                (uuid.uuid5(uuid.NAMESPACE_DNS, label + role), label),
            )
    return role, user_a, user_b


def test_rls_on_plain_postgres_with_compat_auth_uid(empty_db: str) -> None:
    result = install_schema(empty_db, rls=True)
    assert "004_add_observability_rls.sql" in result.applied
    with psycopg.connect(empty_db) as conn:
        policies = {(r[0], r[1]) for r in conn.execute("SELECT tablename, policyname FROM pg_policies")}
        assert {p for p in policies if p[0] != "otel_annotations"} == SEED_POLICIES
        assert {p[1] for p in policies if p[0] == "otel_annotations"} == ANNOTATION_POLICIES
    role, user_a, _ = _setup_rls_world(empty_db)
    with psycopg.connect(empty_db) as conn:
        conn.execute(f"SET ROLE {role}")
        conn.execute("SELECT set_config('request.jwt.claim.sub', %s, false)", (str(user_a),))
        assert sorted(r[0] for r in conn.execute("SELECT execution_id FROM traces")) == ["a", "anon"]
        assert sorted(r[0] for r in conn.execute("SELECT name FROM spans")) == ["a", "anon"]
        # the Supabase JSON claims form works too
        conn.execute("SELECT set_config('request.jwt.claim.sub', '', false)")
        conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (f'{{"sub": "{user_a}"}}',))
        assert sorted(r[0] for r in conn.execute("SELECT execution_id FROM traces")) == ["a", "anon"]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO traces (workflow_id, execution_id, user_id) "
                "SELECT 'wf', 'sneaky', id FROM profiles WHERE id <> %s LIMIT 1",
                (user_a,),
            )


def test_compat_never_replaces_an_existing_auth_uid(empty_db: str) -> None:
    fixed = uuid.uuid4()
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA auth")
        conn.execute(f"CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql AS $$ SELECT '{fixed}'::uuid $$")
    install_schema(empty_db, rls=True)
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT auth.uid()").fetchone() == (fixed,)


def test_cleanup_old_traces_deletes_only_old_completed(empty_db: str) -> None:
    install_schema(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        rows = [
            ("old-done", "completed", 120),
            ("new-done", "completed", 10),
            ("old-failed", "failed", 120),
            ("old-running", "running", 120),
        ]
        for exec_id, status, age in rows:
            tid = conn.execute(
                "INSERT INTO traces (workflow_id, execution_id, status, started_at) "
                "VALUES ('wf', %s, %s, now() - make_interval(days => %s)) RETURNING trace_id",
                (exec_id, status, age),
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO spans (trace_id, span_type, name) VALUES (%s, 'llm', %s)", (tid, exec_id)
            )
        assert conn.execute("SELECT cleanup_old_traces(90)").fetchone() == (1,)
        left = sorted(r[0] for r in conn.execute("SELECT execution_id FROM traces"))
        assert left == ["new-done", "old-failed", "old-running"]
        assert sorted(r[0] for r in conn.execute("SELECT name FROM spans")) == left  # cascade


def test_changed_migration_is_refused(empty_db: str) -> None:
    install_schema(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(f"UPDATE {BOOKKEEPING_TABLE} SET checksum = 'deadbeef' WHERE version = 3")
    with pytest.raises(ChecksumMismatch, match=r"003_add_observability_tables\.sql changed"):
        install_schema(empty_db)
    proc = run_cli("--dsn", empty_db)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "changed since it was applied" in proc.stderr
    assert "changed" in run_cli("--dsn", empty_db, "--status").stdout


def test_connection_error_is_one_line_without_password() -> None:
    secret = "s3cr3t-Pa55word"
    proc = run_cli("--dsn", f"postgresql://someone:{secret}@127.0.0.1:1/nowhere")
    assert proc.returncode == 1
    assert proc.stdout == ""
    warning, error = proc.stderr.splitlines()  # a password in argv is warned about, once
    assert "holds a password" in warning and "OTEL_EXPORTER_POSTGRES_DSN" in warning
    assert error.startswith("otel-pg-install-schema: error: cannot connect")
    assert secret not in proc.stderr


def test_dsn_from_environment_and_password_kept_out(empty_db: str, pg_server_dsn: str) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("OTEL_EXPORTER_POSTGRES_DSN", "DATABASE_URL")}
    proc = run_cli(env={**env, "DATABASE_URL": empty_db})
    assert proc.returncode == 0, proc.stderr
    # OTEL_EXPORTER_POSTGRES_DSN wins over DATABASE_URL
    bad = "postgresql://x:hunter2hunter2@127.0.0.1:1/none"
    proc = run_cli("--status", env={**env, "DATABASE_URL": empty_db, "OTEL_EXPORTER_POSTGRES_DSN": bad})
    assert proc.returncode == 1 and "OTEL_EXPORTER_POSTGRES_DSN" in proc.stderr
    assert "hunter2hunter2" not in proc.stderr + proc.stdout
    # libpq PG* variables as the last resort
    parts = conninfo_to_dict(empty_db)
    pg_env = {
        **env,
        "PGHOST": parts.get("host", "127.0.0.1"),
        "PGPORT": str(parts.get("port", 5432)),
        "PGUSER": parts.get("user", "postgres"),
        "PGDATABASE": parts["dbname"],
    }
    proc = run_cli("--status", env=pg_env)
    assert proc.returncode == 0 and "applied" in proc.stdout, proc.stderr


def test_permission_denied_is_reported_clearly(empty_db: str) -> None:
    role = f"weak_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'weak-role-pw'")
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    weak = make_conninfo(empty_db, user=role, password="weak-role-pw")
    with pytest.raises(PermissionDenied, match="permission denied"):
        install_schema(weak)
    proc = run_cli("--dsn", weak)
    assert proc.returncode == 1 and "permission denied" in proc.stderr
    assert "weak-role-pw" not in proc.stderr


def test_installer_works_from_a_built_wheel(tmp_path: Path, empty_db: str) -> None:
    root = Path(__file__).resolve().parents[2]
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(root)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(dist.glob("otel_pg_exporter-*.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "otel_pg_exporter/sql/003_add_observability_tables.sql" in names
    assert "otel_pg_exporter/sql/compat/supabase_auth_uid.sql" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    proc = subprocess.run(
        [str(venv / "bin" / "otel-pg-install-schema"), "--dsn", empty_db, "--rls"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "applied  004_add_observability_rls.sql" in proc.stdout
    assert [r[0] for r in recorded(empty_db)] == [m.version for m in load_migrations()]


def test_annotation_rls_follows_the_seed_rls(empty_db: str) -> None:
    """010 is optional like 004: skipped without --rls; on a database that has 004, an upgrade run
    without --rls applies it (a Supabase project keeps end users inside their own feedback)."""
    with psycopg.connect(empty_db, autocommit=True) as conn:
        install_schema(empty_db, rls=True)
        conn.execute('DROP POLICY "Users can view their own feedback" ON otel_annotations')
        conn.execute('DROP POLICY "Users can give feedback on their own traces" ON otel_annotations')
        conn.execute('DROP POLICY "Users can change their own feedback" ON otel_annotations')
        conn.execute("DELETE FROM otel_pg_schema_migrations WHERE version = 10")  # as before the upgrade
        result = install_schema(empty_db)
        assert result.applied == ["010_add_annotation_rls.sql"]
        policies = conn.execute(
            "SELECT count(*) FROM pg_policies WHERE tablename = 'otel_annotations'"
        ).fetchone()
        assert policies == (3,)
