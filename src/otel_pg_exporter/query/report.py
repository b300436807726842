"""``otel-pg-report``: what did we spend, on what, and what will this month cost?

Reads migration 006's view and functions (so the numbers match any SQL client's) and renders them as
text (with a terminal chart of history plus forecast band), JSON, or a self-contained HTML page with
an inline SVG chart (no CDN, no JavaScript).
"""

from __future__ import annotations

import html
import json
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..connection import connect
from ..pipeline.annotations import THUMBS_NAME
from ..terminal import for_terminal


def build_report(
    dsn: str | None,
    *,
    days: int = 30,
    horizon: int = 14,
    as_of: date | None = None,
    schema: str | None = None,
) -> dict[str, Any]:
    """Everything the renderers show, as plain data."""
    with connect(dsn, schema=schema) as conn, conn.cursor(row_factory=dict_row) as cur:
        return report_data(cur, days=days, horizon=horizon, as_of=as_of)


def report_data(
    cur: psycopg.Cursor[Any], *, days: int = 30, horizon: int = 14, as_of: date | None = None
) -> dict[str, Any]:
    """``build_report`` on a cursor that returns dict rows (the caller's transaction: the explorer
    runs it read-only, with its statement timeout)."""
    today = as_of or cur.execute("SELECT (now() AT TIME ZONE 'UTC')::date AS d").fetchone()["d"]
    since = today - timedelta(days=days - 1)
    window = {"since": since, "today": today}
    tomorrow = today + timedelta(days=1)  # history runs through today; the forecast starts after it
    history = cur.execute(
        """SELECT g::date AS day, coalesce(sum(d.cost), 0) AS cost
           FROM generate_series(%(since)s::date, %(today)s::date, interval '1 day') AS g
           LEFT JOIN otel_daily_costs d ON d.day = g::date
           GROUP BY g ORDER BY g""",
        window,
    ).fetchall()
    forecast = cur.execute(
        "SELECT day, predicted, lower, upper FROM forecast_cost(%s, 90, NULL, %s)", (horizon, tomorrow)
    ).fetchall()
    month_as_of = tomorrow if tomorrow.month == today.month else today
    month = cur.execute("SELECT * FROM forecast_month_end(NULL, %s)", (month_as_of,)).fetchone()

    def top(column: str) -> list[dict[str, Any]]:
        return cur.execute(
            f"""SELECT coalesce({column}::text, '(none)') AS name, sum(cost) AS cost, sum(calls) AS calls,
                       sum(total_tokens) AS tokens
                FROM otel_daily_costs WHERE day >= %(since)s AND day <= %(today)s
                GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10""",
            window,
        ).fetchall()

    unpriced = cur.execute(
        """SELECT coalesce(model, '(unknown)') AS model, coalesce(provider, '(unknown)') AS provider,
                  sum(unpriced_calls) AS calls, sum(input_tokens) AS input_tokens,
                  sum(output_tokens) AS output_tokens
           FROM otel_daily_costs WHERE unpriced_calls > 0 AND day >= %(since)s AND day <= %(today)s
           GROUP BY 1, 2 ORDER BY 3 DESC""",
        window,
    ).fetchall()
    no_usage = cur.execute(
        """SELECT coalesce(model, '(unknown)') AS model, coalesce(provider, '(unknown)') AS provider,
                  sum(no_usage_calls) AS calls, sum(errors) AS errors
           FROM otel_daily_costs WHERE no_usage_calls > 0 AND day >= %(since)s AND day <= %(today)s
           GROUP BY 1, 2 ORDER BY 3 DESC""",
        window,
    ).fetchall()
    # what the forecast stands on: days with model calls in forecast_cost's 90-day history
    history_days = cur.execute(
        "SELECT count(DISTINCT day) AS n FROM otel_daily_costs WHERE day >= %s AND day < %s",
        (tomorrow - timedelta(days=90), tomorrow),
    ).fetchone()["n"]
    budgets = cur.execute("SELECT * FROM check_budgets(%s)", (today,)).fetchall()
    quality = quality_data(cur, window)
    return {
        "as_of": today,
        "days": days,
        "history": history,
        "forecast": forecast,
        "month": month,
        "top_workflows": top("workflow_id"),
        "top_models": top("model"),
        "top_users": top("user_id"),
        "unpriced_models": unpriced,
        "no_usage_calls": no_usage,
        "history_days": history_days,
        "budgets": budgets,
        **quality,
    }


