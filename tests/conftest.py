"""Real-PostgreSQL test harness.

``OTEL_PG_TEST_DSN`` set: use that server; every database the suite needs is created there with a
random name and dropped at the end. Unset: start PostgreSQL 15 in Docker with testcontainers. Neither
possible: every test errors with a message saying how to provide a server (never a silent skip).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from otel_pg_exporter import install_schema

# Spools of the exporters made by tests go to a throwaway directory, never the user's state dir.
os.environ.setdefault("OTEL_EXPORTER_POSTGRES_SPOOL_DIR", tempfile.mkdtemp(prefix="otel-pg-test-spool-"))

HOW_TO = (
    "The tests need a real PostgreSQL. Set OTEL_PG_TEST_DSN to a superuser DSN, e.g. "
    "OTEL_PG_TEST_DSN=postgresql://postgres@127.0.0.1:5432/postgres, or make Docker available so "
    "testcontainers can start one."
)


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """A superuser DSN for a server the suite may create databases on."""
    dsn = os.environ.get("OTEL_PG_TEST_DSN")
    if dsn:
        try:
            with psycopg.connect(dsn, connect_timeout=5):
                pass
        except psycopg.Error as exc:
            pytest.fail(
                f"OTEL_PG_TEST_DSN is set but unusable ({type(exc).__name__}). {HOW_TO}", pytrace=False
            )
        yield dsn
        return
    try:
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:15-alpine", driver=None)
        container.start()
    except Exception as exc:
        pytest.fail(
            f"No PostgreSQL for the tests: Docker unavailable ({type(exc).__name__}). {HOW_TO}", pytrace=False
        )
    try:
        yield container.get_connection_url()
    finally:
        container.stop()


@pytest.fixture(scope="session")
def make_database(pg_server_dsn: str) -> Iterator[Callable[[], str]]:
    """Factory: a new empty database per call; all are dropped when the session ends."""
    created: list[str] = []

    def factory() -> str:
        name = f"otel_pg_t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return make_conninfo(pg_server_dsn, dbname=name)

    yield factory
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def empty_db(make_database: Callable[[], str]) -> str:
    return make_database()


@pytest.fixture(scope="session")
def db_dsn(make_database: Callable[[], str]) -> str:
    """One database with the full schema, shared by the exporter tests (each uses its own traces)."""
    dsn = make_database()
    install_schema(dsn)
    return dsn


@pytest.fixture
def exporter(db_dsn: str) -> Iterator[Any]:
    from otel_pg_exporter import PostgresSpanExporter

    exp = PostgresSpanExporter(db_dsn, timeout_s=20)
    yield exp
    exp.shutdown()


@pytest.fixture
def capture() -> Any:
    from support import Capture

    return Capture()
