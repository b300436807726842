"""Doctor checks of the seed's contract: migrations, columns, constraints, indexes (by name and
definition), RLS, the exporter role's grants. Each reads catalogs only."""

from __future__ import annotations

import psycopg

from ...schema.migrations import EXPECTED_COLUMNS, migration_states
from ...schema.tables import CONSTRAINTS, INDEXES, POLICIES
from .findings import (
    FAIL,
    OK,
    WARN,
    DoctorOptions,
    Finding,
    relation_exists,
    select_one,
    select_rows,
)

#: The seed's contract (``schema.tables``): index definitions, constraints, RLS policies.
EXPECTED_INDEX_DEFS = INDEXES
EXPECTED_CONSTRAINTS = CONSTRAINTS
EXPECTED_POLICIES = POLICIES

#: What the least-privilege exporter role (sql/roles/otel_exporter_role.sql) needs.
EXPORTER_ROLE = "otel_exporter"
EXPORTER_GRANTS: tuple[tuple[str, str], ...] = (
    ("traces", "SELECT"),
    ("traces", "INSERT"),
    ("traces", "UPDATE"),
    ("spans", "SELECT"),
    ("spans", "INSERT"),
    ("spans", "UPDATE"),
    ("profiles", "SELECT"),
)


def check_columns(conn: psycopg.Connection, opts: DoctorOptions) -> list[Finding]:
    missing: list[str] = []
    for table, columns in EXPECTED_COLUMNS.items():
        have = {
            r["column_name"]
            for r in select_rows(
                conn,
                """SELECT column_name FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = %s""",
                (table,),
            )
        }
        missing += [f"{table}.{c}" for c in columns if c not in have]
    if missing:
        return [
            Finding(
                "seed_columns",
                FAIL,
                "missing: " + ", ".join(missing),
                "otel-pg-install-schema (or restore the columns from sql/003)",
                {"missing": missing},
            )
        ]
    return [Finding("seed_columns", OK, f"all {sum(map(len, EXPECTED_COLUMNS.values()))} columns present")]


def check_constraints(conn: psycopg.Connection, opts: DoctorOptions) -> list[Finding]:
    have = {
        (r["table"], r["name"]): (r["kind"], r["validated"])
        for r in select_rows(
            conn,
            """SELECT t.relname AS table, c.conname AS name, c.contype AS kind,
                      c.convalidated AS validated
               FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
               WHERE t.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
                 AND t.relname = ANY(%s)""",
            (list(EXPECTED_CONSTRAINTS),),
        )
    }
    missing, invalid = [], []
    for table, expected in EXPECTED_CONSTRAINTS.items():
        for name, kind in expected.items():
            found = have.get((table, name))
            if found is None or found[0] != kind:
                missing.append(f"{table}.{name}")
            elif not found[1]:
                invalid.append(f"{table}.{name}")
    if missing or invalid:
        detail = "; ".join(
            part
            for part in (
                "missing: " + ", ".join(missing) if missing else "",
                "not validated: " + ", ".join(invalid) if invalid else "",
            )
            if part
        )
        return [
            Finding(
                "seed_constraints",
                FAIL,
                detail,
                "recreate them as sql/003 defines them (ALTER TABLE ... ADD / VALIDATE CONSTRAINT)",
                {"missing": missing, "not_validated": invalid},
            )
        ]
    total = sum(map(len, EXPECTED_CONSTRAINTS.values()))
    return [Finding("seed_constraints", OK, f"all {total} constraints present and validated")]


def check_indexes(conn: psycopg.Connection, opts: DoctorOptions) -> list[Finding]:
    rows = select_rows(
        conn,
        """SELECT i.relname AS name, pg_get_indexdef(x.indexrelid) AS definition,
                  x.indisvalid AS valid, x.indisready AS ready
           FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
           WHERE i.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
             AND i.relname = ANY(%s)""",
        (list(EXPECTED_INDEX_DEFS),),
    )
    have = {r["name"]: r for r in rows}
    missing = [n for n in EXPECTED_INDEX_DEFS if n not in have]
    different = [
        n for n, d in EXPECTED_INDEX_DEFS.items() if n in have and not have[n]["definition"].endswith(d)
    ]
    invalid = [n for n in EXPECTED_INDEX_DEFS if n in have and not (have[n]["valid"] and have[n]["ready"])]
    findings: list[Finding] = []
    if missing:
        findings.append(
            Finding(
                "seed_indexes",
                FAIL,
                "missing: " + ", ".join(missing),
                "otel-pg-install-schema recreates them (CREATE INDEX IF NOT EXISTS, as in sql/002-003)",
                {"missing": missing},
            )
        )
    if different:
        findings.append(
            Finding(
                "seed_index_definitions",
                FAIL,
                "defined differently from the seed: "
                + ", ".join(f"{n} ({have[n]['definition'].split(' USING ')[-1]})" for n in different),
                "DROP INDEX and recreate it as sql/003 defines it",
                {"different": different},
            )
        )
    if invalid:
        findings.append(
            Finding(
                "seed_index_validity",
                FAIL,
                "invalid (a failed CREATE INDEX CONCURRENTLY or REINDEX): " + ", ".join(invalid),
                "REINDEX INDEX CONCURRENTLY " + ", ".join(invalid),
                {"invalid": invalid},
            )
        )
    return findings or [
        Finding("seed_indexes", OK, f"all {len(EXPECTED_INDEX_DEFS)} indexes present, as defined, valid")
    ]


