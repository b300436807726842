"""Doctor checks of the deployment's health: table bloat and statistics, GIN pending lists, stuck
traces, unpriced models, budgets, retention, the local spool, server settings. Each reads
statistics or index-backed slices (never a full scan of ``spans``)."""

from __future__ import annotations

import os
from datetime import timedelta

import psycopg

from ...schema.tables import INDEXES
from .findings import (
    OK,
    WARN,
    DoctorOptions,
    Finding,
    mib,
    relation_exists,
    select_one,
    select_rows,
)

EXPECTED_INDEX_DEFS = INDEXES

#: Thresholds, as data.
DEAD_TUPLE_SHARE_WARN = 0.2  # dead / (live + dead), once there are at least DEAD_TUPLES_MIN dead
DEAD_TUPLES_MIN = 10_000
UNANALYZED_ROWS_WARN = 10_000  # a table this big that was never analyzed plans badly
GIN_PENDING_WARN_BYTES = 4 * 1024 * 1024  # the server's default gin_pending_list_limit
RETENTION_STALE = timedelta(days=2)
STATEMENT_TIMEOUT_MIN_MS = 5_000  # an export transaction must fit (the exporter's default budget is 10 s)
LOCK_TIMEOUT_MIN_MS = 1_000
IDLE_SESSION_TIMEOUT_MIN_MS = 60_000  # pooled connections sit idle between batches
CONNECTION_HEADROOM_MIN = 5


def check_tables(conn: psycopg.Connection, opts: DoctorOptions) -> list[Finding]:
    rows = select_rows(
        conn,
        """SELECT c.relname AS name, c.reltuples::bigint AS rows_estimate,
                  pg_total_relation_size(c.oid) AS total_bytes, pg_indexes_size(c.oid) AS index_bytes,
                  s.n_live_tup AS live, s.n_dead_tup AS dead,
                  greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum,
                  greatest(s.last_analyze, s.last_autoanalyze) AS last_analyze
           FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
           WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
             AND c.relkind = 'r'
             AND c.relname IN ('traces', 'spans', 'profiles')
           ORDER BY c.relname DESC""",
    )
    index_sizes: dict[str, dict[str, int]] = {}
    for ix in select_rows(
        conn,
        """SELECT t.relname AS table, i.relname AS index, pg_relation_size(i.oid) AS bytes
           FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
           WHERE t.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
             AND t.relname IN ('traces', 'spans', 'profiles')""",
    ):
        index_sizes.setdefault(ix["table"], {})[ix["index"]] = int(ix["bytes"])
    findings: list[Finding] = []
    for r in rows:
        rows_est = max(int(r["rows_estimate"] or 0), int(r["live"] or 0))
        dead = int(r["dead"] or 0)
        share = dead / (rows_est + dead) if rows_est + dead else 0.0
        detail = (
            f"~{rows_est:,} rows, {mib(r['total_bytes'])} ({mib(r['index_bytes'])} indexes), "
            f"{dead:,} dead tuples, last vacuum {r['last_vacuum'] or 'never'}, "
            f"last analyze {r['last_analyze'] or 'never'}"
        )
        indexes = index_sizes.get(r["name"], {})
        if indexes:
            biggest = max(indexes, key=lambda n: indexes[n])
            detail += f"; largest index {biggest} {mib(indexes[biggest])}"
        data = {k: (str(v) if v is not None and k.startswith("last_") else v) for k, v in r.items()}
        data["index_bytes_by_name"] = indexes
        if dead >= DEAD_TUPLES_MIN and share >= DEAD_TUPLE_SHARE_WARN:
            findings.append(
                Finding(
                    f"table:{r['name']}",
                    WARN,
                    f"{share:.0%} dead tuples: " + detail,
                    f"VACUUM (ANALYZE) {r['name']}; check autovacuum is on and keeping up",
                    data,
                )
            )
        elif rows_est >= UNANALYZED_ROWS_WARN and r["last_analyze"] is None:
            findings.append(
                Finding(
                    f"table:{r['name']}",
                    WARN,
                    "never analyzed: " + detail,
                    f"ANALYZE {r['name']}",
                    data,
                )
            )
        else:
            findings.append(Finding(f"table:{r['name']}", OK, detail, "", data))
    return findings


