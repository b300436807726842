"""The writer with 0, 100k and 1M spans already stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..registry import Row, Run, verdict
from ..support import count_spans, prefill, truncate
from ..workload import SPANS_PER_TRACE, prebuilt_spans
from .writer import writer_only


def growth(dsn: str, existing: Sequence[int], traces: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    loaded = 0
    truncate(dsn)
    for target in existing:
        prefill(dsn, target - loaded, first_trace=loaded // SPANS_PER_TRACE)
        loaded = target
        spans = prebuilt_spans(traces)
        result = writer_only(dsn, spans)
        out[str(target)] = {
            "spans_per_s": result["spans_per_s"],
            "p99_ms": result["p99_ms"],
            "stored_before": count_spans(dsn) - len(spans),
        }
    return out


def render_growth(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "growth" not in r:
        return rows
    g = r["growth"]
    for existing, v in g.items():
        rows.append((f"writer with {int(existing):,} spans stored", f"{v['spans_per_s']:,.0f} spans/s", ""))
    keys = list(g)
    if len(keys) > 1:
        ratio = g[keys[-1]]["spans_per_s"] / g[keys[0]]["spans_per_s"]
        r["growth_ratio"] = ratio
        rows.append(
            (f"growth {int(keys[-1]):,} vs empty", f"{ratio:.2f}", verdict("growth_1m_vs_empty", ratio))
        )
    return rows


def run(run: Run) -> dict[str, Any]:
    return {"growth": growth(run.dsn, run.size["growth"], run.size["growth_traces"])}
