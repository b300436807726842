"""``otel-pg-doctor``: is this deployment healthy? Read-only, quick, safe as a monitoring probe.

Each check is a function of one read-only connection that returns ``Finding``s (name, status
``ok``/``warn``/``fail``, a one-line detail, what to do). The checks are listed in ``CHECKS``, in
the order they print; a check that errors becomes one ``fail`` finding and the others still run.
Every query reads catalogs, statistics or index-backed slices of the tables (never a full scan of
``spans``), under a statement timeout.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict

import psycopg

from ...config.dsn import resolve_dsn, safe_message
from ...connection import connect
from ...errors import OtelPgError
from ...terminal import for_terminal
from .findings import (
    FAIL,
    OK,
    SEVERITY,
    WARN,
    Check,
    DoctorOptions,
    Finding,
    relation_exists,
    select_one,
)
from .health_checks import (
    check_budgets,
    check_gin_pending,
    check_retention,
    check_settings,
    check_spool,
    check_stuck,
    check_tables,
    check_unpriced,
)
from .schema_checks import (
    check_columns,
    check_constraints,
    check_exporter_role,
    check_indexes,
    check_migrations,
    check_rls,
)

__all__ = ["CHECKS", "DoctorOptions", "Finding", "diagnose", "exit_code", "render_json", "render_text"]

#: Every check, in the order they print; each a function of the one read-only connection.
CHECKS: tuple[tuple[str, Check], ...] = (
    ("migrations", check_migrations),
    ("seed_columns", check_columns),
    ("seed_constraints", check_constraints),
    ("seed_indexes", check_indexes),
    ("rls", check_rls),
    ("exporter_role", check_exporter_role),
    ("tables", check_tables),
    ("gin_pending_list", check_gin_pending),
    ("stuck", check_stuck),
    ("unpriced_models", check_unpriced),
    ("budgets", check_budgets),
    ("retention", check_retention),
    ("server_settings", check_settings),
)


def diagnose(
    dsn: str | None = None, *, schema: str | None = None, options: DoctorOptions | None = None
) -> list[Finding]:
    """Run every check on one read-only connection; never writes."""
    opts = options or DoctorOptions()
    resolved, _ = resolve_dsn(dsn)
    try:
        with connect(dsn, schema=schema) as conn:
            conn.execute("SET default_transaction_read_only = on")
            conn.execute(f"SET statement_timeout = {int(opts.statement_timeout_ms)}")
            version = select_one(conn, "SHOW server_version")
            current = select_one(conn, "SELECT current_schema()")
            findings = [
                Finding(
                    "connection",
                    OK,
                    f"PostgreSQL {version}, schema {current}",
                )
            ]
            if not relation_exists(conn, "traces") or not relation_exists(conn, "spans"):
                findings.append(
                    Finding(
                        "tables_present",
                        FAIL,
                        "no traces/spans tables in this schema",
                        "otel-pg-install-schema",
                    )
                )
                return findings
            for name, check in CHECKS:
                try:
                    findings += check(conn, opts)
                except psycopg.Error as exc:
                    findings.append(Finding(name, FAIL, f"could not check: {safe_message(exc, resolved)}"))
            return findings + check_spool(resolved, opts)
    except OtelPgError as exc:
        return [
            Finding(
                "connection", FAIL, safe_message(exc, resolved), "check the DSN and that the server is up"
            )
        ]


def exit_code(findings: Sequence[Finding]) -> int:
    """0 healthy, 1 warnings only, 2 a failure."""
    return max((SEVERITY[f.status] for f in findings), default=0)


def render_text(findings: Sequence[Finding]) -> str:
    width = max((len(f.name) for f in findings), default=10)
    lines = []
    for f in findings:  # details quote stored data (model names, ids): control characters escaped
        lines.append(f"{f.status.upper():<4}  {for_terminal(f.name):<{width}}  {for_terminal(f.detail)}")
        if f.action and f.status != OK:
            lines.append(f"{'':<4}  {'':<{width}}  -> {for_terminal(f.action)}")
    worst = exit_code(findings)
    counts = {s: sum(1 for f in findings if f.status == s) for s in (OK, WARN, FAIL)}
    verdict = ("healthy", "warnings", "problems")[worst]
    lines.append(f"\n{verdict}: {counts[OK]} ok, {counts[WARN]} warn, {counts[FAIL]} fail")
    return "\n".join(lines) + "\n"


def render_json(findings: Sequence[Finding]) -> str:
    return json.dumps(
        {"status": ("ok", "warn", "fail")[exit_code(findings)], "findings": [asdict(f) for f in findings]},
        indent=2,
        default=str,
    )