#: Each trace's judgements, summed: thumbs given and thumbs down, and the other scores (mean).
_PER_TRACE_JUDGEMENTS = f"""per_trace AS (
    SELECT a.trace_id,
           count(*) FILTER (WHERE a.name = '{THUMBS_NAME}') AS thumbs,
           count(*) FILTER (WHERE a.name = '{THUMBS_NAME}' AND a.label = 'down') AS thumbs_down,
           sum(a.score) FILTER (WHERE a.name <> '{THUMBS_NAME}') AS score_sum,
           count(a.score) FILTER (WHERE a.name <> '{THUMBS_NAME}') AS scores
    FROM otel_annotations a WHERE a.trace_id IS NOT NULL GROUP BY 1
)"""
_QUALITY_COLUMNS = """count(*) AS traces, count(p.trace_id) AS judged,
       coalesce(sum(p.thumbs), 0) AS thumbs, coalesce(sum(p.thumbs_down), 0) AS thumbs_down,
       sum(p.thumbs_down)::numeric / nullif(sum(p.thumbs), 0) AS thumbs_down_share,
       sum(p.score_sum) / nullif(sum(p.scores), 0) AS mean_score"""
_IN_WINDOW = "t.started_at >= %(since)s AND t.started_at < %(today)s::date + 1"

QUALITY_BY_WORKFLOW = f"""
WITH {_PER_TRACE_JUDGEMENTS}
SELECT t.workflow_id AS name, sum(coalesce(t.total_cost, 0)) AS cost,
       sum(coalesce((t.metadata ->> 'model_calls')::int, 0)) AS calls, {_QUALITY_COLUMNS}
FROM traces t LEFT JOIN per_trace p ON p.trace_id = t.trace_id
WHERE {_IN_WINDOW}
GROUP BY 1 HAVING count(p.trace_id) > 0 ORDER BY 2 DESC, 1 LIMIT 10"""

#: A trace counts for every model it called (its cost for a model: that model's calls in it).
QUALITY_BY_MODEL = f"""
WITH {_PER_TRACE_JUDGEMENTS},
by_model AS (
    SELECT s.trace_id, s.model, sum(coalesce(s.cost, 0)) AS cost, count(*) AS calls
    FROM spans s JOIN traces t ON t.trace_id = s.trace_id
    WHERE s.model IS NOT NULL AND s.span_type IN ('llm', 'embedding') AND {_IN_WINDOW}
    GROUP BY 1, 2
)
SELECT m.model AS name, sum(m.cost) AS cost, sum(m.calls) AS calls, {_QUALITY_COLUMNS}
FROM by_model m LEFT JOIN per_trace p ON p.trace_id = m.trace_id
GROUP BY 1 HAVING count(p.trace_id) > 0 ORDER BY 2 DESC, 1 LIMIT 10"""

QUALITY_BY_DAY = f"""
WITH {_PER_TRACE_JUDGEMENTS}
SELECT t.started_at::date AS day, sum(coalesce(t.total_cost, 0)) AS cost, {_QUALITY_COLUMNS}
FROM traces t JOIN per_trace p ON p.trace_id = t.trace_id
WHERE {_IN_WINDOW}
GROUP BY 1 ORDER BY 1"""


def quality_data(cur: psycopg.Cursor[Any], window: dict[str, Any]) -> dict[str, Any]:
    """Quality next to cost, per workflow, per model and per day, over the judged traces of the
    window: traces and how many were judged, thumbs given and the share down, the mean of the
    other scores. Empty lists when migration 009 is not installed or nothing was judged."""
    row = cur.execute("SELECT to_regclass('otel_annotations') IS NOT NULL AS present").fetchone()
    if not row or not row["present"]:
        return {"quality_workflows": [], "quality_models": [], "quality_days": []}
    return {
        "quality_workflows": cur.execute(QUALITY_BY_WORKFLOW, window).fetchall(),
        "quality_models": cur.execute(QUALITY_BY_MODEL, window).fetchall(),
        "quality_days": cur.execute(QUALITY_BY_DAY, window).fetchall(),
    }


