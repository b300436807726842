"""The suite's shared setup: fixtures come from plugin modules (``tests/fixtures``), helpers from
``tests/helpers``; no test module imports another.

Markers (registered here, applied at collection): ``db`` on every test that asks for a PostgreSQL,
``browser`` on those that drive Chromium, ``slow`` on the system tests (``tests/system``: faults,
poolers, fork, demo, bench smoke). ``python -m pytest tests/pipeline`` (or ``-m "not db"``) needs no
database at all.
"""

from __future__ import annotations

import os
import tempfile

import pytest

pytest_plugins = ("tests.fixtures.database", "tests.fixtures.browser")

# Spools of the exporters made by tests go to a throwaway directory, never the user's state dir.
os.environ.setdefault("OTEL_EXPORTER_POSTGRES_SPOOL_DIR", tempfile.mkdtemp(prefix="otel-pg-test-spool-"))

#: marker → what it means
MARKERS = {
    "db": "needs a real PostgreSQL (OTEL_PG_TEST_DSN, or Docker for testcontainers)",
    "browser": "drives the system's Chromium through Playwright",
    "slow": "a system test: several processes, servers or minutes of work",
}
#: Fixtures that mean a database (everything the suite's database fixtures start from).
DB_FIXTURES = frozenset({"pg_server_dsn"})


def pytest_configure(config: pytest.Config) -> None:
    for name, meaning in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & DB_FIXTURES:
            item.add_marker(pytest.mark.db)
        if "browser" in names:
            item.add_marker(pytest.mark.browser)
        if "/system/" in item.nodeid or item.nodeid.startswith("tests/system/"):
            item.add_marker(pytest.mark.slow)
