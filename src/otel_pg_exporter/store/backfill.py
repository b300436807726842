"""Recompute computed span costs with current prices, and re-derive the affected trace totals.

Walks model-call spans in keyset chunks (``started_at``, ``span_id``), one transaction per chunk, so a
table of millions of rows is never locked or loaded at once. Costs a span reported itself
(``metadata.cost.status = 'provided'``) are never touched. Idempotent: a second run changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ..connection import connect
from ..pipeline.conventions import MODEL_CALL_TYPES
from ..pipeline.pricing import Pricer, apply_cost
from ..pipeline.sanitize import column_cost
from .statements import RECOMPUTE_TOTALS

_CHUNK_SQL = """
SELECT span_id, trace_id, started_at, tokens, cost, model, provider, metadata
FROM spans
WHERE span_type = ANY(%(types)s) AND status <> 'pending'
  AND coalesce(metadata #>> '{cost,status}', '') <> 'provided'
  AND (%(since)s::timestamp IS NULL OR started_at >= %(since)s)
  AND (%(until)s::timestamp IS NULL OR started_at < %(until)s)
  AND (started_at, span_id) > (%(after_ts)s::timestamp, %(after_id)s::uuid)
ORDER BY started_at, span_id
LIMIT %(limit)s
"""


@dataclass
class BackfillReport:
    """What a recompute did (or, in a dry run, would do)."""

    scanned: int = 0
    changed: int = 0
    traces: int = 0
    delta: Decimal = Decimal(0)
    statuses: dict[str, int] = field(default_factory=dict)


def recompute_costs(
    dsn: str | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    dry_run: bool = False,
    chunk: int = 5000,
    pricer: Pricer | None = None,
    schema: str | None = None,
) -> BackfillReport:
    """Re-price computed (never provided) span costs in [since, until) and fix trace totals."""
    pricer = pricer or Pricer()
    report = BackfillReport()
    after: tuple[datetime, Any] = (datetime(1, 1, 1), "00000000-0000-0000-0000-000000000000")
    with connect(dsn, schema=schema) as conn:
        conn.row_factory = dict_row  # type: ignore[assignment]
        while True:
            rows = conn.execute(
                _CHUNK_SQL,
                {
                    "types": sorted(MODEL_CALL_TYPES),
                    "since": since,
                    "until": until,
                    "after_ts": after[0],
                    "after_id": after[1],
                    "limit": chunk,
                },
            ).fetchall()
            if not rows:
                return report
            after = (rows[-1]["started_at"], rows[-1]["span_id"])
            updates = []
            for row in rows:
                report.scanned += 1
                meta = dict(row["metadata"] or {})
                previous = dict(meta.get("cost") or {})
                derived = ("computed", "price", "status", "exact", "reason")
                meta["cost"] = {k: v for k, v in previous.items() if k not in derived}
                value = apply_cost(
                    meta,
                    row["tokens"] or {},
                    None,
                    row["provider"],
                    row["model"],
                    meta.get("request_model"),
                    row["started_at"],
                    pricer,
                )
                new_cost, amount, _ = column_cost(value)
                if amount is not None:
                    meta["cost"]["exact"] = str(amount)
                status = meta["cost"]["status"]
                report.statuses[status] = report.statuses.get(status, 0) + 1
                if new_cost != row["cost"] or meta["cost"] != previous:
                    updates.append((row["span_id"], row["trace_id"], new_cost, meta))
                    report.delta += new_cost - row["cost"]
            report.changed += len(updates)
            trace_ids = sorted({u[1] for u in updates})
            report.traces += len(trace_ids)
            if dry_run or not updates:
                continue
            with conn.transaction():
                # same lock order as the exporter: traces by id first, then their spans
                conn.execute(
                    "SELECT 1 FROM traces WHERE trace_id = ANY(%s) ORDER BY trace_id FOR UPDATE", (trace_ids,)
                )
                with conn.cursor() as cur:
                    cur.executemany(
                        "UPDATE spans SET cost = %s, metadata = %s WHERE span_id = %s",
                        [
                            (cost, Jsonb(meta), sid)
                            for sid, _, cost, meta in sorted(updates, key=lambda u: u[0])
                        ],
                    )
                conn.execute(RECOMPUTE_TOTALS, {"tid": trace_ids})