def check_gin_pending(conn: psycopg.Connection, opts: DoctorOptions) -> list[Finding]:
    gins = [n for n, d in EXPECTED_INDEX_DEFS.items() if "USING gin" in d]
    if not select_one(conn, "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgstattuple')"):
        return [
            Finding(
                "gin_pending_list",
                OK,
                "not measured: needs the pgstattuple extension (CREATE EXTENSION pgstattuple)",
            )
        ]
    block = int(select_one(conn, "SELECT current_setting('block_size')::int"))
    sizes: dict[str, int] = {}
    for name in gins:
        if relation_exists(conn, name):
            pages = select_one(conn, "SELECT pending_pages FROM pgstatginindex(%s::regclass)", (name,))
            sizes[name] = int(pages or 0) * block
    big = {n: b for n, b in sizes.items() if b >= GIN_PENDING_WARN_BYTES}
    detail = ", ".join(f"{n} {mib(b)}" for n, b in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
    if big:
        return [
            Finding(
                "gin_pending_list",
                WARN,
                "large pending lists (every search scans them; the next insert that flushes pays): "
                + ", ".join(f"{n} {mib(b)}" for n, b in big.items()),
                "SELECT gin_clean_pending_list('<index>'::regclass); keep gin_pending_list_limit near 4 MB",
                {"bytes": sizes},
            )
        ]
    return [Finding("gin_pending_list", OK, detail or "no GIN indexes", "", {"bytes": sizes})]


def check_stuck(conn: psycopg.Connection, opts: DoctorOptions) -> list[Finding]:
    params = {"grace": opts.grace}
    running = select_one(
        conn,
        """SELECT count(*) FROM traces
           WHERE status = 'running' AND started_at < (now() AT TIME ZONE 'UTC') - %(grace)s""",
        params,
    )
    # placeholders carry no start of their own: their trace's start tells their age
    pending = select_one(
        conn,
        """SELECT count(*) FROM spans s JOIN traces t ON t.trace_id = s.trace_id
           WHERE s.status = 'pending' AND t.started_at < (now() AT TIME ZONE 'UTC') - %(grace)s""",
        params,
    )
    hours = opts.grace.total_seconds() / 3600
    out = []
    for name, count, what in (
        ("stuck_running_traces", running, "traces still 'running'"),
        ("stale_placeholders", pending, "'pending' placeholder spans"),
    ):
        if count:
            out.append(
                Finding(
                    name,
                    WARN,
                    f"{count:,} {what} older than {hours:g} h (a process died, or a parent span never came)",
                    "otel-pg-cleanup removes them once past retention (stale_running / stale_pending)",
                    {"count": count},
                )
            )
        else:
            out.append(Finding(name, OK, f"no {what} older than {hours:g} h", "", {"count": 0}))
    return out


def check_unpriced(conn: psycopg.Connection, opts: DoctorOptions) -> list[Finding]:
    rows = select_rows(
        conn,
        """SELECT coalesce(model, '(unknown)') AS model, coalesce(provider, '(unknown)') AS provider,
                  count(*) AS calls
           FROM spans
           WHERE started_at >= (now() AT TIME ZONE 'UTC') - %(recent)s
             AND span_type IN ('llm', 'embedding') AND status <> 'pending'
             AND metadata #>> '{cost,status}' = 'unpriced'
           GROUP BY 1, 2 ORDER BY 3 DESC, 1 LIMIT 20""",
        {"recent": opts.recent},
    )
    days = opts.recent.days or 1
    if rows:
        return [
            Finding(
                "unpriced_models",
                WARN,
                f"cost unknown (not zero) in the last {days} days: "
                + ", ".join(f"{r['model']} ({r['provider']}, {r['calls']:,} calls)" for r in rows),
                "add their prices (prices= / OTEL_EXPORTER_POSTGRES_PRICES), then otel-pg-recompute-costs",
                {"models": rows},
            )
        ]
    return [Finding("unpriced_models", OK, f"every model call of the last {days} days has a price")]


def check_budgets(conn: psycopg.Connection, opts: DoctorOptions) -> list[Finding]:
    if not relation_exists(conn, "otel_budgets"):
        return [Finding("budgets", WARN, "otel_budgets is missing (migration 006)", "otel-pg-install-schema")]
    # month to date per budget, over leaf model calls (the rule of traces.total_cost), computed
    # here rather than by check_budgets(), which sends pg_notify for every breach: a probe run
    # every minute would notify listeners every minute
    rows = select_rows(
        conn,
        """WITH month_calls AS (
               SELECT s.cost, t.workflow_id, t.user_id
               FROM spans s JOIN traces t ON t.trace_id = s.trace_id
               WHERE s.started_at >= date_trunc('month', now() AT TIME ZONE 'UTC')
                 AND s.span_type IN ('llm', 'embedding') AND s.status <> 'pending'
                 AND NOT EXISTS (SELECT 1 FROM spans c
                                 WHERE c.parent_span_id = s.span_id AND c.span_type IN ('llm', 'embedding'))
           )
           SELECT b.budget_id, b.scope, b.scope_value, b.monthly_limit, coalesce(sum(m.cost), 0) AS spent
           FROM otel_budgets b
           LEFT JOIN month_calls m
             ON b.scope = 'all'
             OR (b.scope = 'workflow' AND m.workflow_id = b.scope_value)
             OR (b.scope = 'user' AND m.user_id::text = b.scope_value)
           GROUP BY b.budget_id ORDER BY b.budget_id""",
    )
    if not rows:
        return [Finding("budgets", OK, "no budgets set (otel_budgets)")]
    breached = [r for r in rows if r["spent"] > r["monthly_limit"]]
    if breached:
        return [
            Finding(
                "budgets",
                WARN,
                "breached this month: "
                + ", ".join(
                    f"{r['scope']}{' ' + r['scope_value'] if r['scope_value'] else ''} "
                    f"{float(r['spent']):.2f} of {float(r['monthly_limit']):.2f} USD"
                    for r in breached
                ),
                "see otel-pg-report; raise the limit or find the spender",
                {
                    "breached": [
                        {**r, "spent": float(r["spent"]), "monthly_limit": float(r["monthly_limit"])}
                        for r in breached
                    ]
                },
            )
        ]
    return [Finding("budgets", OK, f"{len(rows)} budgets, none breached this month")]


def check_retention(conn: psycopg.Connection, opts: DoctorOptions) -> list[Finding]:
    findings: list[Finding] = []
    if not relation_exists(conn, "otel_retention_runs"):
        findings.append(
            Finding(
                "retention_runs",
                WARN,
                "otel_retention_runs is missing (migration 007)",
                "otel-pg-install-schema",
            )
        )
    else:
        last = select_rows(
            conn,
            """SELECT run_id, started_at, finished_at, removed,
                      now() - coalesce(finished_at, started_at) AS age
               FROM otel_retention_runs ORDER BY run_id DESC LIMIT 1""",
        )
        if not last:
            old = select_one(
                conn,
                "SELECT count(*) FROM (SELECT 1 FROM traces WHERE started_at < now() - %s LIMIT 1000) AS o",
                (timedelta(days=opts.retention_days),),
            )
            if old:
                findings.append(
                    Finding(
                        "retention_runs",
                        WARN,
                        f"retention has never run and {old:,}{'+' if old >= 1000 else ''} traces are older "
                        f"than {opts.retention_days} days: they are kept forever",
                        "schedule otel-pg-cleanup (cron) or CALL otel_retention_sweep(...) (pg_cron)",
                    )
                )
            else:
                findings.append(
                    Finding(
                        "retention_runs",
                        OK,
                        f"retention has not run yet; nothing is older than {opts.retention_days} days",
                        data={"never_run": True},
                    )
                )
        else:
            r = last[0]
            total = sum(int(v.get("traces", 0)) for v in (r["removed"] or {}).values())
            when = f"run {r['run_id']} started {r['started_at']:%Y-%m-%d %H:%M} UTC"
            if r["finished_at"] is None and r["age"] > timedelta(hours=1):
                findings.append(
                    Finding(
                        "retention_runs",
                        WARN,
                        f"last {when} never finished",
                        "look at the server log; run otel-pg-cleanup",
                    )
                )
            elif r["age"] > RETENTION_STALE:
                findings.append(
                    Finding(
                        "retention_runs",
                        WARN,
                        f"last {when}, {r['age'].days} days ago",
                        "is the schedule still running? otel-pg-cleanup / otel_retention_sweep",
                    )
                )
            else:
                findings.append(Finding("retention_runs", OK, f"last {when}, removed {total:,} traces"))
    if select_one(conn, "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron')"):
        try:
            jobs = select_one(
                conn,
                "SELECT count(*) FROM cron.job WHERE active AND command ILIKE %s",
                ("%otel_retention_sweep%",),
            )
        except psycopg.Error:
            jobs = None
        if jobs:
            findings.append(
                Finding("retention_schedule", OK, f"pg_cron runs otel_retention_sweep ({jobs} job)")
            )
        elif jobs is None:
            findings.append(
                Finding("retention_schedule", OK, "pg_cron installed; its jobs are not readable by this role")
            )
        else:
            findings.append(
                Finding(
                    "retention_schedule",
                    WARN,
                    "pg_cron is installed but no job runs otel_retention_sweep",
                    "SELECT cron.schedule('otel-retention', '17 3 * * *', $$CALL otel_retention_sweep(90)$$)",
                )
            )
    else:
        findings.append(
            Finding("retention_schedule", OK, "pg_cron not installed: schedule otel-pg-cleanup with cron")
        )
    return findings


#: Spooled data older than this while the doctor runs: the replay is not advancing.
SPOOL_STALE = timedelta(minutes=10)


def check_spool(dsn: str, opts: DoctorOptions) -> list[Finding]:
    """This machine's spool and quarantine for the database (not a database check: the files of
    the exporters and gateways that run here)."""
    from ...config.settings import SPOOL_OFF
    from ...delivery.spool import QUARANTINE, destination_key, spool_root, summarize

    setting = (
        opts.spool_dir if opts.spool_dir is not None else os.environ.get("OTEL_EXPORTER_POSTGRES_SPOOL_DIR")
    )
    if (setting or "").strip().lower() in SPOOL_OFF:
        return []
    try:
        directory = spool_root(setting) / destination_key(dsn)
    except OSError as exc:  # the per-user temp fallback is not ours
        return [
            Finding(
                "spool", WARN, f"spool directory not usable: {exc}", "set OTEL_EXPORTER_POSTGRES_SPOOL_DIR"
            )
        ]
    if not directory.is_dir():
        return [Finding("spool", OK, "no spool for this database on this machine")]
    findings: list[Finding] = []
    waiting = summarize(directory)
    if not waiting.spans:
        findings.append(Finding("spool", OK, f"empty ({directory})"))
    elif waiting.oldest_age_s > SPOOL_STALE.total_seconds():
        findings.append(
            Finding(
                "spool",
                WARN,
                f"{waiting.spans:,} spans waiting in {waiting.segments} segments, the oldest "
                f"{waiting.oldest_age_s / 60:,.0f} minutes old: the replay is not advancing",
                "is an exporter running for this database, and does the database answer?",
                data={"spans": waiting.spans, "oldest_age_s": round(waiting.oldest_age_s)},
            )
        )
    else:
        findings.append(Finding("spool", OK, f"{waiting.spans:,} spans waiting to be replayed"))
    held = summarize(directory / QUARANTINE, read_errors=True)
    if held.spans:
        reasons = "; ".join(
            f"{n:,} × {error}" for error, n in sorted(held.errors.items(), key=lambda e: -e[1])
        )
        findings.append(
            Finding(
                "quarantine",
                WARN,
                f"{held.spans:,} spans refused by the database even alone, set aside: {reasons}"[:600],
                "fix the cause, then otel-pg-spool replay (otel-pg-spool list shows them)",
                data={"spans": held.spans, "errors": held.errors},
            )
        )
    else:
        findings.append(Finding("quarantine", OK, "nothing set aside"))
    return findings


def check_settings(conn: psycopg.Connection, opts: DoctorOptions) -> list[Finding]:
    # reset_val: the value a new session of this role gets (not the doctor's own SETs)
    values = {
        r["name"]: r
        for r in select_rows(
            conn,
            """SELECT name, reset_val, unit FROM pg_settings
               WHERE name IN ('statement_timeout', 'lock_timeout', 'idle_session_timeout',
                              'idle_in_transaction_session_timeout', 'max_connections')""",
        )
    }

    def ms(name: str) -> int:
        row = values.get(name)
        if row is None:
            return 0
        factor = {"ms": 1, "s": 1000, "min": 60_000}.get(row["unit"] or "ms", 1)
        return int(row["reset_val"]) * factor

    problems: list[str] = []
    for name, minimum in (
        ("statement_timeout", STATEMENT_TIMEOUT_MIN_MS),
        ("lock_timeout", LOCK_TIMEOUT_MIN_MS),
        ("idle_session_timeout", IDLE_SESSION_TIMEOUT_MIN_MS),
    ):
        value = ms(name)
        if 0 < value < minimum:
            problems.append(f"{name} = {value} ms (under {minimum} ms)")
    max_conn = int(values["max_connections"]["reset_val"]) if "max_connections" in values else 0
    used = int(select_one(conn, "SELECT count(*) FROM pg_stat_activity") or 0)
    reserved = int(select_one(conn, "SELECT current_setting('superuser_reserved_connections')::int") or 0)
    headroom = max_conn - reserved - used
    detail = f"connections {used} of {max_conn} ({reserved} reserved)"
    if max_conn and headroom < CONNECTION_HEADROOM_MIN:
        problems.append(f"only {headroom} connections left ({detail})")
    if problems:
        return [
            Finding(
                "server_settings",
                WARN,
                "; ".join(problems),
                "raise them for the exporter's role (ALTER ROLE ... SET statement_timeout = '30s'), "
                "or use a pooler for many processes",
            )
        ]
    return [Finding("server_settings", OK, f"timeouts suit the exporter; {detail}")]