def quality_line(r: dict[str, Any]) -> str:
    """One row of quality next to cost, as the text report and the explorer print it."""
    share = r.get("thumbs_down_share")
    mean = r.get("mean_score")
    return (
        f"{r['judged']}/{r['traces']} judged  "
        + (
            f"{float(share) * 100:.0f}% thumbs down ({r['thumbs_down']}/{r['thumbs']})"
            if share is not None
            else "no thumbs"
        )
        + (f"  mean score {float(mean):.2f}" if mean is not None else "")
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(_jsonable(report), indent=2)


def render_text(report: dict[str, Any], width: int = 40) -> str:
    lines: list[str] = [f"LLM spend report, {report['days']} days to {report['as_of']} (USD)", ""]
    points = [(r["day"], float(r["cost"]), None, None) for r in report["history"]]
    points += [
        (r["day"], float(r["predicted"]), float(r["lower"]), float(r["upper"])) for r in report["forecast"]
    ]
    has_range = report.get("history_days", MIN_HISTORY_DAYS_FOR_RANGE) >= MIN_HISTORY_DAYS_FOR_RANGE
    peak = max([p[3] or p[1] for p in points] + [1e-9])
    lines.append("cost by day   (█ actual, ░ forecast, ┆ band upper)")
    for day, value, lower, upper in points:
        bar = round(value / peak * width)
        if lower is None:
            lines.append(f"{day}  {'█' * bar:<{width}} {value:10.4f}")
        else:
            hi = round((upper or 0) / peak * width)
            cells = "░" * bar + (" " * max(0, hi - bar) + "┆" if has_range else "")
            band = f"  [{lower:.4f}–{upper:.4f}]" if has_range else ""
            lines.append(f"{day}  {cells:<{width + 1}}{value:9.4f}{band}")
    lines += ["", f"this month: {month_line(report)}", ""]
    for title, key in (
        ("top workflows", "top_workflows"),
        ("top models", "top_models"),
        ("top users", "top_users"),
    ):
        lines.append(title)
        for r in report[key] or [{"name": "(none)", "cost": 0, "calls": 0, "tokens": 0}]:
            lines.append(
                f"  {for_terminal(r['name'])[:40]:<40} {float(r['cost']):10.4f}  {r['calls']:>6} calls  "
                f"{r['tokens']:>9} tokens"
            )
        lines.append("")
    for title, key in (("quality by workflow", "quality_workflows"), ("quality by model", "quality_models")):
        lines.append(f"{title} (judged traces: thumbs down, mean score, next to cost)")
        for r in report.get(key) or []:
            lines.append(
                f"  {for_terminal(r['name'])[:40]:<40} {float(r['cost']):10.4f}  {r['calls']:>6} calls  "
                + quality_line(r)
            )
        if not report.get(key):
            lines.append("  (nothing judged in this window)")
        lines.append("")
    lines.append("unpriced models (cost unknown, not zero)")
    for r in report["unpriced_models"] or [
        {"model": "(none)", "provider": "", "calls": 0, "input_tokens": 0, "output_tokens": 0}
    ]:
        lines.append(
            f"  {for_terminal(r['model'])[:30]:<30} {for_terminal(r['provider'])[:16]:<16} "
            f"{r['calls']:>6} calls  in {r['input_tokens']} / out {r['output_tokens']} tokens"
        )
    lines += ["", "calls without token usage (no cost known: refused, rate-limited, cut short)"]
    for r in report["no_usage_calls"] or [{"model": "(none)", "provider": "", "calls": 0, "errors": 0}]:
        lines.append(
            f"  {for_terminal(r['model'])[:30]:<30} {for_terminal(r['provider'])[:16]:<16} "
            f"{r['calls']:>6} calls  {r['errors']} failed"
        )
    lines += ["", "budgets"]
    if not report["budgets"]:
        lines.append(
            "  (none: INSERT INTO otel_budgets (scope, scope_value, monthly_limit) VALUES ('all', NULL, 100))"
        )
    for b in report["budgets"]:
        state = "BREACHED" if b["breached"] else "FORECAST BREACH" if b["forecast_breach"] else "ok"
        scope = for_terminal(b["scope"] + (f" {b['scope_value']}" if b["scope_value"] else ""))
        lines.append(
            f"  {scope[:40]:<40} limit {float(b['monthly_limit']):.2f}  so far "
            f"{float(b['month_to_date']):.4f}  projected {float(b['projected_total']):.4f}  {state}"
        )
    return "\n".join(lines) + "\n"


#: Fewer days of history than this and the forecast's band is not an estimate (with one day it is
#: a flat line with no spread at all): the report says so instead of printing a zero-width range.
MIN_HISTORY_DAYS_FOR_RANGE = 7


def month_line(report: dict[str, Any], currency: str = "") -> str:
    m = report["month"]
    days = report.get("history_days", MIN_HISTORY_DAYS_FOR_RANGE)
    head = (
        f"{currency}{float(m['month_to_date']):.4f} so far, projected "
        f"{currency}{float(m['projected_total']):.4f}"
    )
    if days < MIN_HISTORY_DAYS_FOR_RANGE:
        return f"{head} (from {days} day{'s' if days != 1 else ''} of history: too few for a range)"
    return f"{head} (range {currency}{float(m['lower']):.4f}–{currency}{float(m['upper']):.4f})"


def svg_chart(report: dict[str, Any], w: int = 900, h: int = 300, pad: int = 40) -> str:
    hist = [(r["day"], float(r["cost"])) for r in report["history"]]
    fc = [(r["day"], float(r["predicted"]), float(r["lower"]), float(r["upper"])) for r in report["forecast"]]
    days = [d for d, _ in hist] + [d for d, *_ in fc]
    if not days:
        return "<svg></svg>"
    top = max([v for _, v in hist] + [u for *_, u in fc] + [1e-9]) * 1.1
    first = days[0]
    span = max(1, (days[-1] - first).days)

    def xy(day: date, value: float) -> str:
        x = pad + (day - first).days / span * (w - 2 * pad)
        y = h - pad - value / top * (h - 2 * pad)
        return f"{x:.1f},{y:.1f}"

    band = " ".join([xy(d, u) for d, _, _, u in fc] + [xy(d, lo) for d, _, lo, _ in reversed(fc)])
    history = " ".join(xy(d, v) for d, v in hist)
    forecast = " ".join(xy(d, p) for d, p, _, _ in fc)
    ticks = "".join(
        f'<text x="{pad - 6}" y="{h - pad - f * (h - 2 * pad) + 4:.1f}" text-anchor="end" font-size="11">'
        f"{top * f:.3f}</text>"
        for f in (0, 0.5, 1)
    )
    return (
        f'<svg id="cost-chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" role="img" aria-label="Daily LLM cost with forecast">'
        f'<rect width="{w}" height="{h}" fill="#fff"/>'
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#999"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#999"/>{ticks}'
        f'<polygon class="band" points="{band}" fill="#f4a26133" stroke="none"/>'
        f'<polyline class="history" points="{history}" fill="none" stroke="#2a6fdb" stroke-width="2.5"/>'
        f'<polyline class="forecast" points="{forecast}" fill="none" stroke="#e76f51" stroke-width="2.5" '
        f'stroke-dasharray="6 4"/>'
        f'<text x="{pad}" y="{h - 12}" font-size="11">{first}</text>'
        f'<text x="{w - pad}" y="{h - 12}" font-size="11" text-anchor="end">{days[-1]}</text></svg>'
    )


def render_html(report: dict[str, Any]) -> str:
    """A self-contained page: inline SVG and CSS, no scripts, no external resources."""
    e = html.escape
    text = e(
        render_text(report).split("\n\nthis month:")[1] if "\n\nthis month:" in render_text(report) else ""
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>LLM spend report</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:24px;color:#222}"
        "pre{background:#f6f6f6;padding:12px;font-size:12px}</style></head><body>"
        f"<h1>LLM spend, {report['days']} days to {e(str(report['as_of']))}</h1>"
        f"<p>This month: {e(month_line(report, '$'))}. "
        "Blue: actual; dashed orange: forecast; shaded: 95&nbsp;% band.</p>"
        f"{svg_chart(report)}<pre>this month:{text}</pre></body></html>"
    )