def check_migrations(conn: psycopg.Connection, opts: DoctorOptions) -> list[Finding]:
    states = migration_states(conn)
    changed = [s.name for s in states if s.state == "changed"]
    pending = [s.name for s in states if s.state == "pending"]
    unmanaged = [s.name for s in states if s.state == "present"]
    data = {s.name: s.state for s in states}
    if changed:
        return [
            Finding(
                "migrations",
                FAIL,
                "changed since applied (checksum differs): " + ", ".join(changed),
                "restore the released files; put changes in a new migration",
                data,
            )
        ]
    if pending or unmanaged:
        parts = ([f"pending: {', '.join(pending)}"] if pending else []) + (
            [f"present but not recorded: {', '.join(unmanaged)}"] if unmanaged else []
        )
        return [Finding("migrations", WARN, "; ".join(parts), "otel-pg-install-schema", data)]
    applied = sum(1 for s in states if s.state in ("applied", "adopted"))
    return [Finding("migrations", OK, f"{applied} applied, none pending or changed", "", data)]


def check_rls(conn: psycopg.Connection, opts: DoctorOptions) -> list[Finding]:
    enabled = {
        r["relname"]: r["relrowsecurity"]
        for r in select_rows(
            conn,
            """SELECT relname, relrowsecurity FROM pg_class
               WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
             AND relname IN ('traces', 'spans')""",
        )
    }
    policies = {
        (r["tablename"], r["policyname"])
        for r in select_rows(
            conn,
            "SELECT tablename, policyname FROM pg_policies WHERE schemaname = current_schema()",
        )
    }
    expected = [(t, p) for t, names in EXPECTED_POLICIES.items() for p in names]
    missing = [f"{t}: {p!r}" for t, p in expected if (t, p) not in policies]
    on = [t for t in ("traces", "spans") if enabled.get(t)]
    if not on:
        if len(missing) < len(expected):
            return [
                Finding(
                    "rls",
                    WARN,
                    "policies exist but row level security is off: every API user sees every trace",
                    "ALTER TABLE traces / spans ENABLE ROW LEVEL SECURITY (or otel-pg-install-schema --rls)",
                )
            ]
        return [Finding("rls", OK, "off (apply 004 with otel-pg-install-schema --rls for per-user access)")]
    if len(on) < 2:
        return [
            Finding(
                "rls",
                FAIL,
                f"row level security is on for {on[0]} only",
                "enable it on both traces and spans (otel-pg-install-schema --rls)",
            )
        ]
    if missing:
        return [
            Finding(
                "rls",
                FAIL,
                "on, but seed policies missing: " + "; ".join(missing),
                "otel-pg-install-schema --rls recreates them",
                {"missing": missing},
            )
        ]
    return [Finding("rls", OK, f"on for traces and spans, all {len(expected)} seed policies present")]


def check_exporter_role(conn: psycopg.Connection, opts: DoctorOptions) -> list[Finding]:
    role = select_rows(
        conn, "SELECT rolname, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = %s", (EXPORTER_ROLE,)
    )
    if not role:
        return [
            Finding(
                "exporter_role", OK, f"no {EXPORTER_ROLE} role (optional: sql/roles/otel_exporter_role.sql)"
            )
        ]
    missing = [
        f"{privilege} on {table}"
        for table, privilege in EXPORTER_GRANTS
        if relation_exists(conn, table)
        and not select_one(conn, "SELECT has_table_privilege(%s, %s, %s)", (EXPORTER_ROLE, table, privilege))
    ]
    if not select_one(conn, "SELECT has_schema_privilege(%s, current_schema(), 'USAGE')", (EXPORTER_ROLE,)):
        missing.insert(0, "USAGE on the schema")
    rls_on = bool(
        select_one(
            conn,
            """SELECT bool_or(relrowsecurity) FROM pg_class
               WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
                 AND relname IN ('traces', 'spans')""",
        )
    )
    if sum(1 for m in missing if " on " in m and "schema" not in m) == len(EXPORTER_GRANTS):
        # a cluster-wide role with no table grant here: it serves another database
        return [
            Finding(
                "exporter_role",
                OK,
                f"{EXPORTER_ROLE} exists but has no grants here (not used for this database)",
            )
        ]
    problems = list(missing)
    if rls_on and not role[0]["rolbypassrls"]:
        problems.append("BYPASSRLS (RLS is on: setting traces.user_id would fail the seed's policies)")
    if not role[0]["rolcanlogin"]:
        problems.append("LOGIN")
    if problems:
        return [
            Finding(
                "exporter_role",
                FAIL,
                f"{EXPORTER_ROLE} lacks: " + ", ".join(problems),
                "run sql/roles/otel_exporter_role.sql again (idempotent)",
                {"missing": problems},
            )
        ]
    return [Finding("exporter_role", OK, f"{EXPORTER_ROLE} has every grant the exporter needs")]
