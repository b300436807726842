"""Migration 006: daily rollup, spend forecast (accuracy on a synthetic history), budgets + notify."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest

from otel_pg_exporter import install_schema
from tests.helpers.scenarios import AS_OF, load_history, true_cost


@pytest.fixture
def history_db(make_database) -> str:
    dsn = make_database()
    install_schema(dsn)
    return dsn


def test_daily_rollup_counts_leaf_calls(history_db) -> None:
    load_history(history_db, 10, noise=0)
    with psycopg.connect(history_db) as conn:
        rows = conn.execute(
            "SELECT day, workflow_id, calls, input_tokens FROM otel_daily_costs ORDER BY day"
        ).fetchall()
    assert len(rows) == 10 and all(r[1] == "support" and r[2] == 1 and r[3] == 100 for r in rows)


def test_forecast_accuracy_on_a_synthetic_history(history_db) -> None:
    days, horizon = 84, 28
    load_history(history_db, days, noise=0.05)
    with psycopg.connect(history_db) as conn:
        rows = conn.execute(
            "SELECT day, predicted, lower, upper FROM forecast_cost(%s, 90, NULL, %s)", (horizon, AS_OF)
        ).fetchall()
    assert len(rows) == horizon and rows[0][0] == AS_OF
    errors = []
    inside = 0
    rng = random.Random(99)
    for i, (day, predicted, lower, upper) in enumerate(rows):
        truth = true_cost(days + i, day)
        errors.append(abs(float(predicted) - truth) / truth)
        actual = truth * (1 + rng.gauss(0, 0.05))
        inside += float(lower) <= actual <= float(upper)
    mape = sum(errors) / len(errors)
    print(f"forecast MAPE {mape:.3f}, band coverage {inside}/{horizon}")
    assert mape < 0.10, mape  # stated accuracy: within 10 % mean absolute percentage error
    assert inside / horizon >= 0.85  # the 95 % band holds most future days


def test_forecast_with_short_or_empty_history(history_db) -> None:
    with psycopg.connect(history_db) as conn:
        empty = conn.execute(
            "SELECT predicted, lower, upper FROM forecast_cost(7, 90, NULL, %s)", (AS_OF,)
        ).fetchall()
        assert empty == [(Decimal(0), Decimal(0), Decimal(0))] * 7
    load_history(history_db, 1, noise=0)
    with psycopg.connect(history_db) as conn:
        one = conn.execute("SELECT predicted FROM forecast_cost(3, 90, NULL, %s)", (AS_OF,)).fetchall()
        assert [r[0] for r in one] == [Decimal("0.800000")] * 3  # a flat line at the only (weekend) day
        month = conn.execute("SELECT * FROM forecast_month_end(NULL, %s)", (AS_OF,)).fetchone()
        assert month[0] == Decimal("0.8") and month[2] >= month[0]


def test_budget_breach_and_forecast_breach_notify(history_db) -> None:
    load_history(history_db, 28, noise=0)
    with psycopg.connect(history_db, autocommit=True) as conn:
        mtd, projected = conn.execute(
            "SELECT month_to_date, projected_total FROM forecast_month_end(NULL, %s)", (AS_OF,)
        ).fetchone()
        conn.execute(
            "INSERT INTO otel_budgets (scope, scope_value, monthly_limit) VALUES "
            "('all', NULL, %s), ('workflow', 'support', %s), ('workflow', 'other', 1000)",
            (mtd / 2, (mtd + projected) / 2),
        )
        conn.execute("LISTEN otel_budget")
        status = conn.execute(
            "SELECT budget_id, breached, forecast_breach FROM check_budgets(%s) ORDER BY 1", (AS_OF,)
        ).fetchall()
        notes = [json.loads(n.payload) for n in conn.notifies(timeout=2, stop_after=2)]
    assert [(s[1], s[2]) for s in status] == [(True, False), (False, True), (False, False)]
    assert sorted(n["kind"] for n in notes) == ["breach", "forecast_breach"]


def test_workflow_and_user_budgets_count_only_their_own_spend(history_db) -> None:
    """Two workflows of two users: each scoped budget sits between its own spend and everyone's, so
    it holds only while the scope filter works."""
    alice, bob = "00000000-0000-4000-8000-00000000a11c", "00000000-0000-4000-8000-0000000000b0"
    with psycopg.connect(history_db, autocommit=True) as conn:
        conn.execute("INSERT INTO profiles (id) VALUES (%s), (%s)", (alice, bob))
    load_history(history_db, 28, noise=0, workflow="support", user=alice)
    load_history(history_db, 28, noise=0, workflow="sales", user=bob, scale=3.0, seed=8)
    with psycopg.connect(history_db, autocommit=True) as conn:

        def mtd(workflow: str) -> Decimal:
            # forecast_month_end counts the days before its date, check_budgets through its date
            return conn.execute(
                "SELECT month_to_date FROM forecast_month_end(%s, %s)", (workflow, AS_OF + timedelta(days=1))
            ).fetchone()[0]

        support, sales = mtd("support"), mtd("sales")
        assert support > 0 and sales > support
        conn.execute(
            "INSERT INTO otel_budgets (scope, scope_value, monthly_limit) VALUES "
            "('workflow', 'support', %s), ('workflow', 'sales', %s), ('user', %s, %s), ('user', %s, %s)",
            (support + sales / 2, sales / 2, alice, support + sales / 2, bob, sales / 2),
        )
        status = conn.execute(
            "SELECT scope, scope_value, month_to_date, breached FROM check_budgets(%s) ORDER BY budget_id",
            (AS_OF,),
        ).fetchall()
    assert [(s[0], s[1], s[3]) for s in status] == [
        ("workflow", "support", False),
        ("workflow", "sales", True),
        ("user", alice, False),
        ("user", bob, True),
    ]
    assert status[0][2] == status[2][2] == support and status[1][2] == status[3][2] == sales
